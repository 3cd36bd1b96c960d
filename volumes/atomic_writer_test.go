package volumes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readLink(t *testing.T, p string) string {
	t.Helper()
	s, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAtomicWriterLayoutAndModes(t *testing.T) {
	dir := t.TempDir()
	w := &atomicWriter{dir: dir}
	err := w.Write(map[string]fileProjection{
		"a":       {Data: []byte("A"), Mode: 0o600},
		"sub/b":   {Data: []byte("B"), Mode: 0o444},
		"sub/c/d": {Data: []byte("D")},
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := readLink(t, filepath.Join(dir, "..data"))
	if !strings.HasPrefix(ts, "..") || strings.Contains(ts, "/") {
		t.Fatalf("..data -> %q, want a ..timestamp dir name", ts)
	}
	if got := readLink(t, filepath.Join(dir, "a")); got != "..data/a" {
		t.Fatalf("a -> %q", got)
	}
	if got := readLink(t, filepath.Join(dir, "sub")); got != "..data/sub" {
		t.Fatalf("sub -> %q", got)
	}
	if got := mustRead(t, filepath.Join(dir, "sub/c/d")); got != "D" {
		t.Fatalf("sub/c/d = %q", got)
	}
	for p, want := range map[string]os.FileMode{"a": 0o600, "sub/b": 0o444, "sub/c/d": 0o644} {
		st, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %o, want %o", p, st.Mode().Perm(), want)
		}
	}
}

func TestAtomicWriterUpdateSwapsAndKeepsOldReadable(t *testing.T) {
	dir := t.TempDir()
	w := &atomicWriter{dir: dir}
	if err := w.Write(map[string]fileProjection{"k": {Data: []byte("old")}, "gone": {Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	oldTS := readLink(t, filepath.Join(dir, "..data"))

	// Unchanged payload: no new version.
	if err := w.Write(map[string]fileProjection{"k": {Data: []byte("old")}, "gone": {Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if got := readLink(t, filepath.Join(dir, "..data")); got != oldTS {
		t.Fatalf("unchanged payload made a new version %s (was %s)", got, oldTS)
	}

	swapped := false
	w.beforeSwap = func() {
		swapped = true
		// The new version is written, not yet visible: readers see the old.
		if got := mustRead(t, filepath.Join(dir, "k")); got != "old" {
			t.Errorf("before swap k = %q, want old", got)
		}
		if got := mustRead(t, filepath.Join(dir, "gone")); got != "x" {
			t.Errorf("before swap gone = %q", got)
		}
		ents, _ := os.ReadDir(dir)
		n := 0
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "..") && e.IsDir() && e.Name() != "..data" {
				n++
			}
		}
		if n != 2 {
			t.Errorf("before swap: %d timestamped dirs, want 2 (old and new)", n)
		}
	}
	if err := w.Write(map[string]fileProjection{"k": {Data: []byte("new")}, "added": {Data: []byte("y")}}); err != nil {
		t.Fatal(err)
	}
	if !swapped {
		t.Fatal("beforeSwap not called")
	}
	newTS := readLink(t, filepath.Join(dir, "..data"))
	if newTS == oldTS {
		t.Fatal("..data not swapped")
	}
	if got := mustRead(t, filepath.Join(dir, "k")); got != "new" {
		t.Fatalf("k = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "gone")); !os.IsNotExist(err) {
		t.Fatalf("gone still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, oldTS)); !os.IsNotExist(err) {
		t.Fatalf("old version %s not removed", oldTS)
	}
	if _, err := os.Lstat(filepath.Join(dir, "..data_tmp")); !os.IsNotExist(err) {
		t.Fatal("..data_tmp left behind")
	}
}

func TestAtomicWriterModeChangeIsAnUpdate(t *testing.T) {
	dir := t.TempDir()
	w := &atomicWriter{dir: dir}
	if err := w.Write(map[string]fileProjection{"k": {Data: []byte("v"), Mode: 0o644}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(map[string]fileProjection{"k": {Data: []byte("v"), Mode: 0o400}}); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(dir, "k"))
	if st.Mode().Perm() != 0o400 {
		t.Fatalf("mode %o", st.Mode().Perm())
	}
}

func TestAtomicWriterRejectsBadPaths(t *testing.T) {
	for _, p := range []string{"/abs", "../x", "a/../../x", "..data", "..hidden", ""} {
		w := &atomicWriter{dir: t.TempDir()}
		if err := w.Write(map[string]fileProjection{p: {Data: []byte("x")}}); err == nil {
			t.Errorf("path %q accepted", p)
		}
	}
}
