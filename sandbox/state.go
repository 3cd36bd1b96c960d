// Package sandbox owns pod sandboxes and their containers: state, lifecycle,
// namespaces, the pause infra container and the per-pod files.
//
// Sandbox states:
//
//	             RunPodSandbox ok
//	(none) ───────────────────────────► READY
//	                                     │  StopPodSandbox, or the pause exited
//	                                     ▼
//	                                  NOTREADY ──RemovePodSandbox──► (deleted)
//
// Container states (as containerd's store/container/status.go):
//
//	CreateContainer    StartContainer    process exits
//	 ───────► CREATED ───────► RUNNING ───────► EXITED ───RemoveContainer──► (deleted)
//	             │                                 ▲
//	             └─────────── StopContainer ───────┘
//
//	UNKNOWN: a record found on start-up whose process state cannot be read.
//
// Every state change goes through update(), which writes the record to the
// store before the new state becomes visible, so a kill -9 of peapod never
// leaves memory and disk disagreeing.
package sandbox

import (
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox/infra"
	"peapod/store"
)

// SandboxRecord is the persisted state of one pod sandbox.
type SandboxRecord struct {
	ID             string                     `json:"id"`
	Name           string                     `json:"name"` // reserved name: name_namespace_uid_attempt
	ConfigProto    []byte                     `json:"config"`
	RuntimeHandler string                     `json:"runtimeHandler"`
	State          runtimeapi.PodSandboxState `json:"state"`
	CreatedAt      int64                      `json:"createdAt"`
	NetNS          string                     `json:"netns,omitempty"`
	IPs            []string                   `json:"ips,omitempty"`
	CgroupParent   string                     `json:"cgroupParent"`
	PausePid       int                        `json:"pausePid,omitempty"`
	// PauseStartTime (/proc/<pid>/stat field 22) marks a pause peapod
	// started itself (sandbox/infra) and tells it from a recycled pid.
	// Zero with a PausePid: a pause an older peapod ran under the OCI
	// runtime, with the sandbox id as its container id.
	PauseStartTime uint64 `json:"pauseStartTime,omitempty"`
	// NetworkDown marks a finished CNI DEL, as CRI-O's network-stopped file
	// does, so a repeated stop does not call DEL for an IP given out again.
	NetworkDown bool `json:"networkDown,omitempty"`
	// ShmMounted marks the pod's /dev/shm tmpfs as mounted.
	ShmMounted bool `json:"shmMounted,omitempty"`
}

// ContainerRecord is the persisted state of one container.
type ContainerRecord struct {
	ID          string                    `json:"id"`
	SandboxID   string                    `json:"sandboxId"`
	Name        string                    `json:"name"` // reserved name
	ConfigProto []byte                    `json:"config"`
	ImageRef    string                    `json:"imageRef"`   // resolved image id (sha256:…)
	ImageName   string                    `json:"imageName"`  // what the caller asked for
	RepoDigest  string                    `json:"repoDigest"` // image_ref reported by ContainerStatus
	State       runtimeapi.ContainerState `json:"state"`
	CreatedAt   int64                     `json:"createdAt"`
	StartedAt   int64                     `json:"startedAt,omitempty"`
	FinishedAt  int64                     `json:"finishedAt,omitempty"`
	ExitCode    int32                     `json:"exitCode"`
	Reason      string                    `json:"reason,omitempty"`
	Message     string                    `json:"message,omitempty"`
	Pid         int                       `json:"pid,omitempty"`
	LogPath     string                    `json:"logPath,omitempty"`
	StopSignal  string                    `json:"stopSignal,omitempty"`
	CgroupsPath string                    `json:"cgroupsPath"`
	// Mounted marks the overlay rootfs as mounted.
	Mounted bool `json:"mounted,omitempty"`
	// RuntimeDeleted: the exited container's OCI runtime instance (runc
	// state, cgroup, conmon's dir) is gone already; the record holds its
	// exit. Done once the exit is recorded, as containerd deletes a task
	// when it exits, so RemoveContainer has no runtime process to run.
	RuntimeDeleted bool `json:"runtimeDeleted,omitempty"`
	// User is the effective user the process runs as.
	UID  int64   `json:"uid"`
	GID  int64   `json:"gid"`
	GIDs []int64 `json:"gids,omitempty"`
}

// Sandbox is a pod sandbox in memory.
type Sandbox struct {
	// op serialises lifecycle calls on this pod; slow work happens under it,
	// never under the manager's map lock.
	op sync.Mutex

	// wmu serialises the writers of rec and config and is held across
	// their store write; mu is taken only to read or publish, so List and
	// Status calls never wait for a bbolt commit (an fsync, queued behind
	// every other pod's commits while pods churn).
	wmu    sync.Mutex
	mu     sync.RWMutex
	rec    SandboxRecord
	config *runtimeapi.PodSandboxConfig
	// pause is the running infra process (nil: not started, or a legacy
	// runtime-run pause); removed: the record is deleted, later updates
	// (a late exit notification) must not write it back.
	pause   *infra.Process
	removed bool

	// startObserved: the pod's start duration was recorded (pod_start.go).
	startObserved atomic.Bool
}

