package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/hack/testenv"
)

// TestBadNodeSaysSo: a node with a conmon too old for peapod's flags,
// a runc too old for the "rro" mounts it advertises and its root dir on
// an overlay (no upper dirs possible there) gets one FAIL line each from
// `peapod check`, and `peapod serve` starts but keeps RuntimeReady false
// with all three in its message and logs each at start, instead of
// failing every pod later.
func TestBadNodeSaysSo(t *testing.T) {
	testenv.Integration(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "peapod")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// conmon is found in $PATH first: an old one there shadows Debian's.
	fakeBin := filepath.Join(dir, "bin")
	if err := os.Mkdir(fakeBin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{
		"conmon": "conmon version 2.0.30\ncommit: unknown\n",
		"runc":   "runc version 1.0.3\ncommit: v1.0.3-0-gf46b6ba2\nspec: 1.0.2-dev\n",
	} {
		if err := os.WriteFile(filepath.Join(fakeBin, name), []byte("#!/bin/sh\nprintf '"+out+"'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The root dir on an overlay, as in a container whose / is one.
	ovl := filepath.Join(dir, "ovl")
	for _, d := range []string{"l", "u", "w", "m"} {
		if err := os.MkdirAll(filepath.Join(ovl, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	merged := filepath.Join(ovl, "m")
	if err := unix.Mount("overlay", merged, "overlay", 0, fmt.Sprintf("lowerdir=%s/l,upperdir=%s/u,workdir=%s/w", ovl, ovl, ovl)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmount %s: %v", merged, err)
			_ = unix.Unmount(merged, unix.MNT_DETACH)
		}
	})
	root := filepath.Join(merged, "peapod")
	run := filepath.Join(dir, "run")
	sock := filepath.Join(run, "peapod.sock")
	cfg := filepath.Join(dir, "peapod.toml")
	conf := fmt.Sprintf(`root = %q
state = %q
[cri]
socket = %q
[http]
address = "127.0.0.1:0"
[cni]
conf_dir = %q
bridge = "pphc%d"
subnet = "10.254.%d.0/24"
[runtimes.runc]
path = %q
[agent]
enabled = false
[containers]
lxcfs = "off"
`, root, run, sock, filepath.Join(dir, "cni"), os.Getpid()%100000, os.Getpid()%250, filepath.Join(fakeBin, "runc"))
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PATH="+fakeBin+":"+os.Getenv("PATH"))
	wantFails := map[string][]string{
		// Found in $PATH first, it hides Debian's, which would do.
		"conmon": {"conmon 2.0.30 at " + fakeBin + "/conmon is too old: peapod needs >= 2.1.2", "it comes first in $PATH and hides /usr/bin/conmon 2.1.6"},
		// check runs before serve made root: its parent (same fs) is tested.
		"overlayfs upper dirs in ": {" is on overlayfs, which overlayfs cannot use for upper dirs", "set root in peapod.toml"},
		"runtime runc 1.0.3 (":     {"runc 1.0.3 at " + fakeBin + "/runc is too old: peapod needs >= 1.1.0", `"rro"`},
	}

	check := exec.Command(bin, "check", "--config", cfg)
	check.Env = env
	out, err := check.Output()
	t.Logf("peapod check:\n%s", out)
	if err == nil {
		t.Errorf("peapod check passed on a badly set up node")
	}
	for what, msgs := range wantFails {
		line := ""
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "FAIL  "+what) {
				line = l
			}
		}
		if line == "" {
			t.Errorf("no FAIL line for %s", what)
			continue
		}
		for _, m := range msgs {
			if !strings.Contains(line, m) {
				t.Errorf("FAIL line %q lacks %q", line, m)
			}
		}
	}
	for _, ok := range []string{"ok    cgroup controllers"} {
		if !strings.Contains(string(out), ok) {
			t.Errorf("peapod check lacks %q", ok)
		}
	}

	// serve: starts, answers, and is not ready.
	var logs bytes.Buffer
	serve := exec.Command(bin, "serve", "--config", cfg)
	serve.Env = env
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = serve.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- serve.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = serve.Process.Kill()
			<-done
			t.Errorf("peapod serve did not stop on SIGTERM")
		}
	}
	t.Cleanup(stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	var st *runtimeapi.StatusResponse
	for deadline := time.Now().Add(30 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err = rt.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("Status: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	c := st.Status.Conditions[0]
	if c.Type != runtimeapi.RuntimeReady || c.Status || c.Reason != "ConmonUnusable" {
		t.Errorf("RuntimeReady = %v, want false with reason ConmonUnusable", c)
	}
	t.Logf("RuntimeReady message: %s", c.Message)
	for _, msgs := range wantFails {
		if !strings.Contains(c.Message, msgs[0]) {
			t.Errorf("RuntimeReady message lacks %q", msgs[0])
		}
	}
	stop()
	for _, want := range []string{
		`"Host check failed: RuntimeReady stays false until it is fixed and peapod restarted" err="conmon 2.0.30`,
		`"Host check failed: RuntimeReady stays false until it is fixed and peapod restarted" err="` + root + ` is on overlayfs`,
		`"Runtime handler cannot run containers" err="runc 1.0.3 at`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("serve's log lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("serve's log:\n%s", logs.String())
	}
}
