package cri

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCRIU puts a criu that prints out and exits with rc first in PATH.
func fakeCRIU(t *testing.T, out string, rc int) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho '" + out + "' >&2\nexit " + string(rune('0'+rc)) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "criu"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
}

func TestProbeCRIU(t *testing.T) {
	t.Run("not installed", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		if err := probeCRIU(context.Background()); err == nil || !strings.Contains(err.Error(), "not installed") {
			t.Fatalf("probe = %v", err)
		}
	})
	t.Run("check fails", func(t *testing.T) {
		fakeCRIU(t, "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds", 1)
		err := probeCRIU(context.Background())
		if err == nil || !strings.Contains(err.Error(), "criu check") || !strings.Contains(err.Error(), "vDSO") {
			t.Fatalf("probe = %v", err)
		}
	})
	t.Run("check passes", func(t *testing.T) {
		fakeCRIU(t, "Looks good.", 0)
		if err := probeCRIU(context.Background()); err != nil {
			t.Fatalf("probe = %v", err)
		}
	})
}

func TestCheckpointAnswers(t *testing.T) {
	ctx := context.Background()
	s := &Server{}
	for _, tt := range []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"container id missing", func() error {
			_, err := s.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{Location: "/tmp/x.tar"})
			return err
		}, codes.InvalidArgument, "container_id"},
		{"location missing", func() error {
			_, err := s.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: "c1"})
			return err
		}, codes.InvalidArgument, "location"},
		{"pod id missing", func() error {
			_, err := s.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{})
			return err
		}, codes.InvalidArgument, "pod_sandbox_id"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if st, _ := status.FromError(err); st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("err = %v, want %s naming %s", err, tt.code, tt.msg)
			}
		})
	}
	// With CRIU failing its check, the answer says so; with it working,
	// the answer is an honest Unimplemented.
	criu = criuProbe{}
	fakeCRIU(t, "vdso: Unexpected rt vDSO area bounds", 1)
	_, err := s.RestorePod(ctx, &runtimeapi.RestorePodRequest{})
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "needs CRIU") {
		t.Errorf("RestorePod with a failing criu: %v", err)
	}
	criu = criuProbe{}
	fakeCRIU(t, "Looks good.", 0)
	_, err = s.RestorePod(ctx, &runtimeapi.RestorePodRequest{})
	if st, _ := status.FromError(err); st.Code() != codes.Unimplemented {
		t.Errorf("RestorePod with a working criu: %v", err)
	}
	criu = criuProbe{}
}
