package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// lxcfsStarts is the cost of containers.lxcfs: after the peapod column's
// daemon stopped, a second peapod (CRI runtime only, lxcfs = "on", on the
// same CNI conf list, an lxcfs of the run's own on a scratch mount point)
// starts n pod pairs over gRPC: one whose container gets lxcfs's binds and
// one that opts out (peapod.io/lxcfs: "off"), in alternating order, so
// both kinds see the same machine (a comparison with the column's own
// starts, minutes earlier, would measure the machine's load as much).
// It returns the totals (Run + Create + Start) with lxcfs and without.
// The lxcfs and the daemon are stopped by their PIDs, the mount undone.
func lxcfsStarts(ctx context.Context, o options, peapod *runtime, reg string) (with, without []float64, _ error) {
	if _, err := os.Stat("/usr/bin/lxcfs"); err != nil {
		logf("lxcfs: /usr/bin/lxcfs missing (make deps installs it): no lxcfs figure")
		return nil, nil, nil
	}
	d := filepath.Join(o.dir, "peapod-lxcfs")
	// Outside the daemon's dir: its stop sweeps mounts below that.
	mnt := filepath.Join(o.dir, "lxcfs")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, nil, err
	}
	lx := exec.Command("/usr/bin/lxcfs", "--foreground", "--enable-cfs", "-p", filepath.Join(o.dir, "lxcfs.pid"), mnt)
	lxLog, err := os.Create(filepath.Join(o.out, "lxcfs.log"))
	if err != nil {
		return nil, nil, err
	}
	defer lxLog.Close()
	lx.Stdout, lx.Stderr = lxLog, lxLog
	if err := lx.Start(); err != nil {
		return nil, nil, err
	}
	defer func() {
		lx.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { lx.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			lx.Process.Kill()
			<-done
		}
		for unix.Unmount(mnt, unix.MNT_DETACH) == nil {
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if data, err := os.ReadFile(filepath.Join(mnt, "proc/uptime")); err == nil && len(data) > 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("lxcfs did not come up at %s", mnt)
		}
	}

	// The peapod column's conf list, bridge and subnet: that daemon's
	// pods are gone, and their addresses with them.
	sock := filepath.Join(d, "run", "peapod.sock")
	cfg, err := writePeapodConfig(peapod.dir, filepath.Join(d, "peapod.toml"), sock, "127.0.0.1:0", peapod.bridge, peapod.subnet, reg, "/"+o.cgroup+"/peapod-lxcfs", false, mnt)
	if err != nil {
		return nil, nil, err
	}
	rt := &runtime{name: "peapod-lxcfs", dir: d, bridge: peapod.bridge, seen: map[int]string{}}
	rt.cmd = exec.Command(filepath.Join(o.repo, "bin/peapod"), "serve", "--config", cfg)
	rt.endpoint = "unix://" + sock
	stateDir := filepath.Join(d, "run")
	rt.helpers = func() []int { return pidsMatching("conmon", stateDir) }
	if err := rt.start(ctx, o); err != nil {
		return nil, nil, err
	}
	optOut := map[string]string{"peapod.io/lxcfs": "off"}
	err = func() error {
		if _, err := rt.crictl.run(ctx, "pull", image); err != nil {
			return err
		}
		conn, cl, err := dialCRI(rt)
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := grpcLifecycle(ctx, o, cl, "lxcfs-warmup", nil); err != nil {
			return err
		}
		for i := 0; i < o.n; i++ {
			first := i%2 == 0
			for _, out := range []bool{first, !first} {
				var ann map[string]string
				if out {
					ann = optOut
				}
				t, err := grpcLifecycle(ctx, o, cl, fmt.Sprintf("lxcfs-%d-%t", i, out), ann)
				if err != nil {
					return err
				}
				total := t["RunPodSandbox"] + t["CreateContainer"] + t["StartContainer"]
				if out {
					without = append(without, total)
				} else {
					with = append(with, total)
				}
			}
		}
		return nil
	}()
	if stopErr := rt.stop(); stopErr != nil && err == nil {
		err = stopErr
	}
	if err != nil {
		return nil, nil, err
	}
	logf("peapod, lxcfs on: %d gRPC pod pairs, Run+Create+Start p50 %s with lxcfs, %s opted out", o.n, ms(quantile(with, 0.5)), ms(quantile(without, 0.5)))
	return with, without, nil
}
