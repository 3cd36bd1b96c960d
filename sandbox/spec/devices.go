package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// errNotDevice is returned by statDevice for a path that is neither a
// character nor a block device.
var errNotDevice = errors.New("not a device node")

// statDevice describes the device node at hostPath (symlinks followed). A
// variable so tests need no real device nodes.
var statDevice = func(hostPath string) (specs.LinuxDevice, error) {
	var st unix.Stat_t
	if err := unix.Stat(hostPath, &st); err != nil {
		return specs.LinuxDevice{}, &os.PathError{Op: "stat", Path: hostPath, Err: err}
	}
	var typ string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		typ = "c"
	case unix.S_IFBLK:
		typ = "b"
	case unix.S_IFDIR:
		return specs.LinuxDevice{}, &os.PathError{Op: "stat", Path: hostPath, Err: unix.EISDIR}
	default:
		return specs.LinuxDevice{}, &os.PathError{Op: "stat", Path: hostPath, Err: errNotDevice}
	}
	mode := os.FileMode(st.Mode & 0o777)
	uid, gid := st.Uid, st.Gid
	return specs.LinuxDevice{
		Path:     hostPath,
		Type:     typ,
		Major:    int64(unix.Major(uint64(st.Rdev))),
		Minor:    int64(unix.Minor(uint64(st.Rdev))),
		FileMode: &mode,
		UID:      &uid,
		GID:      &gid,
	}, nil
}

// readDevDir lists a directory of device nodes (a variable for tests).
var readDevDir = os.ReadDir

func i64(v int64) *int64 { return &v }

// defaultDeviceRules is the device cgroup allow-list of a non-privileged
// container: deny everything, then allow mknod of any node (the node is
// still unusable unless allowed below) and the standard devices runc
// creates: null, zero, full, tty, random, urandom, the pts, ptmx, and tun
// (containerd's WithDefaultUnixDevices / runc's AllowedDevices).
func defaultDeviceRules() []specs.LinuxDeviceCgroup {
	allow := func(typ string, major, minor int64, access string) specs.LinuxDeviceCgroup {
		r := specs.LinuxDeviceCgroup{Allow: true, Type: typ, Access: access}
		if major >= 0 {
			r.Major = i64(major)
		}
		if minor >= 0 {
			r.Minor = i64(minor)
		}
		return r
	}
	return []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		allow("c", -1, -1, "m"),
		allow("b", -1, -1, "m"),
		allow("c", 1, 3, "rwm"),    // /dev/null
		allow("c", 1, 5, "rwm"),    // /dev/zero
		allow("c", 1, 7, "rwm"),    // /dev/full
		allow("c", 5, 0, "rwm"),    // /dev/tty
		allow("c", 1, 8, "rwm"),    // /dev/random
		allow("c", 1, 9, "rwm"),    // /dev/urandom
		allow("c", 136, -1, "rwm"), // /dev/pts/*
		allow("c", 5, 2, "rwm"),    // /dev/ptmx
		allow("c", 10, 200, "rwm"), // /dev/net/tun
	}
}

func validPermissions(p string) bool {
	if p == "" {
		return false
	}
	for _, c := range p {
		if !strings.ContainsRune("rwm", c) {
			return false
		}
	}
	return true
}

// criDevices turns CRI devices into OCI device nodes and matching cgroup
// allow rules. A host_path that is a directory adds every device below it,
// at the same relative path under container_path (as containerd does).
func criDevices(devs []*runtimeapi.Device) ([]specs.LinuxDevice, []specs.LinuxDeviceCgroup, error) {
	var nodes []specs.LinuxDevice
	var rules []specs.LinuxDeviceCgroup
	for i, d := range devs {
		field := fmt.Sprintf("devices[%d]", i)
		perms := d.GetPermissions()
		if perms == "" {
			perms = "rwm"
		}
		if !validPermissions(perms) {
			return nil, nil, fieldErr(field+".permissions", "invalid %q: want a combination of r, w and m", d.GetPermissions())
		}
		host, ctr := d.GetHostPath(), d.GetContainerPath()
		if host == "" {
			return nil, nil, fieldErr(field+".host_path", "must not be empty")
		}
		if ctr == "" {
			ctr = host
		}
		if !path.IsAbs(ctr) {
			return nil, nil, fieldErr(field+".container_path", "must be an absolute path, got %q", ctr)
		}
		// "/dev/x/" and "/dev//x" name the same node; the OCI spec gets
		// the clean form (FuzzContainer found a trailing slash kept).
		ctr = path.Clean(ctr)
		found, err := devicesAt(host, ctr)
		if err != nil {
			return nil, nil, &FieldError{Field: field + ".host_path", Err: err}
		}
		for _, n := range found {
			nodes = append(nodes, n)
			rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: n.Type, Major: i64(n.Major), Minor: i64(n.Minor), Access: perms})
		}
	}
	return nodes, rules, nil
}

// devicesAt returns the device at host (mapped to ctr), or all devices
// below it when host is a directory.
func devicesAt(host, ctr string) ([]specs.LinuxDevice, error) {
	n, err := statDevice(host)
	if err == nil {
		n.Path = ctr
		return []specs.LinuxDevice{n}, nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return nil, err
	}
	var out []specs.LinuxDevice
	var walk func(hdir, cdir string) error
	walk = func(hdir, cdir string) error {
		ents, err := readDevDir(hdir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			h, c := filepath.Join(hdir, e.Name()), path.Join(cdir, e.Name())
			if e.IsDir() {
				if skipDevDir(e.Name()) {
					continue
				}
				if err := walk(h, c); err != nil {
					return err
				}
				continue
			}
			if e.Type()&(fs.ModeDevice|fs.ModeCharDevice) == 0 {
				continue
			}
			n, err := statDevice(h)
			if errors.Is(err, errNotDevice) || errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			n.Path = c
			out = append(out, n)
		}
		return nil
	}
	if err := walk(host, ctr); err != nil {
		return nil, err
	}
	return out, nil
}

// skipDevDir: directories of /dev that hold no device nodes a container
// should get (or that the runtime mounts itself).
func skipDevDir(name string) bool {
	switch name {
	case "pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev":
		return true
	}
	return false
}

// HostDevices lists the host's device nodes under /dev, for privileged
// containers (ContainerInput.HostDevices). Call it once and reuse the result.
func HostDevices() ([]specs.LinuxDevice, error) {
	return devicesAt("/dev", "/dev")
}
