package loop

import (
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCheckID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		code codes.Code
	}{
		{"pvc-0f6c7a8e-1b2c-4d5e-8f90-123456789abc", codes.OK},
		{"a", codes.OK},
		{"vol_1.v2", codes.OK},
		{strings.Repeat("a", 128), codes.OK},
		{strings.Repeat("a", 129), codes.InvalidArgument},
		{"", codes.InvalidArgument},
		{".", codes.InvalidArgument},
		{"..", codes.InvalidArgument},
		{".hidden", codes.InvalidArgument},
		{"../etc/passwd", codes.InvalidArgument},
		{"a/b", codes.InvalidArgument},
		{"/abs", codes.InvalidArgument},
		{"-flag", codes.InvalidArgument},
		{"a\x00b", codes.InvalidArgument},
		{"a b", codes.InvalidArgument},
		{"a\n", codes.InvalidArgument},
	} {
		err := checkID("volume_id", tc.id)
		if got := status.Code(err); got != tc.code {
			t.Errorf("checkID(%q) = %v, want %v", tc.id, err, tc.code)
		}
		if err != nil && !strings.Contains(err.Error(), "volume_id") {
			t.Errorf("checkID(%q): %v does not name the field", tc.id, err)
		}
	}
}

func TestVolumeID(t *testing.T) {
	for _, name := range []string{"pvc-1", "sanity-max-attach-limit-vol+1-X", "../../etc/passwd", "a/b", strings.Repeat("x", 129), ".", "名前"} {
		id := volumeID(name)
		if err := checkID("volume_id", id); err != nil {
			t.Errorf("volumeID(%q) = %q: %v", name, id, err)
		}
		if volumeID(name) != id {
			t.Errorf("volumeID(%q) not stable", name)
		}
	}
	if volumeID("pvc-1") != "pvc-1" {
		t.Error("a valid name is not its own id")
	}
	if volumeID("a+b") == volumeID("a+c") {
		t.Error("hashed ids collide")
	}
}

func TestCheckPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pv/mount", true},
		{"/a", true},
		{"", false},
		{"/", false},
		{"relative/path", false},
		{"some/path", false},
		{"/a/../b", false},
		{"/a/./b", false},
		{"/a//b", false},
		{"/a/", false},
		{"../../etc", false},
	} {
		err := checkPath("target_path", tc.path)
		if (err == nil) != tc.ok {
			t.Errorf("checkPath(%q) = %v, want ok=%t", tc.path, err, tc.ok)
		}
		if err != nil && (status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "target_path")) {
			t.Errorf("checkPath(%q) = %v, want InvalidArgument naming target_path", tc.path, err)
		}
	}
}

func TestCapacity(t *testing.T) {
	for _, tc := range []struct {
		name     string
		req, lim int64
		want     int64
		code     codes.Code
	}{
		{"no range: default", 0, 0, DefaultCapacity, codes.OK},
		{"exact MiB", 64 * MiB, 0, 64 * MiB, codes.OK},
		{"rounded up to a MiB", 64*MiB + 1, 0, 65 * MiB, codes.OK},
		{"below the minimum", 1, 0, MinCapacity, codes.OK},
		{"limit only, below default", 0, 100 * MiB, 100 * MiB, codes.OK},
		{"limit only, above default", 0, 10 * GiB, DefaultCapacity, codes.OK},
		{"required = limit, not MiB aligned", 20*MiB + 512, 20*MiB + 512, 20*MiB + 512, codes.OK},
		{"required = limit, odd bytes", 20*MiB + 1, 20*MiB + 1, 0, codes.OutOfRange},
		{"limit below minimum", 0, MinCapacity - 1, 0, codes.OutOfRange},
		{"required above limit", 2 * GiB, GiB, 0, codes.InvalidArgument},
		{"negative required", -1, 0, 0, codes.InvalidArgument},
		{"negative limit", 0, -1, 0, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := capacity(&csi.CapacityRange{RequiredBytes: tc.req, LimitBytes: tc.lim})
			if status.Code(err) != tc.code {
				t.Fatalf("capacity(%d, %d) = %d, %v; want code %v", tc.req, tc.lim, got, err, tc.code)
			}
			if err == nil && got != tc.want {
				t.Fatalf("capacity(%d, %d) = %d, want %d", tc.req, tc.lim, got, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), "capacity_range") {
				t.Fatalf("%v does not name capacity_range", err)
			}
			if err == nil && got%512 != 0 {
				t.Fatalf("%d is not a whole number of sectors", got)
			}
		})
	}
	if got, err := capacity(nil); err != nil || got != DefaultCapacity {
		t.Fatalf("capacity(nil) = %d, %v", got, err)
	}
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode, fs string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func TestCheckCapability(t *testing.T) {
	block := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
	noType := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
	for _, tc := range []struct {
		name string
		c    *csi.VolumeCapability
		ok   bool
	}{
		{"rwo", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, ""), true},
		{"rwo ext4", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "ext4"), true},
		{"rwop", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, ""), true},
		{"single node multi writer", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER, ""), true},
		{"single node reader", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, ""), true},
		{"xfs", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "xfs"), false},
		{"rwx", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, ""), false},
		{"rox", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, ""), false},
		{"no mode", mountCap(csi.VolumeCapability_AccessMode_UNKNOWN, ""), false},
		{"block", block, false},
		{"no access type", noType, false},
		{"nil", nil, false},
	} {
		if why := checkCapability(tc.c); (why == "") != tc.ok {
			t.Errorf("%s: checkCapability = %q, want ok=%t", tc.name, why, tc.ok)
		}
	}
}

func TestMountOptions(t *testing.T) {
	flags, data, err := mountOptions([]string{"noatime", "nosuid", "errors=remount-ro", "discard"})
	if err != nil || data != "errors=remount-ro,discard" || flags == 0 {
		t.Fatalf("got %x %q %v", flags, data, err)
	}
	for _, bad := range []string{"", "a,b", "ro nodev"} {
		if _, _, err := mountOptions([]string{bad}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "mount_flags[0]") {
			t.Errorf("mountOptions(%q) = %v, want InvalidArgument naming mount_flags[0]", bad, err)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"unix:///run/csi/csi.sock", "/run/csi/csi.sock"},
		{"unix:/run/csi.sock", "/run/csi.sock"},
		{"/run/csi.sock", "/run/csi.sock"},
		{"unix://run/csi.sock", ""},
		{"tcp://127.0.0.1:10000", ""},
		{"unix:///run/../etc/csi.sock", ""},
		{"", ""},
	} {
		got, err := ParseEndpoint(tc.in)
		if (err == nil) != (tc.want != "") || got != tc.want {
			t.Errorf("ParseEndpoint(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
