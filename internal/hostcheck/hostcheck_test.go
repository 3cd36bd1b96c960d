package hostcheck

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"peapod/oci"
)

// script writes an executable shell script that prints out (and exits
// with code) and returns its path.
func script(t *testing.T, dir, name, out string, code int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	body := "#!/bin/sh\nprintf '%s' '" + out + "'\nexit " + string(rune('0'+code)) + "\n"
	if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// A missing, broken, foreign or too old conmon each fail with what,
// where and the fix; 2.1.2 (--log-global-size-max) and newer pass.
func TestConmon(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "noexec")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		wantErr []string // substrings; none: passes
		tooOld  bool
	}{
		{name: "debian 2.1.6", path: script(t, dir, "c216", "conmon version 2.1.6\ncommit: unknown\n", 0)},
		{name: "exactly the minimum", path: script(t, dir, "c212", "conmon version 2.1.2\ncommit: 99eac3e\n", 0)},
		{name: "2.2", path: script(t, dir, "c220", "conmon version 2.2.1\ncommit: x\n", 0)},
		{
			name: "2.0.x lacks --log-global-size-max", path: script(t, dir, "c2030", "conmon version 2.0.30\ncommit: x\n", 0), tooOld: true,
			wantErr: []string{"conmon 2.0.30 at " + dir + "/c2030 is too old", "peapod needs >= 2.1.2", "--log-global-size-max", "apt-get install conmon"},
		},
		{
			name: "2.1.1", path: script(t, dir, "c211", "conmon version 2.1.1\n", 0), tooOld: true,
			wantErr: []string{"conmon 2.1.1", "too old"},
		},
		{name: "missing", path: filepath.Join(dir, "nope"), wantErr: []string{"conmon " + dir + "/nope does not exist", "apt-get install conmon"}},
		{name: "not executable", path: notExec, wantErr: []string{"conmon " + notExec + " is not executable", "chmod 755"}},
		{name: "fails to run", path: script(t, dir, "cbad", "error while loading shared libraries: libglib-2.0.so.0", 1), wantErr: []string{"does not run", "libglib", "apt-get install --reinstall conmon"}},
		{name: "not conmon", path: script(t, dir, "cother", "runc version 1.1.5\n", 0), wantErr: []string{"does not say it is conmon"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Conmon(context.Background(), tt.path)
			if len(tt.wantErr) == 0 {
				if r.Err != nil {
					t.Fatalf("Conmon(%s) = %v, want ok", tt.path, r.Err)
				}
				if !strings.HasPrefix(r.What, "conmon 2.") || !strings.Contains(r.What, tt.path) {
					t.Errorf("What = %q, want the version and path", r.What)
				}
				return
			}
			if r.Err == nil {
				t.Fatalf("Conmon(%s) passed, want an error", tt.path)
			}
			t.Logf("%s: %v", r.What, r.Err)
			if r.Reason != ReasonConmon {
				t.Errorf("reason = %q", r.Reason)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(r.Err.Error(), w) {
					t.Errorf("error %q lacks %q", r.Err, w)
				}
			}
			var ve *oci.VersionError
			if errors.As(r.Err, &ve) != tt.tooOld {
				t.Errorf("VersionError = %v, want %v", !tt.tooOld, tt.tooOld)
			}
		})
	}
}

// The conmon peapod finds by itself ($PATH, then /usr/bin/conmon) on this
// machine is Debian's 2.1.6, which passes.
func TestConmonHost(t *testing.T) {
	if _, err := oci.FindConmon(""); err != nil {
		t.Skipf("no conmon here: %v", err)
	}
	if r := Conmon(context.Background(), ""); r.Err != nil {
		t.Fatalf("the host's conmon: %v", r.Err)
	}
}

// A runtime binary that is missing, a directory, not executable, not in
// $PATH or too old fails naming the handler, the path and the fix; an
// unknown runtime's version is not judged.
func TestRuntime(t *testing.T) {
	dir := t.TempDir()
	script(t, dir, "conmon", "conmon version 2.1.6\n", 0)
	t.Setenv("PATH", dir+":"+os.Getenv("PATH")) // oci.New finds this conmon
	noExec := filepath.Join(dir, "runc-noexec")
	if err := os.WriteFile(noExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, handler, path string
		wantWhat            string
		wantErr             []string
		tooOld              bool
	}{
		{name: "debian runc", handler: "runc", path: script(t, dir, "runc115", "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\n", 0), wantWhat: "runtime runc 1.1.5 ("},
		{name: "runc 1.1.0", handler: "runc", path: script(t, dir, "runc110", "runc version 1.1.0\n", 0)},
		{name: "crun 1.8.1", handler: "crun", path: script(t, dir, "crun181", "crun version 1.8.1\ncommit: f8a096b\n", 0)},
		{name: "unknown runtime is not judged", handler: "gvisor", path: script(t, dir, "runsc", "runsc version release-20230101.0\n", 0)},
		{
			name: "runc 1.0.3 has no rro", handler: "runc", path: script(t, dir, "runc103", "runc version 1.0.3\ncommit: v1.0.3-0-gf46b6ba2\n", 0), tooOld: true,
			wantErr: []string{"runc 1.0.3 at " + dir + "/runc103 is too old", "peapod needs >= 1.1.0", `"rro"`, "apt-get install runc", "runtimes.runc.path"},
		},
		{
			name: "the binary decides, not the handler name", handler: "fast", path: script(t, dir, "crun13", "crun version 1.3\n", 0), tooOld: true,
			wantErr: []string{"crun 1.3.0", "needs >= 1.4.0", "runtimes.fast.path"},
		},
		{name: "missing", handler: "runc", path: "/nonexistent/runc", wantErr: []string{"runtime runc: /nonexistent/runc does not exist", "apt-get install runc", "set runtimes.runc.path"}},
		{name: "a directory", handler: "runc", path: dir, wantErr: []string{dir + " is a directory"}},
		{name: "not executable", handler: "runc", path: noExec, wantErr: []string{noExec + " is not executable", "chmod 755 " + noExec}},
		{name: "not in PATH", handler: "runc", path: "runc-nowhere", wantErr: []string{`"runc-nowhere" is not in $PATH`}},
		{name: "broken", handler: "runc", path: script(t, dir, "runcbad", "Segmentation fault", 1), wantErr: []string{"does not run", "Segmentation fault", "runtimes.runc.path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Runtime(context.Background(), tt.handler, tt.path, t.TempDir(), false)
			if len(tt.wantErr) == 0 {
				if r.Err != nil {
					t.Fatalf("Runtime(%s) = %v, want ok", tt.path, r.Err)
				}
				if tt.wantWhat != "" && !strings.HasPrefix(r.What, tt.wantWhat) {
					t.Errorf("What = %q, want %q...", r.What, tt.wantWhat)
				}
				return
			}
			if r.Err == nil {
				t.Fatalf("Runtime(%s) passed, want an error", tt.path)
			}
			t.Logf("%s: %v", r.What, r.Err)
			if r.Reason != ReasonRuntime {
				t.Errorf("reason = %q, want %q", r.Reason, ReasonRuntime)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(r.Err.Error(), w) {
					t.Errorf("error %q lacks %q", r.Err, w)
				}
			}
			var ve *oci.VersionError
			if errors.As(r.Err, &ve) != tt.tooOld {
				t.Errorf("VersionError = %v, want %v", !tt.tooOld, tt.tooOld)
			}
		})
	}
}
