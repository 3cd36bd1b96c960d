package volumes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOpenBeneathRefusesEscapes(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600)
	os.MkdirAll(filepath.Join(root, "ok/dir"), 0o755)
	os.WriteFile(filepath.Join(root, "ok/file"), []byte("f"), 0o644)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("/", filepath.Join(root, "to-root")))
	must(os.Symlink("/etc", filepath.Join(root, "abs-etc")))
	must(os.Symlink(filepath.Join(root, "ok"), filepath.Join(root, "abs-inside"))) // absolute, even though it points inside
	must(os.Symlink("../../"+filepath.Base(outside), filepath.Join(root, "ok/up")))
	must(os.Symlink("dir", filepath.Join(root, "ok/rel-inside")))
	must(os.Symlink("/proc/self/root", filepath.Join(root, "magic")))

	cases := []struct {
		sub string
		ok  bool
	}{
		{"ok", true},
		{"ok/file", true},
		{"ok/rel-inside", true},
		{"new/made/here", true},
		{".", true},
		{"to-root", false},
		{"to-root/etc/passwd", false},
		{"abs-etc", false},
		{"abs-inside", false},
		{"ok/up/secret", false},
		{"../x", false},
		{"ok/../../x", false},
		{"/etc", false},
		{"magic", false},
		{"to-root/new/dir", false},
	}
	for _, tc := range cases {
		t.Run(tc.sub, func(t *testing.T) {
			fd, err := openBeneath(root, tc.sub)
			if err == nil {
				unix.Close(fd)
			}
			if (err == nil) != tc.ok {
				t.Fatalf("openBeneath(%q) err = %v, want ok=%v", tc.sub, err, tc.ok)
			}
		})
	}
	if st, err := os.Stat(filepath.Join(root, "new/made/here")); err != nil || !st.IsDir() {
		t.Error("missing subPath dirs not created")
	}
	if _, err := os.Stat("/new"); err == nil {
		t.Error("something was created outside the volume")
	}
}

func TestExpandSubPathExpr(t *testing.T) {
	env := map[string]string{"POD": "web-0", "NS": "prod", "EMPTY": "", "UP": ".."}
	cases := []struct {
		expr, want, err string
	}{
		{"$(POD)", "web-0", ""},
		{"logs/$(NS)/$(POD)", "logs/prod/web-0", ""},
		{"a$$(POD)", "a$(POD)", ""},
		{"$(MISSING)", "", "missing value for MISSING"},
		{"$(EMPTY)/x", "", "missing value for EMPTY"},
		{"$(UP)/etc", "", "'..'"},
		{"/$(POD)", "", "relative"},
	}
	for _, tc := range cases {
		got, err := expandSubPathExpr(tc.expr, env)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %q, %v; want error %q", tc.expr, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.expr, got, err, tc.want)
		}
	}
}

func TestExpandVarsInEnv(t *testing.T) {
	got := expandVars("$(A)-$(B)-$(C", func(k string) (string, bool) {
		v, ok := map[string]string{"A": "1"}[k]
		return v, ok
	})
	if got != "1-$(B)-$(C" {
		t.Fatalf("got %q", got)
	}
}
