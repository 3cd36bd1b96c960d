package pause

import (
	"errors"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// confinement is what peapod asks of a pause it started itself (sandbox/
// infra): where to chroot and whom to run as.
type confinement struct {
	root    string
	uid     int
	gid     int
	groups  []int
	readyFD int // 0: none
}

func parseArgs(args []string) (*confinement, error) {
	if len(args) == 0 {
		return nil, nil
	}
	c := &confinement{uid: -1, gid: -1}
	for i := 0; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return nil, errors.New("flag " + args[i] + " needs a value")
		}
		v := args[i+1]
		switch args[i] {
		case "-root":
			c.root = v
		case "-user":
			u, g, ok := strings.Cut(v, ":")
			if !ok {
				return nil, errors.New("-user " + v + ": want UID:GID")
			}
			var err error
			if c.uid, err = strconv.Atoi(u); err != nil || c.uid < 0 {
				return nil, errors.New("-user " + v + ": bad uid")
			}
			if c.gid, err = strconv.Atoi(g); err != nil || c.gid < 0 {
				return nil, errors.New("-user " + v + ": bad gid")
			}
		case "-ready-fd":
			fd, err := strconv.Atoi(v)
			if err != nil || fd < 3 {
				return nil, errors.New("-ready-fd " + v + ": want a descriptor >= 3")
			}
			c.readyFD = fd
		case "-groups":
			for _, s := range strings.Split(v, ",") {
				g, err := strconv.Atoi(s)
				if err != nil || g < 0 {
					return nil, errors.New("-groups " + v + ": bad gid " + s)
				}
				c.groups = append(c.groups, g)
			}
		default:
			return nil, errors.New("unknown flag " + args[i])
		}
	}
	if c.root == "" || c.uid < 0 {
		return nil, errors.New("-root and -user are required together")
	}
	return c, nil
}

const (
	prSetDumpable    = 4
	prCapbsetDrop    = 24
	prSetNoNewPrivs  = 38
	linuxCapVersion3 = 0x20080522
)

// apply confines this process: not dumpable (so a container sharing its
// PID namespace cannot reach it through /proc/1/root), chroot, the pod's
// user, no capabilities (and no bounding set for root), no_new_privs. The per-thread calls
// go to every thread; this binary is built without cgo, which that needs.
func (c *confinement) apply() error {
	if err := allThreads(syscall.SYS_PRCTL, prSetDumpable, 0, 0); err != nil {
		return wrap("prctl(PR_SET_DUMPABLE)", err)
	}
	if err := syscall.Chroot(c.root); err != nil {
		return wrap("chroot "+c.root, err)
	}
	if err := syscall.Chdir("/"); err != nil {
		return wrap("chdir /", err)
	}
	// A pause that is not root loses every capability at setuid and, with
	// no_new_privs and nothing to exec, can never gain one back: its
	// bounding set is moot, and dropping it costs ~4 ms (a stop-the-world
	// per capability) on every pod start. Root keeps its capabilities
	// across setuid(0), so for root the bounding set goes too.
	for cap := uintptr(0); cap < 64 && c.uid == 0; cap++ {
		if err := allThreads(syscall.SYS_PRCTL, prCapbsetDrop, cap, 0); err != nil {
			if err == syscall.EINVAL { // past the kernel's last capability
				break
			}
			return wrap("prctl(PR_CAPBSET_DROP, "+strconv.Itoa(int(cap))+")", err)
		}
	}
	if err := syscall.Setgroups(c.groups); err != nil {
		return wrap("setgroups", err)
	}
	if err := syscall.Setgid(c.gid); err != nil {
		return wrap("setgid "+strconv.Itoa(c.gid), err)
	}
	if err := syscall.Setuid(c.uid); err != nil {
		return wrap("setuid "+strconv.Itoa(c.uid), err)
	}
	// A non-zero uid lost its capabilities with setuid; uid 0 keeps them
	// until they are cleared here.
	hdr := struct {
		version uint32
		pid     int32
	}{linuxCapVersion3, 0}
	var data [2]struct{ effective, permitted, inheritable uint32 }
	if err := allThreads(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); err != nil {
		return wrap("capset", err)
	}
	if err := allThreads(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0); err != nil {
		return wrap("prctl(PR_SET_NO_NEW_PRIVS)", err)
	}
	return nil
}

func allThreads(trap, a1, a2, a3 uintptr) error {
	if _, _, e := syscall.AllThreadsSyscall(trap, a1, a2, a3); e != 0 {
		return e
	}
	return nil
}

// wrap avoids fmt, which would double this binary's size.
func wrap(what string, err error) error { return errors.New(what + ": " + err.Error()) }
