package node

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"peapod/internal/procfs"
)

// machine is one reading of the host: everything the status builders need
// from the kernel and the filesystem, so that they stay pure functions. A
// zero field means "could not be read"; the builders leave the matching
// capacity out, and Ready then names it, as the kubelet does.
type machine struct {
	NumCPU int

	MemTotal     uint64 // bytes, MemTotal of /proc/meminfo
	MemAvailable uint64 // bytes, MemAvailable of /proc/meminfo
	// HugePageSizes are the page sizes the kernel offers, in bytes.
	HugePageSizes []uint64

	FSTotal      uint64 // bytes of the filesystem holding RootDir
	FSAvailable  uint64 // bytes an unprivileged writer may still use there
	FSInodes     uint64
	FSInodesFree uint64

	PIDMax   int64 // min(kernel.pid_max, kernel.threads-max)
	PIDCount int64 // tasks (threads) alive now

	MachineID     string
	SystemUUID    string
	BootID        string
	KernelVersion string
	OSImage       string
}

// readMachine reads the host. It always returns what it could read; the
// error joins what it could not, for the log.
func readMachine(rootDir string) (machine, error) {
	m := machine{NumCPU: runtime.NumCPU()}
	var errs []error

	if b, err := os.ReadFile("/proc/meminfo"); err != nil {
		errs = append(errs, err)
	} else {
		mi := procfs.ParseMeminfo(b)
		m.MemTotal, m.MemAvailable = mi["MemTotal"], mi["MemAvailable"]
	}
	m.HugePageSizes = hugePageSizes("/sys/kernel/mm/hugepages")

	var st unix.Statfs_t
	if err := unix.Statfs(rootDir, &st); err != nil {
		errs = append(errs, fmt.Errorf("statfs %s: %w", rootDir, err))
	} else {
		bs := uint64(st.Bsize)
		m.FSTotal, m.FSAvailable = st.Blocks*bs, st.Bavail*bs
		m.FSInodes, m.FSInodesFree = st.Files, st.Ffree
	}

	// The kubelet takes the smaller of the two, as either limit stops
	// clone(2).
	for _, f := range []string{"/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"} {
		if v, err := readInt(f); err != nil {
			errs = append(errs, err)
		} else if m.PIDMax == 0 || v < m.PIDMax {
			m.PIDMax = v
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.PIDCount, err = parseLoadavgTasks(string(b))
		if err != nil {
			errs = append(errs, err)
		}
	}
	if m.PIDCount == 0 {
		// Counts processes, not threads: low, but better than nothing.
		if ents, err := os.ReadDir("/proc"); err == nil {
			for _, e := range ents {
				if _, err := strconv.Atoi(e.Name()); err == nil {
					m.PIDCount++
				}
			}
		}
	}

	// cadvisor falls back to D-Bus's copy on hosts without systemd's.
	m.MachineID = firstFile("/etc/machine-id", "/var/lib/dbus/machine-id")
	// cadvisor's order, so the node reports what a kubelet on this host
	// would: DMI (root only; absent in VMs without it), the device tree
	// (ppc64), and at last the machine ID (s390x, and any host with
	// neither).
	m.SystemUUID = firstFile(
		"/sys/class/dmi/id/product_uuid",
		"/proc/device-tree/system-id",
		"/proc/device-tree/vm,uuid",
		"/etc/machine-id",
	)
	m.BootID = firstFile("/proc/sys/kernel/random/boot_id")

	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		errs = append(errs, fmt.Errorf("uname: %w", err))
	} else {
		m.KernelVersion = unix.ByteSliceToString(u.Release[:])
	}

	m.OSImage = "Linux" // cadvisor's answer when os-release is missing
	for _, f := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		if b, err := os.ReadFile(f); err == nil {
			if name := parseOSRelease(string(b))["PRETTY_NAME"]; name != "" {
				m.OSImage = name
			}
			break
		}
	}
	return m, errors.Join(errs...)
}

// parseLoadavgTasks returns the number of kernel scheduling entities, the
// denominator of /proc/loadavg's fourth field ("2/3518"). The kubelet
// prefers it to sysinfo(2), which truncates above 65535.
func parseLoadavgTasks(s string) (int64, error) {
	f := strings.Fields(s)
	if len(f) < 4 {
		return 0, fmt.Errorf("/proc/loadavg: want 5 fields, got %q", s)
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return 0, fmt.Errorf("/proc/loadavg: fourth field %q is not running/total", f[3])
	}
	n, err := strconv.ParseInt(total, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/loadavg: %w", err)
	}
	return n, nil
}

// parseOSRelease reads os-release(5): KEY=value lines, values optionally
// quoted.
func parseOSRelease(s string) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else {
			v = strings.Trim(v, `"'`)
		}
		out[k] = v
	}
	return out
}

// hugePageSizes lists the page sizes under /sys/kernel/mm/hugepages
// ("hugepages-2048kB"), in bytes.
func hugePageSizes(dir string) []uint64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []uint64
	for _, e := range ents {
		if kb, ok := parseHugePageDir(e.Name()); ok {
			out = append(out, kb*1024)
		}
	}
	return out
}

func parseHugePageDir(name string) (kb uint64, ok bool) {
	s, found := strings.CutPrefix(name, "hugepages-")
	if !found {
		return 0, false
	}
	s, found = strings.CutSuffix(s, "kB")
	if !found {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil && v > 0
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// firstFile returns the content of the first readable, non-empty file,
// without surrounding space or the NULs device-tree values end with; or "".
func firstFile(paths ...string) string {
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			if s := strings.TrimSpace(strings.TrimRight(string(b), "\x00")); s != "" {
				return s
			}
		}
	}
	return ""
}
