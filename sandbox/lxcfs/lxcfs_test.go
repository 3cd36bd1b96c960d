package lxcfs

import (
	"path/filepath"
	"testing"
	"time"
)

func TestProbeNotMounted(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, dir, reason string
	}{
		{name: "plain dir", dir: dir, reason: ReasonNotMounted},
		{name: "no such dir", dir: filepath.Join(dir, "nope"), reason: ReasonNotMounted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Probe(tt.dir)
			if s.Up || s.Reason != tt.reason || s.Message == "" {
				t.Fatalf("Probe(%s) = %+v, want reason %s", tt.dir, s, tt.reason)
			}
		})
	}
}

// A hung lxcfs blocks every access to its mount: Check must come back
// after its timeout with NotResponding, and not pile up probes.
func TestWatcherTimeout(t *testing.T) {
	release := make(chan struct{})
	calls := 0
	w := NewWatcher("/x", 20*time.Millisecond)
	w.probe = func(string) State {
		calls++
		<-release
		return State{Up: true, Dev: 1, Paths: Paths}
	}
	for i := 0; i < 3; i++ {
		if s := w.Check(); s.Up || s.Reason != ReasonNotResponding {
			t.Fatalf("check %d = %+v, want NotResponding", i, s)
		}
	}
	close(release)
	if s := w.Check(); !s.Up {
		t.Fatalf("after the probe returned: %+v", s)
	}
	if calls != 1 {
		t.Fatalf("%d probes ran, want 1 (no new probe while one hangs)", calls)
	}
	if s := w.Check(); !s.Up || calls != 2 {
		t.Fatalf("next check: %+v, %d probes", s, calls)
	}
	if !w.Current().Same(State{Up: true, Dev: 1, Paths: Paths}) {
		t.Fatalf("Current = %+v", w.Current())
	}
}
