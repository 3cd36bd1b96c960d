package oci

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestStateWithoutExitFile: a stopped container whose conmon wrote no exit
// file has an unknown exit code, unless the OOM killer took it (and, in
// the pod's memory cgroup, its conmon right after): then it is 137.
func TestStateWithoutExitFile(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-runc")
	// `fake-runc --root R state ID` says the container is stopped.
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho '{\"status\":\"stopped\",\"pid\":0,\"bundle\":\"\"}'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/usr/bin/conmon"); err != nil {
		t.Skip("conmon not installed (New looks it up)")
	}
	r, err := New(Options{Name: "fake", Path: fake, Root: filepath.Join(dir, "root"), StateDir: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		oom      bool
		wantCode int32
	}{
		{"conmon gone, no OOM", false, ExitCodeUnknown},
		{"OOM took the container and conmon", true, 137},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "c" + map[bool]string{false: "plain", true: "oom"}[tc.oom]
			if err := os.MkdirAll(filepath.Join(r.dir(id), "exits"), 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.oom {
				if err := os.WriteFile(filepath.Join(r.dir(id), "oom"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			st, err := r.State(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if st.Status != StatusStopped || st.ExitCode != tc.wantCode || st.OOMKilled != tc.oom || st.Message == "" {
				t.Errorf("state = %+v, want stopped, code %d, oom %v, a message", st, tc.wantCode, tc.oom)
			}
			// The quick path never guesses: no exit file, no answer.
			if _, ok, err := r.ExitRecorded(id); ok || err != nil {
				t.Errorf("ExitRecorded without an exit file: ok %v err %v", ok, err)
			}
		})
	}
}
