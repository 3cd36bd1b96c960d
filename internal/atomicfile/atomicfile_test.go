package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if string(b) != "two" || fi.Mode().Perm() != 0o644 {
		t.Errorf("content %q mode %v", b, fi.Mode().Perm())
	}
	if err := WriteFile(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil || !strings.Contains(err.Error(), "missing/x") {
		t.Errorf("write into a missing dir: %v", err)
	}
	// A reader that fails leaves the old content and no temp file.
	err := WriteFrom(path, &failingReader{}, 0o600)
	if err == nil {
		t.Fatal("WriteFrom of a failing reader succeeded")
	}
	if b, _ := os.ReadFile(path); string(b) != "two" {
		t.Errorf("after a failed write: %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("files left: %v", ents)
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n > 0 {
		return 0, errors.New("connection reset")
	}
	r.n++
	return copy(p, "partial"), nil
}

// TestKilledWriter kills a process that rewrites one file in a loop, at
// ten different moments: the file always holds one whole version.
func TestKilledWriter(t *testing.T) {
	if os.Getenv("ATOMICFILE_WRITER") != "" {
		writerLoop(os.Getenv("ATOMICFILE_WRITER"))
		return
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	const size = 4 << 20
	for i := 0; i < 10; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWriter$")
		cmd.Env = append(os.Environ(), "ATOMICFILE_WRITER="+path)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(20+i*13) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		b, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			continue // killed before its first rename
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != size || !bytes.Equal(b, bytes.Repeat(b[:1], size)) {
			t.Fatalf("kill %d: file is torn: %d bytes, first %q", i, len(b), b[:min(len(b), 8)])
		}
	}
}

func writerLoop(path string) {
	for v := byte('a'); ; v = 'a' + (v-'a'+1)%26 {
		if err := WriteFile(path, bytes.Repeat([]byte{v}, 4<<20), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
