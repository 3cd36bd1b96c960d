package cri

import (
	"context"
	"errors"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"peapod/image"
	"peapod/oci"
	"peapod/sandbox"
)

// toStatus maps a domain error onto the gRPC code the CRI caller expects.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, sandbox.ErrNotFound), errors.Is(err, image.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, sandbox.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, sandbox.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, sandbox.ErrFailedPrecondion), errors.Is(err, image.ErrInUse):
		code = codes.FailedPrecondition
	case errors.Is(err, sandbox.ErrUnimplemented):
		code = codes.Unimplemented
	case errors.Is(err, oci.ErrExecTimeout), errors.Is(err, context.DeadlineExceeded):
		// The kubelet's CRI client turns DeadlineExceeded from ExecSync
		// into a timed-out probe.
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		// A full disk (or quota) under root or state: the caller may retry
		// once space is freed; gRPC's code for an exhausted resource.
		code = codes.ResourceExhausted
	}
	return status.Error(code, err.Error())
}

func invalid(msg string) error { return status.Error(codes.InvalidArgument, msg) }
