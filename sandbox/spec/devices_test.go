package spec

import (
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type fakeDirEntry struct {
	name string
	mode fs.FileMode
}

func (e fakeDirEntry) Name() string               { return e.name }
func (e fakeDirEntry) IsDir() bool                { return e.mode.IsDir() }
func (e fakeDirEntry) Type() fs.FileMode          { return e.mode.Type() }
func (e fakeDirEntry) Info() (fs.FileInfo, error) { return fakeInfo(e), nil }

type fakeInfo fakeDirEntry

func (i fakeInfo) Name() string       { return i.name }
func (i fakeInfo) Size() int64        { return 0 }
func (i fakeInfo) Mode() fs.FileMode  { return i.mode }
func (i fakeInfo) ModTime() time.Time { return time.Time{} }
func (i fakeInfo) IsDir() bool        { return i.mode.IsDir() }
func (i fakeInfo) Sys() any           { return nil }

// fakeDevices replaces statDevice/readDevDir with a fake /dev tree.
func fakeDevices(t *testing.T) {
	t.Helper()
	mode := os.FileMode(0o660)
	zero := uint32(0)
	nodes := map[string]specs.LinuxDevice{
		"/dev/fuse":       {Type: "c", Major: 10, Minor: 229, FileMode: &mode, UID: &zero, GID: &zero},
		"/dev/sda":        {Type: "b", Major: 8, Minor: 0, FileMode: &mode, UID: &zero, GID: &zero},
		"/dev/dri/card0":  {Type: "c", Major: 226, Minor: 0, FileMode: &mode, UID: &zero, GID: &zero},
		"/dev/dri/render": {Type: "c", Major: 226, Minor: 128, FileMode: &mode, UID: &zero, GID: &zero},
	}
	dirs := map[string][]os.DirEntry{
		"/dev/dri": {fakeDirEntry{"card0", fs.ModeDevice | fs.ModeCharDevice}, fakeDirEntry{"render", fs.ModeDevice | fs.ModeCharDevice}, fakeDirEntry{"README", 0}},
	}
	oldStat, oldRead := statDevice, readDevDir
	t.Cleanup(func() { statDevice, readDevDir = oldStat, oldRead })
	statDevice = func(p string) (specs.LinuxDevice, error) {
		if _, ok := dirs[p]; ok {
			return specs.LinuxDevice{}, &os.PathError{Op: "stat", Path: p, Err: unix.EISDIR}
		}
		d, ok := nodes[p]
		if !ok {
			return specs.LinuxDevice{}, &os.PathError{Op: "stat", Path: p, Err: os.ErrNotExist}
		}
		d.Path = p
		return d, nil
	}
	readDevDir = func(p string) ([]os.DirEntry, error) { return dirs[p], nil }
}

func TestCRIDevices(t *testing.T) {
	fakeDevices(t)
	nodes, rules, err := criDevices([]*runtimeapi.Device{
		{HostPath: "/dev/fuse", ContainerPath: "/dev/fuse", Permissions: "rw"},
		{HostPath: "/dev/sda", ContainerPath: "/dev/xvda", Permissions: "r"},
		{HostPath: "/dev/dri", ContainerPath: "/dev/dri", Permissions: "rwm"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		path, typ    string
		major, minor int64
		access       string
	}{
		{"/dev/fuse", "c", 10, 229, "rw"},
		{"/dev/xvda", "b", 8, 0, "r"},
		{"/dev/dri/card0", "c", 226, 0, "rwm"},
		{"/dev/dri/render", "c", 226, 128, "rwm"},
	}
	if len(nodes) != len(want) || len(rules) != len(want) {
		t.Fatalf("nodes %+v rules %+v", nodes, rules)
	}
	for i, w := range want {
		n, r := nodes[i], rules[i]
		if n.Path != w.path || n.Type != w.typ || n.Major != w.major || n.Minor != w.minor {
			t.Errorf("node %d = %+v, want %+v", i, n, w)
		}
		if !r.Allow || r.Type != w.typ || *r.Major != w.major || *r.Minor != w.minor || r.Access != w.access {
			t.Errorf("rule %d = %+v, want %+v", i, r, w)
		}
	}
	for _, tt := range []struct {
		d     *runtimeapi.Device
		field string
	}{
		{&runtimeapi.Device{HostPath: "/dev/fuse", ContainerPath: "/dev/fuse", Permissions: "rwx"}, "devices[0].permissions"},
		{&runtimeapi.Device{HostPath: "/dev/nope", ContainerPath: "/dev/nope", Permissions: "rw"}, "devices[0].host_path"},
		{&runtimeapi.Device{HostPath: "", ContainerPath: "/dev/x"}, "devices[0].host_path"},
		{&runtimeapi.Device{HostPath: "/dev/fuse", ContainerPath: "fuse"}, "devices[0].container_path"},
	} {
		if _, _, err := criDevices([]*runtimeapi.Device{tt.d}); err == nil || !strings.HasPrefix(err.Error(), tt.field+":") {
			t.Errorf("%+v: want %s error, got %v", tt.d, tt.field, err)
		}
	}
}

func TestStatDeviceReal(t *testing.T) {
	d, err := statDevice("/dev/null")
	if err != nil {
		t.Skip(err)
	}
	if d.Type != "c" || d.Major != 1 || d.Minor != 3 {
		t.Errorf("/dev/null = %+v", d)
	}
	if _, err := statDevice("/etc/hostname"); err == nil {
		t.Error("a regular file is not a device")
	}
}
