package spec

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// allCaps lists the Linux capabilities by number (linux/capability.h up to
// CAP_CHECKPOINT_RESTORE, kernel 5.9+).
var allCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// DefaultCapabilities is the set a non-privileged container gets without
// add/drop: containerd's (and Docker's) default.
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// AllCapabilities returns every capability name this package knows.
func AllCapabilities() []string { return slices.Clone(allCaps) }

// normalizeCap turns "net_admin", "CAP_NET_ADMIN", "cap_net_admin" into
// "CAP_NET_ADMIN", and reports whether the capability exists.
func normalizeCap(c string) (string, bool) {
	u := strings.ToUpper(strings.TrimSpace(c))
	if !strings.HasPrefix(u, "CAP_") {
		u = "CAP_" + u
	}
	return u, slices.Contains(allCaps, u)
}

// capabilities computes the process capability sets. hostCaps, when not nil,
// is the set peapod itself holds: "ALL" and privileged grant only those
// (as containerd grants cap.Current()), since runc cannot give a container a
// capability it does not have.
func capabilities(c *runtimeapi.Capability, privileged bool, hostCaps []string, w *Warnings) (*specs.LinuxCapabilities, error) {
	all := allCaps
	if hostCaps != nil {
		all = nil
		for _, h := range allCaps {
			if slices.Contains(hostCaps, h) {
				all = append(all, h)
			}
		}
	}
	const field = "linux.security_context.capabilities"
	var set []string
	if privileged {
		set = slices.Clone(all)
	} else {
		set = slices.Clone(DefaultCapabilities)
	}
	adds, drops := c.GetAddCapabilities(), c.GetDropCapabilities()
	isAll := func(s string) bool { return strings.EqualFold(s, "ALL") }
	if slices.ContainsFunc(adds, isAll) {
		set = slices.Clone(all)
	}
	if slices.ContainsFunc(drops, isAll) {
		set = nil
	}
	for _, a := range adds {
		if isAll(a) {
			continue
		}
		n, ok := normalizeCap(a)
		if !ok {
			return nil, fieldErr(field+".add_capabilities", "unknown capability %q", a)
		}
		if hostCaps != nil && !slices.Contains(hostCaps, n) {
			w.add("%s.add_capabilities: %s is not held by peapod on this host; the runtime may refuse it", field, n)
		}
		if !slices.Contains(set, n) {
			set = append(set, n)
		}
	}
	for _, d := range drops {
		if isAll(d) {
			continue
		}
		n, ok := normalizeCap(d)
		if !ok {
			return nil, fieldErr(field+".drop_capabilities", "unknown capability %q", d)
		}
		set = slices.DeleteFunc(set, func(s string) bool { return s == n })
	}
	out := &specs.LinuxCapabilities{
		Bounding:  set,
		Effective: slices.Clone(set),
		Permitted: slices.Clone(set),
	}
	// Ambient capabilities must also be inheritable and permitted; that is
	// the only case where peapod sets the inheritable set (containerd leaves
	// it empty since CVE-2022-24769).
	for _, a := range c.GetAddAmbientCapabilities() {
		n, ok := normalizeCap(a)
		if !ok {
			return nil, fieldErr(field+".add_ambient_capabilities", "unknown capability %q", a)
		}
		for _, s := range []*[]string{&out.Bounding, &out.Effective, &out.Permitted, &out.Inheritable, &out.Ambient} {
			if !slices.Contains(*s, n) {
				*s = append(*s, n)
			}
		}
	}
	return out, nil
}

var (
	ownCapsOnce sync.Once
	ownCapsVal  []string
)

// ownCaps is CurrentCapabilities, read once; nil (no limit) if unreadable.
func ownCaps() []string {
	ownCapsOnce.Do(func() {
		if c, err := CurrentCapabilities(); err == nil {
			ownCapsVal = c
		}
	})
	return ownCapsVal
}

// CurrentCapabilities returns the effective capabilities of the calling
// process (from /proc/self/status), for ContainerInput.HostCaps.
func CurrentCapabilities() ([]string, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		v, ok := strings.CutPrefix(s.Text(), "CapEff:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("parse CapEff %q: %w", v, err)
		}
		var caps []string
		for i, name := range allCaps {
			if mask&(1<<uint(i)) != 0 {
				caps = append(caps, name)
			}
		}
		return caps, nil
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("no CapEff line in /proc/self/status")
}
