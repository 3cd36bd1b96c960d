package spec

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const testPasswd = `root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
alice:x:1000:1000::/home/alice:/bin/sh
broken:x:notanumber:1::/:/bin/sh
`

const testGroup = `root:x:0:
daemon:x:1:
www-data:x:33:
alice:x:1000:alice
users:x:100:alice,bob
wheel:x:10:root,alice
video:x:44:bob
predefined:x:50000:
`

// fakeRootfs writes a rootfs with etc/passwd and etc/group.
func fakeRootfs(t *testing.T, passwd, group string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if passwd != "" {
		if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(passwd), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if group != "" {
		if err := os.WriteFile(filepath.Join(root, "etc/group"), []byte(group), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func i64v(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }

func TestResolveUser(t *testing.T) {
	root := fakeRootfs(t, testPasswd, testGroup)
	type sc = runtimeapi.LinuxContainerSecurityContext
	tests := []struct {
		name      string
		sc        *sc
		imageUser string
		uid, gid  uint32
		gids      []uint32
		errField  string
	}{
		{name: "default root", uid: 0, gid: 0, gids: []uint32{0, 10}},
		{name: "image user name", imageUser: "alice", uid: 1000, gid: 1000, gids: []uint32{10, 100, 1000}},
		{name: "image uid known", imageUser: "33", uid: 33, gid: 33, gids: []uint32{33}},
		{name: "image uid unknown", imageUser: "1002", uid: 1002, gid: 0, gids: []uint32{0}},
		{name: "image uid:gid", imageUser: "1003:1004", uid: 1003, gid: 1004, gids: []uint32{1004}},
		{name: "image name:gid", imageUser: "www-data:1004", uid: 33, gid: 1004, gids: []uint32{1004}},
		{name: "image name:group", imageUser: "alice:video", uid: 1000, gid: 44, gids: []uint32{10, 44, 100}},
		{name: "image user unknown", imageUser: "nobody2", errField: "image config User"},
		{name: "image group unknown", imageUser: "alice:nogroup", errField: "image config User"},
		{name: "run_as_user overrides image", sc: &sc{RunAsUser: i64v(1)}, imageUser: "alice", uid: 1, gid: 1, gids: []uint32{1}},
		{name: "run_as_user ignores image group", sc: &sc{RunAsUser: i64v(1000)}, imageUser: "alice:video", uid: 1000, gid: 1000, gids: []uint32{10, 100, 1000}},
		{name: "run_as_username", sc: &sc{RunAsUsername: "www-data"}, uid: 33, gid: 33, gids: []uint32{33}},
		{name: "run_as_username wins over run_as_user", sc: &sc{RunAsUsername: "alice", RunAsUser: i64v(5)}, uid: 1000, gid: 1000, gids: []uint32{10, 100, 1000}},
		{name: "run_as_username unknown", sc: &sc{RunAsUsername: "nobody2"}, errField: "linux.security_context.run_as_username"},
		{name: "run_as_group", sc: &sc{RunAsUser: i64v(1000), RunAsGroup: i64v(3000)}, uid: 1000, gid: 3000, gids: []uint32{10, 100, 3000}},
		{name: "run_as_group without a user", sc: &sc{RunAsGroup: i64v(3000)}, imageUser: "33:44", errField: "linux.security_context.run_as_group"},
		{name: "supplemental groups merge", sc: &sc{RunAsUser: i64v(1000), SupplementalGroups: []int64{5000, 100}}, uid: 1000, gid: 1000, gids: []uint32{10, 100, 1000, 5000}},
		{
			name: "supplemental groups strict", uid: 1000, gid: 1000, gids: []uint32{1000, 5000},
			sc: &sc{RunAsUser: i64v(1000), SupplementalGroups: []int64{5000}, SupplementalGroupsPolicy: runtimeapi.SupplementalGroupsPolicy_Strict},
		},
		{name: "negative uid", sc: &sc{RunAsUser: i64v(-1)}, errField: "linux.security_context.run_as_user"},
		{name: "negative supplemental", sc: &sc{SupplementalGroups: []int64{-3}}, errField: "linux.security_context.supplemental_groups"},
		{name: "unknown policy", sc: &sc{SupplementalGroupsPolicy: 7}, errField: "linux.security_context.supplemental_groups_policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uid, gid, gids, err := ResolveUser(root, tt.sc, tt.imageUser)
			if tt.errField != "" {
				if err == nil || !IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), tt.errField+":") {
					t.Fatalf("want a %s error, got %v", tt.errField, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if uid != tt.uid || gid != tt.gid || !slices.Equal(gids, tt.gids) {
				t.Errorf("got %d:%d %v, want %d:%d %v", uid, gid, gids, tt.uid, tt.gid, tt.gids)
			}
		})
	}
}

func TestResolveUserErrorMessage(t *testing.T) {
	root := fakeRootfs(t, testPasswd, testGroup)
	_, _, _, err := ResolveUser(root, &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "nobody2"}, "")
	want := `linux.security_context.run_as_username: user "nobody2" not found in /etc/passwd of the image`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestResolveUserNoEtc(t *testing.T) {
	root := t.TempDir() // a scratch image
	uid, gid, gids, err := ResolveUser(root, &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64v(65534)}, "")
	if err != nil || uid != 65534 || gid != 0 || !slices.Equal(gids, []uint32{0}) {
		t.Errorf("got %d:%d %v %v", uid, gid, gids, err)
	}
	if _, _, _, err := ResolveUser(root, nil, "someone"); err == nil {
		t.Error("a name without /etc/passwd must fail")
	}
}

// The rootfs is hostile: its /etc/passwd may be a symlink to the host's.
// Lookups must resolve inside the rootfs and never read the host file.
func TestResolveUserHostileRootfs(t *testing.T) {
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Skip("host has no /etc/passwd")
	}
	// A host-side file outside the rootfs with a user only it knows.
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "passwd"), []byte("hostonly:x:4242:4242::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "group"), []byte("hostgroup:x:4343:root\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, passwdLink, groupLink string
		user                        string
	}{
		{name: "absolute symlink to host passwd", passwdLink: "/etc/passwd", user: "root"},
		{name: "relative escape to host passwd", passwdLink: "../../../../../../../../../../etc/passwd", user: "root"},
		{name: "absolute symlink to outside file", passwdLink: filepath.Join(outside, "passwd"), user: "hostonly"},
		{name: "relative escape to outside file", passwdLink: "../../../../../../../../../.." + filepath.Join(outside, "passwd"), user: "hostonly"},
		{name: "group symlink", passwdLink: "", groupLink: filepath.Join(outside, "group"), user: "root:hostgroup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			if tt.passwdLink != "" {
				if err := os.Symlink(tt.passwdLink, filepath.Join(root, "etc/passwd")); err != nil {
					t.Fatal(err)
				}
			} else {
				os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0::/:/bin/sh\n"), 0o644)
			}
			if tt.groupLink != "" {
				if err := os.Symlink(tt.groupLink, filepath.Join(root, "etc/group")); err != nil {
					t.Fatal(err)
				}
			}
			uid, gid, _, err := ResolveUser(root, nil, tt.user)
			if err == nil {
				t.Fatalf("resolved %q to %d:%d through a symlink out of the rootfs", tt.user, uid, gid)
			}
		})
	}
	// /etc itself a symlink to the host's /etc.
	t.Run("etc dir symlink", func(t *testing.T) {
		root := t.TempDir()
		if err := os.Symlink("/etc", filepath.Join(root, "etc")); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := ResolveUser(root, nil, "root"); err == nil {
			t.Fatal("resolved root through /etc -> host /etc")
		}
	})
	// A symlink that stays inside the rootfs is followed, within it.
	t.Run("symlink inside rootfs", func(t *testing.T) {
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "etc"), 0o755)
		os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755)
		os.WriteFile(filepath.Join(root, "usr/lib/passwd"), []byte("inside:x:77:78::/:/bin/sh\n"), 0o644)
		if err := os.Symlink("/usr/lib/passwd", filepath.Join(root, "etc/passwd")); err != nil {
			t.Fatal(err)
		}
		uid, gid, _, err := ResolveUser(root, nil, "inside")
		if err != nil || uid != 77 || gid != 78 {
			t.Fatalf("got %d:%d %v", uid, gid, err)
		}
	})
	// A FIFO must not block the lookup.
	t.Run("fifo passwd", func(t *testing.T) {
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "etc"), 0o755)
		if err := mkfifo(filepath.Join(root, "etc/passwd")); err != nil {
			t.Skip(err)
		}
		if _, _, _, err := ResolveUser(root, nil, "x"); err == nil {
			t.Fatal("a FIFO passwd must fail")
		}
	})
}

func mkfifo(p string) error { return unix.Mkfifo(p, 0o644) }
