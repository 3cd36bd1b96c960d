// Package store is peapod's embedded metadata store: one bbolt file holding
// every sandbox, container and image record as JSON, one bucket per kind.
//
// The store has exactly one owner, the daemon. Callers keep their own
// in-memory indexes and use the store as the durable copy: each Put is one
// bbolt transaction, fsynced, so a record either is there whole after a
// crash or not at all.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Buckets used by peapod's packages. A package may use its own bucket name
// too; buckets are created on first Put.
const (
	BucketImages     = "images"
	BucketSandboxes  = "sandboxes"
	BucketContainers = "containers"
)

// ErrNotFound is returned by Get when the key is absent.
var ErrNotFound = errors.New("not found")

// Store wraps one bbolt database.
type Store struct {
	db *bolt.DB
}

// Open opens (creating if needed) the database at path. A second daemon on
// the same root fails here after the timeout instead of corrupting state.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store dir: %w", err)
	}
	if err := checkNotTruncated(path); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: locked by another process (is another peapod running on this root?)", path)
		}
		return nil, fmt.Errorf("open store %s: %w; %s", path, err, recoveryAdvice(path))
	}
	return &Store{db: db}, nil
}

// recoveryAdvice is what to do with a state database peapod cannot read:
// nothing is dropped silently, the operator decides.
func recoveryAdvice(path string) string {
	return fmt.Sprintf("the state database is damaged: restore it from a backup, or move it aside (mv %s %s.broken) to start with empty state — containers still running are then unknown to peapod and must be stopped by hand", path, path)
}

// checkNotTruncated refuses an empty database file beside other state: bbolt
// would take an empty file for a new database and start with no records
// while the sandboxes, containers and images it described are still on
// disk — a silent loss. An empty file alone (a first start cut short
// before bbolt wrote its header) is a new database.
func checkNotTruncated(path string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() != 0 {
		return nil
	}
	dir := filepath.Dir(path)
	for _, sub := range []string{"containers", "sandboxes", filepath.Join("images", "blobs", "sha256")} {
		if ents, err := os.ReadDir(filepath.Join(dir, sub)); err == nil && len(ents) > 0 {
			return fmt.Errorf("open store %s: the file is empty but %s holds %d entries: the database was truncated; %s",
				path, filepath.Join(dir, sub), len(ents), recoveryAdvice(path))
		}
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Put stores v as JSON under bucket/key.
func (s *Store) Put(bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", bucket, key, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		return b.Put([]byte(key), data)
	})
}

// Get decodes bucket/key into v; ErrNotFound when absent.
func (s *Store) Get(bucket, key string, v any) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return ErrNotFound
		}
		data := b.Get([]byte(key))
		if data == nil {
			return ErrNotFound
		}
		if err := json.Unmarshal(data, v); err != nil {
			return fmt.Errorf("decode %s/%s: %w", bucket, key, err)
		}
		return nil
	})
}

// Delete removes bucket/key; deleting an absent key is not an error.
func (s *Store) Delete(bucket, key string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return b.Delete([]byte(key))
	})
}

// ForEach calls fn with every key and its raw JSON value in bucket, in key
// order. The value is only valid during the call.
func (s *Store) ForEach(bucket string, fn func(key string, raw []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error { return fn(string(k), v) })
	})
}

// List decodes every value of bucket with newT and passes it to fn.
func List[T any](s *Store, bucket string, fn func(key string, v *T) error) error {
	return s.ForEach(bucket, func(key string, raw []byte) error {
		v := new(T)
		if err := json.Unmarshal(raw, v); err != nil {
			return fmt.Errorf("decode %s/%s: %w", bucket, key, err)
		}
		return fn(key, v)
	})
}
