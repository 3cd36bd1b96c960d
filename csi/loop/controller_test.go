package loop

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The controller calls that touch only files run without root: no loop
// device is attached here.

func newTestDriver(t *testing.T) *Driver {
	t.Helper()
	d, err := New(Options{NodeID: "node-a", Root: filepath.Join(t.TempDir(), "disks")})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func createReq(name string, req, lim int64) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: req, LimitBytes: lim},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "")},
	}
}

func TestCreateVolume(t *testing.T) {
	d := newTestDriver(t)
	ctx := context.Background()
	r, err := d.CreateVolume(ctx, createReq("pvc-1", 20*MiB, 0))
	if err != nil {
		t.Fatal(err)
	}
	if r.Volume.VolumeId != "pvc-1" || r.Volume.CapacityBytes != 20*MiB {
		t.Fatalf("%v", r.Volume)
	}
	if seg := r.Volume.AccessibleTopology[0].Segments[TopologyKey]; seg != "node-a" {
		t.Fatalf("topology %q", seg)
	}
	st, err := os.Stat(filepath.Join(d.opts.Root, "pvc-1.img"))
	if err != nil || st.Size() != 20*MiB {
		t.Fatalf("file: %v %v", st, err)
	}

	for _, tc := range []struct {
		name string
		req  *csi.CreateVolumeRequest
		code codes.Code
	}{
		{"same name, same size", createReq("pvc-1", 20*MiB, 0), codes.OK},
		{"same name, smaller request fits", createReq("pvc-1", 10*MiB, 0), codes.OK},
		{"same name, larger", createReq("pvc-1", 40*MiB, 0), codes.AlreadyExists},
		{"same name, limit below size", createReq("pvc-1", 0, 18*MiB), codes.AlreadyExists},
		{"traversal name is hashed", createReq("../x", 0, 0), codes.OK},
		{"no name", createReq("", 0, 0), codes.InvalidArgument},
		{"bad range", createReq("pvc-2", 2*GiB, GiB), codes.InvalidArgument},
		{"unsatisfiable limit", createReq("pvc-2", 0, MiB), codes.OutOfRange},
		{"no capabilities", &csi.CreateVolumeRequest{Name: "pvc-2"}, codes.InvalidArgument},
		{"other node only", func() *csi.CreateVolumeRequest {
			r := createReq("pvc-2", 0, 0)
			r.AccessibilityRequirements = &csi.TopologyRequirement{Requisite: []*csi.Topology{{Segments: map[string]string{TopologyKey: "node-b"}}}}
			return r
		}(), codes.ResourceExhausted},
		{"clone", func() *csi.CreateVolumeRequest {
			r := createReq("pvc-2", 0, 0)
			r.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: "pvc-1"}}}
			return r
		}(), codes.InvalidArgument},
	} {
		if _, err := d.CreateVolume(ctx, tc.req); status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(d.opts.Root)); len(ents) != 1 {
		t.Fatalf("a file escaped root: %v", ents)
	}
	if _, err := os.Stat(d.imagePath(volumeID("../x"))); err != nil {
		t.Fatalf("hashed volume: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.opts.Root, "pvc-2.img")); !os.IsNotExist(err) {
		t.Fatalf("a refused create left a file: %v", err)
	}
}

func TestListExpandDelete(t *testing.T) {
	d := newTestDriver(t)
	ctx := context.Background()
	for _, n := range []string{"c", "a", "b"} {
		if _, err := d.CreateVolume(ctx, createReq(n, 16*MiB, 0)); err != nil {
			t.Fatal(err)
		}
	}
	// Junk in root is not a volume.
	os.WriteFile(filepath.Join(d.opts.Root, ".a.img.tmp"), nil, 0o600)
	os.WriteFile(filepath.Join(d.opts.Root, "notes.txt"), nil, 0o600)

	var got []string
	tok := ""
	for {
		r, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 2, StartingToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range r.Entries {
			got = append(got, e.Volume.VolumeId)
		}
		if tok = r.NextToken; tok == "" {
			break
		}
	}
	if len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("listed %v", got)
	}
	if _, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: "invalid-token"}); status.Code(err) != codes.Aborted {
		t.Fatalf("bad token: %v", err)
	}

	r, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "a", CapacityRange: &csi.CapacityRange{RequiredBytes: 32 * MiB}})
	if err != nil || r.CapacityBytes != 32*MiB || !r.NodeExpansionRequired {
		t.Fatalf("expand: %v %v", r, err)
	}
	r, err = d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "a", CapacityRange: &csi.CapacityRange{RequiredBytes: 16 * MiB}})
	if err != nil || r.CapacityBytes != 32*MiB {
		t.Fatalf("shrink is a no-op: %v %v", r, err)
	}
	if _, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "zz", CapacityRange: &csi.CapacityRange{RequiredBytes: MiB}}); status.Code(err) != codes.NotFound {
		t.Fatalf("expand missing: %v", err)
	}
	if _, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "a/../b", CapacityRange: &csi.CapacityRange{RequiredBytes: MiB}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("expand bad id: %v", err)
	}

	for _, id := range []string{"a", "a", "never", "../../etc/passwd"} {
		if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Fatalf("delete %q: %v", id, err)
		}
	}
	if _, err := os.Stat(filepath.Join(d.opts.Root, "notes.txt")); err != nil {
		t.Fatal("delete touched a file that is no volume")
	}
	if _, err := d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "a",
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "")}}); status.Code(err) != codes.NotFound {
		t.Fatalf("validate deleted: %v", err)
	}
	v, err := d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "b",
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "")}})
	if err != nil || v.Confirmed != nil || v.Message == "" {
		t.Fatalf("validate rwx: %v %v", v, err)
	}
}

func TestNodeRequestsValidated(t *testing.T) {
	d := newTestDriver(t)
	ctx := context.Background()
	c := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "")
	check := func(name string, err error, field string) {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
		if err != nil && !contains(err.Error(), field) {
			t.Errorf("%s: %v does not name %s", name, err, field)
		}
	}
	_, err := d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: "staging", VolumeCapability: c})
	check("stage relative", err, "staging_target_path")
	_, err = d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "../v", StagingTargetPath: "/s", VolumeCapability: c})
	check("stage bad id", err, "volume_id")
	_, err = d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: "/s"})
	check("stage no capability", err, "volume_capability")
	_, err = d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "v", StagingTargetPath: "/s", TargetPath: "/t/../etc", VolumeCapability: c})
	check("publish unclean", err, "target_path")
	_, err = d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "v", TargetPath: "/t", VolumeCapability: c})
	check("publish no staging", err, "staging_target_path")
	_, err = d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: "t"})
	check("unpublish relative", err, "target_path")
	_, err = d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "v", StagingTargetPath: "/"})
	check("unstage root", err, "staging_target_path")
	_, err = d.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: "v", VolumeCapability: c})
	check("publish no node", err, "node_id")
	if _, err := d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: "/x"}); status.Code(err) != codes.NotFound {
		t.Errorf("stats of a missing volume: %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
