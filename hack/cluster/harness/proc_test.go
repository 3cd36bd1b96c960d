package harness

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// stopRestart (RestartAPIServer's) replaces the record of the process it
// stopped with the new one, same path and arguments, in cluster.json too.
func TestStopRestart(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Dir: dir}
	old, err := c.start("sleeper", "/bin/sleep", []string{"60"}, []string{"X=1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range c.Components {
			_ = p.stop(time.Second)
		}
	})
	got, err := c.stopRestart(old, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if old.alive() {
		t.Errorf("old pid %d still runs", old.PID)
	}
	if !got.alive() || got.PID == old.PID {
		t.Errorf("new pid %d (alive %v), old %d", got.PID, got.alive(), old.PID)
	}
	if got.Path != old.Path || len(got.Args) != 1 || got.Args[0] != "60" || len(got.Env) != 1 || got.Env[0] != "X=1" {
		t.Errorf("restarted as %s %v %v, want %s %v %v", got.Path, got.Args, got.Env, old.Path, old.Args, old.Env)
	}
	disk, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(disk.Components) != 1 || disk.Components[0].PID != got.PID {
		t.Errorf("cluster.json components %+v, want only pid %d", disk.Components, got.PID)
	}
}
