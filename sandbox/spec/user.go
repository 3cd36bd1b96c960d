package spec

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// maxIDFileSize bounds how much of a (hostile) /etc/passwd or /etc/group is read.
const maxIDFileSize = 16 << 20

// readFileInRoot reads name (an absolute path inside the rootfs) with every
// path component, symlinks included, resolved as if root were "/": a symlink
// to /etc/passwd inside the image stays inside the image. It uses openat2
// RESOLVE_IN_ROOT (Linux 5.6+); the image is treated as hostile, so there is
// no fallback that follows symlinks on the host. Returns an error satisfying
// errors.Is(err, os.ErrNotExist) when the file is missing.
func readFileInRoot(root, name string) ([]byte, error) {
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rootFd)
	var fd int
	for {
		fd, err = unix.Openat2(rootFd, strings.TrimPrefix(name, "/"), &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != unix.EINTR && err != unix.EAGAIN {
			break
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s in the image is not a regular file", name)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxIDFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxIDFileSize {
		return nil, fmt.Errorf("%s in the image is larger than %d bytes", name, maxIDFileSize)
	}
	return b, nil
}

type passwdEntry struct {
	name     string
	uid, gid uint32
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// readDB reads and splits a passwd-style file; a missing file is an empty
// database (a scratch image has none).
func readDB(rootfs, name string) ([][]string, error) {
	b, err := readFileInRoot(rootfs, name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s of the image: %w", name, err)
	}
	var rows [][]string
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(make([]byte, 64<<10), maxIDFileSize)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rows = append(rows, strings.Split(line, ":"))
	}
	return rows, s.Err()
}

func parseID(s string) (uint32, bool) {
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err == nil
}

func readPasswd(rootfs string) ([]passwdEntry, error) {
	rows, err := readDB(rootfs, "/etc/passwd")
	if err != nil {
		return nil, err
	}
	var out []passwdEntry
	for _, r := range rows {
		if len(r) < 4 {
			continue
		}
		uid, ok1 := parseID(r[2])
		gid, ok2 := parseID(r[3])
		if !ok1 || !ok2 {
			continue
		}
		out = append(out, passwdEntry{name: r[0], uid: uid, gid: gid})
	}
	return out, nil
}

func readGroup(rootfs string) ([]groupEntry, error) {
	rows, err := readDB(rootfs, "/etc/group")
	if err != nil {
		return nil, err
	}
	var out []groupEntry
	for _, r := range rows {
		if len(r) < 3 {
			continue
		}
		gid, ok := parseID(r[2])
		if !ok {
			continue
		}
		g := groupEntry{name: r[0], gid: gid}
		if len(r) > 3 && r[3] != "" {
			for _, m := range strings.Split(r[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					g.members = append(g.members, m)
				}
			}
		}
		out = append(out, g)
	}
	return out, nil
}

// ResolveUser computes the process uid, primary gid and additional gids.
//
// Who: linux.security_context.run_as_username, else run_as_user, else the
// image USER ("name", "uid", "name:group", "uid:gid", "uid:group", ...),
// else root. run_as_group overrides the primary group (also when the user
// comes from the image: peapod follows CRI-O here; containerd rejects
// run_as_group without a CRI user). The group part of the image USER is used
// only when the user also comes from the image.
//
// A user name must exist in the image's /etc/passwd; a numeric uid need not
// (its gid is then the passwd entry's, or 0). A group name must exist in the
// image's /etc/group.
//
// Additional gids: with SupplementalGroupsPolicy Merge (the default), the
// groups of /etc/group that list the user as a member, plus the primary gid
// (as containerd does), plus supplemental_groups; with Strict, the primary
// gid and supplemental_groups only. Sorted, without duplicates.
func ResolveUser(rootfs string, sc *runtimeapi.LinuxContainerSecurityContext, imageUser string) (uid, gid uint32, extraGids []uint32, err error) {
	const f = "linux.security_context."
	var (
		userStr, groupStr string
		userField         = "image config User"
		groupField        = "image config User"
	)
	switch {
	case sc.GetRunAsUsername() != "":
		userStr, userField = sc.GetRunAsUsername(), f+"run_as_username"
	case sc.GetRunAsUser() != nil:
		v := sc.GetRunAsUser().GetValue()
		if v < 0 || v > math.MaxUint32 {
			return 0, 0, nil, fieldErr(f+"run_as_user", "uid %d out of range", v)
		}
		userStr, userField = strconv.FormatInt(v, 10), f+"run_as_user"
	case imageUser != "":
		userStr, groupStr, _ = strings.Cut(imageUser, ":")
	default:
		userStr = "0"
	}
	if g := sc.GetRunAsGroup(); g != nil {
		// As containerd and CRI-O: a group alone would silently pair with
		// the image's user, which the pod spec cannot express.
		if sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
			return 0, 0, nil, fieldErr(f+"run_as_group", "is set without run_as_user or run_as_username")
		}
		v := g.GetValue()
		if v < 0 || v > math.MaxUint32 {
			return 0, 0, nil, fieldErr(f+"run_as_group", "gid %d out of range", v)
		}
		groupStr, groupField = strconv.FormatInt(v, 10), f+"run_as_group"
	}
	if userStr == "" {
		userStr = "0"
	}

	var passwd []passwdEntry
	var groups []groupEntry
	passwdLoaded, groupLoaded := false, false
	loadPasswd := func() error {
		if !passwdLoaded {
			passwdLoaded = true
			passwd, err = readPasswd(rootfs)
		}
		return err
	}
	loadGroup := func() error {
		if !groupLoaded {
			groupLoaded = true
			groups, err = readGroup(rootfs)
		}
		return err
	}

	userName := ""
	if n, ok := parseID(userStr); ok {
		uid = n
		if err := loadPasswd(); err != nil {
			return 0, 0, nil, err
		}
		for _, p := range passwd {
			if p.uid == uid {
				gid, userName = p.gid, p.name
				break
			}
		}
	} else {
		if err := loadPasswd(); err != nil {
			return 0, 0, nil, err
		}
		found := false
		for _, p := range passwd {
			if p.name == userStr {
				uid, gid, userName, found = p.uid, p.gid, p.name, true
				break
			}
		}
		if !found {
			return 0, 0, nil, fieldErr(userField, "user %q not found in /etc/passwd of the image", userStr)
		}
	}

	if groupStr != "" {
		if n, ok := parseID(groupStr); ok {
			gid = n
		} else {
			if err := loadGroup(); err != nil {
				return 0, 0, nil, err
			}
			found := false
			for _, g := range groups {
				if g.name == groupStr {
					gid, found = g.gid, true
					break
				}
			}
			if !found {
				return 0, 0, nil, fieldErr(groupField, "group %q not found in /etc/group of the image", groupStr)
			}
		}
	}

	gids := []uint32{gid}
	switch sc.GetSupplementalGroupsPolicy() {
	case runtimeapi.SupplementalGroupsPolicy_Merge:
		if userName != "" {
			if err := loadGroup(); err != nil {
				return 0, 0, nil, err
			}
			for _, g := range groups {
				if g.name != userName && slices.Contains(g.members, userName) {
					gids = append(gids, g.gid)
				}
			}
		}
	case runtimeapi.SupplementalGroupsPolicy_Strict:
	default:
		return 0, 0, nil, fieldErr(f+"supplemental_groups_policy", "unknown policy %d", sc.GetSupplementalGroupsPolicy())
	}
	for _, g := range sc.GetSupplementalGroups() {
		if g < 0 || g > math.MaxUint32 {
			return 0, 0, nil, fieldErr(f+"supplemental_groups", "gid %d out of range", g)
		}
		gids = append(gids, uint32(g))
	}
	slices.Sort(gids)
	return uid, gid, slices.Compact(gids), nil
}