// Container is a container in memory.
type Container struct {
	op sync.Mutex

	wmu    sync.Mutex // as Sandbox.wmu
	mu     sync.RWMutex
	rec    ContainerRecord
	config *runtimeapi.ContainerConfig

	// exitRetry: an exit the store could not take is to be recorded
	// again (refreshExit).
	exitRetry atomic.Bool
}

// Record returns a copy of the persisted state.
func (s *Sandbox) Record() SandboxRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.rec
	r.IPs = append([]string(nil), s.rec.IPs...)
	return r
}

// Config is the sandbox's CRI config (read-only: UpdatePodSandboxResources
// replaces it whole, never in place).
func (s *Sandbox) Config() *runtimeapi.PodSandboxConfig {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.config
}

// setConfig persists a new config and publishes it.
func (s *Sandbox) setConfig(st *store.Store, cfg *runtimeapi.PodSandboxConfig) error {
	b, err := proto.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode config of sandbox %s: %w", s.ID(), err)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	next, removed := s.rec, s.removed
	s.mu.RUnlock()
	if removed {
		return fmt.Errorf("%w: pod sandbox %s was removed", ErrNotFound, next.ID)
	}
	next.ConfigProto = b
	if err := st.Put(store.BucketSandboxes, next.ID, &next); err != nil {
		return fmt.Errorf("persist sandbox %s: %w", next.ID, err)
	}
	s.mu.Lock()
	s.rec = next
	s.config = cfg
	s.mu.Unlock()
	return nil
}

// ID is the sandbox id.
func (s *Sandbox) ID() string { return s.rec.ID }

// Record returns a copy of the persisted state.
func (c *Container) Record() ContainerRecord {
	c.mu.RLock()
	defer c.mu.RUnlock()
	r := c.rec
	r.GIDs = append([]int64(nil), c.rec.GIDs...)
	return r
}

// Config is the CRI config of the container: as created, with the
// resources of its last UpdateContainerResources (read-only).
func (c *Container) Config() *runtimeapi.ContainerConfig {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.config
}

// setConfig persists and publishes cfg (the caller's copy: never modified
// after this).
func (c *Container) setConfig(st *store.Store, cfg *runtimeapi.ContainerConfig) error {
	b, err := proto.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode config of container %s: %w", c.ID(), err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.RLock()
	next := c.rec
	c.mu.RUnlock()
	next.ConfigProto = b
	if err := st.Put(store.BucketContainers, next.ID, &next); err != nil {
		return fmt.Errorf("persist container %s: %w", next.ID, err)
	}
	c.mu.Lock()
	c.rec = next
	c.config = cfg
	c.mu.Unlock()
	return nil
}

// ID is the container id.
func (c *Container) ID() string { return c.rec.ID }

// update applies fn to a copy of the record, persists it, then publishes it.
func (s *Sandbox) update(st *store.Store, fn func(*SandboxRecord) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	next, removed := s.rec, s.removed
	next.IPs = append([]string(nil), s.rec.IPs...) // fn may change them in place
	s.mu.RUnlock()
	if removed {
		return fmt.Errorf("%w: pod sandbox %s was removed", ErrNotFound, next.ID)
	}
	if err := fn(&next); err != nil {
		return err
	}
	if err := st.Put(store.BucketSandboxes, next.ID, &next); err != nil {
		return fmt.Errorf("persist sandbox %s: %w", next.ID, err)
	}
	s.mu.Lock()
	s.rec = next
	s.mu.Unlock()
	return nil
}

// update applies fn to a copy of the record, persists it, then publishes it.
func (c *Container) update(st *store.Store, fn func(*ContainerRecord) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.RLock()
	next := c.rec
	next.GIDs = append([]int64(nil), c.rec.GIDs...) // fn may change them in place
	c.mu.RUnlock()
	if err := fn(&next); err != nil {
		return err
	}
	if err := st.Put(store.BucketContainers, next.ID, &next); err != nil {
		return fmt.Errorf("persist container %s: %w", next.ID, err)
	}
	c.mu.Lock()
	c.rec = next
	c.mu.Unlock()
	return nil
}

func newSandbox(rec SandboxRecord) (*Sandbox, error) {
	cfg := &runtimeapi.PodSandboxConfig{}
	if err := proto.Unmarshal(rec.ConfigProto, cfg); err != nil {
		return nil, fmt.Errorf("decode config of sandbox %s: %w", rec.ID, err)
	}
	return &Sandbox{rec: rec, config: cfg}, nil
}

func newContainer(rec ContainerRecord) (*Container, error) {
	cfg := &runtimeapi.ContainerConfig{}
	if err := proto.Unmarshal(rec.ConfigProto, cfg); err != nil {
		return nil, fmt.Errorf("decode config of container %s: %w", rec.ID, err)
	}
	return &Container{rec: rec, config: cfg}, nil
}
