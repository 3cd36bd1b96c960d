package lxcfs

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one line of a /proc/<pid>/mountinfo, the fields Decide needs.
type Mount struct {
	Point  string // as the process sees it (below its root)
	FSType string // "fuse.lxcfs" for lxcfs's
	Dev    uint64 // major:minor of the mount's filesystem
}

// ParseMountinfo reads mountinfo lines (proc(5)), in mount order: a later
// mount at the same point is on top of an earlier one.
func ParseMountinfo(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		f := strings.Fields(sc.Text())
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 6 || sep+1 >= len(f) {
			return nil, fmt.Errorf("mountinfo: malformed line %q", sc.Text())
		}
		maj, min, ok := strings.Cut(f[2], ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo: bad device %q", f[2])
		}
		out = append(out, Mount{Point: unescape(f[4]), FSType: f[sep+1], Dev: unix.Mkdev(uint32(ma), uint32(mi))})
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

const fsType = "fuse.lxcfs"

// Plan is what Sync does in one container's mount namespace: unmount the
// top mount at each Detach entry (a path may repeat, one entry per stale
// bind stacked there), then bind lxcfs's file at each Attach path.
type Plan struct {
	Detach []string
	Attach []string
}

// Empty reports a plan with nothing to do.
func (p Plan) Empty() bool { return len(p.Detach) == 0 && len(p.Attach) == 0 }

// Decide compares a container's mounts with lxcfs's state: at each of
// Paths the container wants (want, nil: all), a bind of the live lxcfs
// stays; binds of a dead lxcfs (another device) go; and lxcfs's file is
// bound where it serves one and the container has none. A path with a
// mount that is not lxcfs's on top (the pod's own volume) is left alone.
func Decide(mounts []Mount, s State, want func(path string) bool) Plan {
	var p Plan
	for _, path := range Paths {
		if want != nil && !want(path) {
			continue
		}
		var stack []Mount
		for _, m := range mounts {
			if m.Point == path {
				stack = append(stack, m)
			}
		}
		if len(stack) > 0 && stack[len(stack)-1].FSType != fsType {
			continue
		}
		live := s.Up && slices.Contains(s.Paths, path)
		if live && len(stack) > 0 && stack[len(stack)-1].Dev == s.Dev {
			continue
		}
		// Every lxcfs bind on top is stale here: take them all off, so
		// the container reads its own file (or the new bind below).
		for i := len(stack) - 1; i >= 0 && stack[i].FSType == fsType; i-- {
			p.Detach = append(p.Detach, path)
		}
		if live {
			p.Attach = append(p.Attach, path)
		}
	}
	return p
}

// Attached reports whether a container with these mounts reads the live
// lxcfs at every path it serves that the container wants.
func Attached(mounts []Mount, s State, want func(path string) bool) bool {
	return s.Up && Decide(mounts, s, want).Empty()
}
