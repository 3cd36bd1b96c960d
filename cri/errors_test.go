package cri

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"peapod/sandbox"
)

func TestToStatus(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("sandbox x: %w", sandbox.ErrNotFound), codes.NotFound},
		{fmt.Errorf("config.metadata: %w", sandbox.ErrInvalid), codes.InvalidArgument},
		{fmt.Errorf("runc: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("persist container x: %w", &fs.PathError{Op: "write", Path: "/var/lib/peapod/peapod.db", Err: syscall.ENOSPC}), codes.ResourceExhausted},
		{fmt.Errorf("pull: %w", &fs.PathError{Op: "write", Path: "/blob", Err: syscall.EDQUOT}), codes.ResourceExhausted},
		{errors.New("something else"), codes.Unknown},
		{status.Error(codes.Aborted, "as is"), codes.Aborted},
	} {
		got := toStatus(tt.err)
		if status.Code(got) != tt.want {
			t.Errorf("toStatus(%v) = %v, want %v", tt.err, status.Code(got), tt.want)
		}
		if st, _ := status.FromError(got); st.Message() != tt.err.Error() && tt.want != codes.Aborted {
			t.Errorf("toStatus(%v) message %q, want the error's text", tt.err, st.Message())
		}
	}
}
