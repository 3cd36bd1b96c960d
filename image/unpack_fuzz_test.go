package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Fuzzing the layer unpacker, which reads tar streams from any registry.
// Whatever the stream, unpacking must not panic and must not touch
// anything outside the snapshot being built: a sibling directory with a
// sentinel file (the target of every "outside" trick in the corpus) must be
// exactly as before, and nothing else may appear next to the snapshot.

// unpackConfined unpacks the layer build makes (given the absolute path
// of the sentinel's dir) into a fresh snapshot dir and fails t if anything
// outside the snapshot changed.
func unpackConfined(t *testing.T, build func(outside string) []byte) {
	base := t.TempDir()
	snap := filepath.Join(base, "snap")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{snap, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sentinel := filepath.Join(outside, "sentinel")
	if err := os.WriteFile(sentinel, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _ = unpackLayer(context.Background(), bytes.NewReader(build(outside)), snap)

	var found []string
	_ = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if p == snap {
			return filepath.SkipDir
		}
		found = append(found, p)
		return nil
	})
	if len(found) != 3 || found[0] != base || found[1] != outside || found[2] != sentinel {
		t.Fatalf("outside the snapshot changed: %v", found)
	}
	fi, err := os.Lstat(sentinel)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Fatalf("sentinel replaced: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(sentinel); string(b) != "untouched" {
		t.Fatalf("sentinel written: %q", b)
	}
}

// entriesTar turns fuzz input into a tar stream: records separated by
// "\n--\n", each "type|name|link|body" (type: a tar type flag byte). The
// names may be anything: absolute, "..", the sentinel's path (OUTSIDE in a
// spec stands for the sentinel's dir).
func entriesTar(spec string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, rec := range strings.Split(spec, "\n--\n") {
		f := strings.SplitN(rec, "|", 4)
		for len(f) < 4 {
			f = append(f, "")
		}
		typ := byte(tar.TypeReg)
		if len(f[0]) > 0 {
			typ = f[0][0]
		}
		h := &tar.Header{Typeflag: typ, Name: f[1], Linkname: f[2], Mode: 0o755, Uid: 0, Gid: 0, Format: tar.FormatPAX}
		if typ == tar.TypeReg || typ == tar.TypeRegA {
			h.Size = int64(len(f[3]))
		}
		if err := tw.WriteHeader(h); err != nil {
			continue
		}
		if h.Size > 0 {
			_, _ = tw.Write([]byte(f[3]))
		}
	}
	_ = tw.Close()
	return buf.Bytes()
}

var unpackSeeds = []string{
	"0|etc/passwd||root:x:0:0",
	"0|../outside/pwned||x",
	"0|/tmp/abs||x",
	"2|evil|/|\n--\n0|evil/pwned||x",
	"2|evil|../../..|\n--\n0|evil/outside/pwned||x",
	"2|evil|OUTSIDE|\n--\n0|evil/pwned||x",
	"2|f|OUTSIDE/sentinel|\n--\n0|f||replaced",
	"1|h|../outside/sentinel|",
	"2|evil|/|\n--\n1|h|evil/etc/passwd|",
	"2|evil|OUTSIDE|\n--\n1|h|evil/sentinel|",
	"3|dev/null||",
	"4|dev/sda||",
	"6|fifo||",
	"5|a/b/c||\n--\n0|a/b/.wh.c||",
	"0|.wh..wh..opq||\n--\n0|x/.wh..wh..opq||",
	"5|d||\n--\n2|d/link|..|\n--\n0|d/link/escape||x",
	"0|./././a||x\n--\n0|a/||y",
	"0|a//b///c||z",
	"0|" + strings.Repeat("d/", 200) + "f||deep",
}

func FuzzUnpackEntries(f *testing.F) {
	for _, s := range unpackSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		unpackConfined(t, func(outside string) []byte {
			return entriesTar(strings.ReplaceAll(spec, "OUTSIDE", outside))
		})
	})
}

// FuzzUnpackTar feeds raw bytes as the layer: truncated headers, bad
// checksums, huge sizes, PAX records.
func FuzzUnpackTar(f *testing.F) {
	for _, s := range unpackSeeds {
		f.Add(entriesTar(strings.ReplaceAll(s, "OUTSIDE", "/tmp")))
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0}, 1024))
	f.Fuzz(func(t *testing.T, data []byte) {
		unpackConfined(t, func(string) []byte { return data })
	})
}
