package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A component is one daemon of the cluster. It is started detached (its own
// session, stdio to a log file) so that it outlives `hack/cluster up`, and
// is stopped by the PID recorded at start, never by name.
type component struct {
	Name string   `json:"name"`
	Path string   `json:"path"`
	Args []string `json:"args"`
	// Env is what start added to this process's environment (a restart
	// passes it again).
	Env []string `json:"env,omitempty"`
	PID int      `json:"pid"`
	// StartTime is /proc/<pid>/stat's field 22: with the executable path it
	// tells our process from an unrelated one that got a recycled PID.
	StartTime uint64 `json:"startTime"`
	Log       string `json:"log"`
}

func (c *Cluster) start(name, path string, args []string, env []string) (*component, error) {
	logPath := filepath.Join(c.Dir, "logs", name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	st, _ := procStartTime(cmd.Process.Pid)
	comp := &component{Name: name, Path: path, Args: args, Env: env, PID: cmd.Process.Pid, StartTime: st, Log: logPath}
	// Reap it in the background while this process lives; once we exit,
	// init adopts it.
	go cmd.Wait() //nolint:errcheck
	c.Components = append(c.Components, comp)
	if err := c.save(); err != nil {
		return comp, err
	}
	return comp, nil
}

// alive says whether the recorded process still runs (not a zombie, same
// start time).
func (p *component) alive() bool {
	if p == nil || p.PID <= 0 {
		return false
	}
	st, state := procStartTime(p.PID)
	if st == 0 || state == "Z" || state == "X" {
		return false
	}
	return p.StartTime == 0 || st == p.StartTime
}

// stop sends SIGTERM, waits up to grace, then SIGKILL.
func (p *component) stop(grace time.Duration) error {
	if !p.alive() {
		return nil
	}
	if err := syscall.Kill(p.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop %s (pid %d): %w", p.Name, p.PID, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p.alive() {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
		for i := 0; i < 100 && p.alive(); i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if p.alive() {
		return fmt.Errorf("stop %s: pid %d survives SIGKILL", p.Name, p.PID)
	}
	return nil
}

// procStartTime returns the start time (clock ticks since boot) and state
// of a process, or 0 when it does not exist.
func procStartTime(pid int) (uint64, string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, ""
	}
	// comm may hold spaces and parentheses: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, ""
	}
	st, _ := strconv.ParseUint(f[19], 10, 64)
	return st, f[0]
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
