package oci

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNoSpace: the hint for a conmon that recorded nothing names a full
// filesystem, and only a full one.
func TestNoSpace(t *testing.T) {
	if os.Getenv("PEAPOD_INTEGRATION") != "1" || os.Geteuid() != 0 {
		t.Skip("needs root and PEAPOD_INTEGRATION=1 (mounts a tmpfs)")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	if got := noSpace(dir); got != "" {
		t.Errorf("with space: %q", got)
	}
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for err == nil {
		_, err = f.Write(buf)
	}
	f.Close()
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatal(err)
	}
	if got := noSpace(dir); !strings.Contains(got, dir) || !strings.Contains(got, "no space left on device") {
		t.Errorf("full: %q", got)
	}
	if got, want := conmonSaid([]byte("one\ntwo\n"), dir), "one; two; the filesystem of "+dir; !strings.HasPrefix(got, want) {
		t.Errorf("conmonSaid: %q, want it to start with %q", got, want)
	}
}
