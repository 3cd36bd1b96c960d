package store

import (
	"errors"
	"path/filepath"
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
