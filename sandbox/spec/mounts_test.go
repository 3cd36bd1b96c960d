package spec

import (
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func dests(ms []specs.Mount) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Destination)
	}
	return out
}

func findMount(ms []specs.Mount, dst string) *specs.Mount {
	for i := range ms {
		if ms[i].Destination == dst {
			return &ms[i]
		}
	}
	return nil
}

func TestBindMount(t *testing.T) {
	private := runtimeapi.MountPropagation_PROPAGATION_PRIVATE
	iv := &runtimeapi.ImageSpec{Image: "sha256:" + strings.Repeat("a", 64)}
	tests := []struct {
		name     string
		m        *runtimeapi.Mount
		opts     []string
		rootProp string
		errField string
		imageSrc string // the caller's mounted image volume for mounts[0]
	}{
		{name: "rw private", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/h"}, opts: []string{"rbind", "rprivate", "rw"}},
		{name: "ro", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/h", Readonly: true}, opts: []string{"rbind", "rprivate", "ro"}},
		{name: "rro", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/h", Readonly: true, RecursiveReadOnly: true, Propagation: private}, opts: []string{"rbind", "rprivate", "rro"}},
		{name: "rro needs ro", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/h", RecursiveReadOnly: true}, errField: "mounts[0].recursive_read_only"},
		{name: "rro needs private", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/h", Readonly: true, RecursiveReadOnly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}, errField: "mounts[0].recursive_read_only"},
		{name: "host to container", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/h", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}, opts: []string{"rbind", "rslave", "rw"}, rootProp: "rslave"},
		{name: "bidirectional", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/h", Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL}, opts: []string{"rbind", "rshared", "rw"}, rootProp: "rshared"},
		{name: "selinux relabel ignored", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/h", SelinuxRelabel: true}, opts: []string{"rbind", "rprivate", "rw"}},
		{name: "relative container path", m: &runtimeapi.Mount{ContainerPath: "data", HostPath: "/h"}, errField: "mounts[0].container_path"},
		{name: "no host path", m: &runtimeapi.Mount{ContainerPath: "/data"}, errField: "mounts[0].host_path"},
		{name: "image volume", m: &runtimeapi.Mount{ContainerPath: "/data", Image: iv, Readonly: true}, imageSrc: "/iv/root", opts: []string{"rbind", "rprivate", "ro"}},
		{name: "image volume rro", m: &runtimeapi.Mount{ContainerPath: "/data", Image: iv, Readonly: true, RecursiveReadOnly: true}, imageSrc: "/iv/root", opts: []string{"rbind", "rprivate", "rro"}},
		{name: "image volume sub path", m: &runtimeapi.Mount{ContainerPath: "/data", Image: iv, Readonly: true, ImageSubPath: "etc"}, imageSrc: "/iv/root/etc", opts: []string{"rbind", "rprivate", "ro"}},
		{name: "image volume not readonly", m: &runtimeapi.Mount{ContainerPath: "/data", Image: iv}, imageSrc: "/iv/root", errField: "mounts[0].readonly"},
		{name: "image volume with host path", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/h", Image: iv, Readonly: true}, imageSrc: "/iv/root", errField: "mounts[0].host_path"},
		{name: "image volume relative path", m: &runtimeapi.Mount{ContainerPath: "data", Image: iv, Readonly: true}, imageSrc: "/iv/root", errField: "mounts[0].container_path"},
		{name: "image sub path without image", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/h", ImageSubPath: "etc"}, errField: "mounts[0].image_sub_path"},
		{name: "empty image spec is a host mount", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/h", Image: &runtimeapi.ImageSpec{}}, opts: []string{"rbind", "rprivate", "rw"}},
		{name: "bad propagation", m: &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/h", Propagation: 9}, errField: "mounts[0].propagation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var vols map[int]string
			if tt.imageSrc != "" {
				vols = map[int]string{0: tt.imageSrc}
			}
			got, rp, err := containerMounts([]*runtimeapi.Mount{tt.m}, vols, nil, false)
			if tt.errField != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.errField+":") {
					t.Fatalf("want %s error, got %v", tt.errField, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := findMount(got, "/data")
			src := "/h"
			if tt.imageSrc != "" {
				src = tt.imageSrc
			}
			if m == nil || m.Type != "bind" || m.Source != src || !slices.Equal(m.Options, tt.opts) {
				t.Fatalf("mount %+v, want options %v", m, tt.opts)
			}
			if rp != tt.rootProp {
				t.Errorf("rootfs propagation %q, want %q", rp, tt.rootProp)
			}
		})
	}
	t.Run("image volume the caller did not mount", func(t *testing.T) {
		// Not the request's fault: not InvalidArgument.
		_, _, err := containerMounts([]*runtimeapi.Mount{{ContainerPath: "/data", Image: iv, Readonly: true}}, nil, nil, false)
		if err == nil || IsInvalidArgument(err) {
			t.Fatalf("err = %v, want an internal error", err)
		}
	})
}

func TestContainerMounts(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		got, _, err := containerMounts(nil, nil, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"/proc", "/dev", "/sys", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys/fs/cgroup"}
		if !slices.Equal(dests(got), want) {
			t.Errorf("got %v, want %v", dests(got), want)
		}
		if m := findMount(got, "/sys"); !slices.Contains(m.Options, "ro") {
			t.Errorf("sysfs %v", m.Options)
		}
		if m := findMount(got, "/sys/fs/cgroup"); !slices.Contains(m.Options, "ro") {
			t.Errorf("cgroup %v", m.Options)
		}
	})
	t.Run("privileged sysfs and cgroup rw", func(t *testing.T) {
		got, _, _ := containerMounts(nil, nil, nil, true)
		for _, d := range []string{"/sys", "/sys/fs/cgroup"} {
			if m := findMount(got, d); !slices.Contains(m.Options, "rw") || slices.Contains(m.Options, "ro") {
				t.Errorf("%s %v", d, m.Options)
			}
		}
	})
	t.Run("sandbox files, order, overrides", func(t *testing.T) {
		cri := []*runtimeapi.Mount{
			{ContainerPath: "/var/lib/app/cache", HostPath: "/h/cache"},
			{ContainerPath: "/var/lib/app", HostPath: "/h/app"},
			{ContainerPath: "/etc/hosts/", HostPath: "/kubelet/etc-hosts"},
			{ContainerPath: "/sys/fs/cgroup", HostPath: "/sys/fs/cgroup", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
			{ContainerPath: "/x", HostPath: "/h/x", Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
		}
		files := []sandboxFile{
			{src: "/sb/hostname", dst: "/etc/hostname", ro: true},
			{src: "/sb/hosts", dst: "/etc/hosts"},
			{src: "/sb/resolv.conf", dst: "/etc/resolv.conf"},
			{src: "/sb/shm", dst: "/dev/shm"},
			{src: "", dst: "/etc/skipped"},
		}
		got, rp, err := containerMounts(cri, nil, files, false)
		if err != nil {
			t.Fatal(err)
		}
		if rp != "rshared" {
			t.Errorf("rootfs propagation %q, want rshared (beats rslave)", rp)
		}
		// Parents before children everywhere.
		for i, m := range got {
			for _, later := range got[i+1:] {
				if strings.HasPrefix(m.Destination, strings.TrimSuffix(later.Destination, "/")+"/") {
					t.Errorf("%s mounted before its parent %s", m.Destination, later.Destination)
				}
			}
		}
		if m := findMount(got, "/etc/hosts/"); m == nil || m.Source != "/kubelet/etc-hosts" {
			t.Errorf("CRI /etc/hosts mount lost: %v", dests(got))
		}
		if findMount(got, "/etc/hosts") != nil {
			t.Error("sandbox hosts file must yield to the CRI mount")
		}
		if m := findMount(got, "/etc/hostname"); m == nil || !slices.Equal(m.Options, []string{"rbind", "rprivate", "ro"}) {
			t.Errorf("hostname mount %+v", m)
		}
		if m := findMount(got, "/dev/shm"); m == nil || m.Type != "bind" || m.Source != "/sb/shm" || !slices.Contains(m.Options, "rw") {
			t.Errorf("shm mount %+v", m)
		}
		n := 0
		for _, m := range got {
			if m.Destination == "/sys/fs/cgroup" {
				n++
				if m.Type != "bind" {
					t.Error("default cgroup mount not replaced by the CRI one")
				}
			}
		}
		if n != 1 {
			t.Errorf("%d /sys/fs/cgroup mounts", n)
		}
		if findMount(got, "/etc/skipped") != nil {
			t.Error("empty sandbox file path must be skipped")
		}
		if i, j := slices.Index(dests(got), "/var/lib/app"), slices.Index(dests(got), "/var/lib/app/cache"); i > j {
			t.Errorf("parent after child: %v", dests(got))
		}
	})
	t.Run("idmapped mounts in a pod with a user namespace", func(t *testing.T) {
		iv := &runtimeapi.ImageSpec{Image: "img"}
		cri := []*runtimeapi.Mount{
			{ContainerPath: "/vol", HostPath: "/h/vol", UidMappings: criMapping, GidMappings: criMapping},
			{ContainerPath: "/plain", HostPath: "/h/plain"},
			{ContainerPath: "/img", Image: iv, Readonly: true, UidMappings: criMapping, GidMappings: criMapping},
		}
		files := []sandboxFile{{src: "/sb/hosts", dst: "/etc/hosts", idmap: true}, {src: "/sb/shm", dst: "/dev/shm"}}
		got, _, err := containerMountsUserNS(cri, map[int]string{2: "/images/img"}, files, false, podUserNS)
		if err != nil {
			t.Fatal(err)
		}
		want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 100000}}
		for _, tt := range []struct {
			dst, opt string
			mapped   bool
		}{{"/vol", "ridmap", true}, {"/etc/hosts", "idmap", true}, {"/plain", "", false}, {"/img", "", false}, {"/dev/shm", "", false}} {
			m := findMount(got, tt.dst)
			if m == nil {
				t.Fatalf("no %s mount: %v", tt.dst, dests(got))
			}
			if mapped := slices.Equal(m.UIDMappings, want) && slices.Equal(m.GIDMappings, want); mapped != tt.mapped {
				t.Errorf("%s: idmapped = %v, want %v (%+v)", tt.dst, mapped, tt.mapped, m)
			}
			if tt.opt != "" && !slices.Contains(m.Options, tt.opt) {
				t.Errorf("%s: options %v lack %s", tt.dst, m.Options, tt.opt)
			}
		}
		// Mappings without a user namespace, or only half of them: refused.
		if _, _, err := containerMountsUserNS(cri[:1], nil, nil, false, UserNS{}); err == nil || !strings.HasPrefix(err.Error(), "mounts[0].uidMappings:") {
			t.Errorf("idmapped mount without a user namespace: %v", err)
		}
		half := []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: "/h/vol", UidMappings: criMapping}}
		if _, _, err := containerMountsUserNS(half, nil, nil, false, podUserNS); err == nil {
			t.Error("uid mappings without gid mappings must fail")
		}
		// Without a user namespace, sandbox files marked idmap are plain.
		got, _, _ = containerMounts(nil, nil, files, false)
		if m := findMount(got, "/etc/hosts"); m == nil || m.UIDMappings != nil || slices.Contains(m.Options, "idmap") {
			t.Errorf("hosts without a user namespace: %+v", m)
		}
	})
	t.Run("supplied /dev drops defaults below it", func(t *testing.T) {
		got, _, _ := containerMounts([]*runtimeapi.Mount{{ContainerPath: "/dev", HostPath: "/dev"}}, nil, []sandboxFile{{src: "/sb/shm", dst: "/dev/shm"}}, false)
		for _, m := range got {
			if strings.HasPrefix(m.Destination, "/dev/") && m.Type != "bind" {
				t.Errorf("default %s kept under a supplied /dev", m.Destination)
			}
		}
		if m := findMount(got, "/dev"); m == nil || m.Type != "bind" {
			t.Error("/dev not the CRI one")
		}
	})
}
