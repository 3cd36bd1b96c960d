package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"peapod/config"
	"peapod/sandbox/lxcfs"
)

// checkLXCFS reports lxcfs as containers.lxcfs needs it: "on" fails
// without a live lxcfs; "auto" only says what containers will see; "off"
// skips. A running lxcfs without --enable-cfs gets a warning: its cpuinfo
// and cpu/online then follow cpusets only, not CPU limits (quota).
func checkLXCFS(cfg *config.Config, report func(string, error), note func(string, string)) {
	c := cfg.Containers
	what := fmt.Sprintf("lxcfs at %s (containers.lxcfs = %s)", c.LXCFSDir, c.LXCFS)
	if c.LXCFS == lxcfs.ModeOff {
		note("skip", what)
		return
	}
	s := lxcfs.NewWatcher(c.LXCFSDir, 3*time.Second).Check()
	if !s.Up {
		if c.LXCFS == lxcfs.ModeOn {
			report(what, fmt.Errorf("%s: %s (CreateContainer fails until it is up)", s.Reason, s.Message))
			return
		}
		note("warn", fmt.Sprintf("%s: %s; containers see the host's /proc (make run starts lxcfs; hack/lxcfs.sh)", what, s.Message))
		return
	}
	report(what, nil)
	if pid, args := lxcfsProcess(c.LXCFSDir); pid == 0 {
		note("warn", "lxcfs process serving "+c.LXCFSDir+" not found (another mount namespace?); cannot tell its flags")
	} else if !strings.Contains(args, "--enable-cfs") {
		note("warn", fmt.Sprintf("lxcfs (pid %d) runs without --enable-cfs: /proc/cpuinfo and cpu/online show the cpuset's CPUs, not the CPU limit", pid))
	}
}

// lxcfsProcess finds the lxcfs whose last argument is dir.
func lxcfsProcess(dir string) (int, string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil || len(data) == 0 {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(data, "\x00")), "\x00")
		if filepath.Base(args[0]) != "lxcfs" || filepath.Clean(args[len(args)-1]) != filepath.Clean(dir) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		return pid, strings.Join(args, " ")
	}
	return 0, ""
}
