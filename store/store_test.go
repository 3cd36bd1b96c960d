package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type rec struct {
	ID   string
	Size int
}

func TestStoreRoundTripAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"b", "a", "c"} {
		if err := s.Put(BucketImages, id, rec{ID: id, Size: i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(BucketImages, "c"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(BucketImages, "missing"); err != nil {
		t.Fatalf("deleting an absent key: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got rec
	if err := s.Get(BucketImages, "b", &got); err != nil || got.Size != 0 {
		t.Fatalf("Get b = %+v, %v", got, err)
	}
	if err := s.Get(BucketImages, "c", &got); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get deleted key: %v", err)
	}
	if err := s.Get("nobucket", "x", &got); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get in absent bucket: %v", err)
	}
	var keys []string
	if err := List(s, BucketImages, func(k string, v *rec) error { keys = append(keys, k+v.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0] != "aa" || keys[1] != "bb" {
		t.Fatalf("List = %v", keys)
	}
}

func TestStoreSecondOpenFailsClearly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(path); err == nil {
		t.Fatal("a second Open of a locked store succeeded")
	}
}

// TestOpenDamaged: a damaged or truncated state database is refused with
// a message naming the file and what to do; never taken for a new one
// while the state it described is on disk.
func TestOpenDamaged(t *testing.T) {
	for _, tt := range []struct {
		name    string
		content []byte
		others  bool // containers/ holds something
		wantErr string
	}{
		{"garbage", bytes.Repeat([]byte{0xa5}, 8192), false, "invalid database"},
		{"truncated beside state", nil, true, "the database was truncated"},
		{"empty on a fresh root", nil, false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "peapod.db")
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			if tt.others {
				if err := os.MkdirAll(filepath.Join(dir, "containers", "abc"), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			s, err := Open(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			for _, want := range []string{tt.wantErr, path, "move it aside", "backup"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if fi, _ := os.Stat(path); fi.Size() != int64(len(tt.content)) {
				t.Errorf("the damaged file was changed: %d bytes", fi.Size())
			}
		})
	}
}
