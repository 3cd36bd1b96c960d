package spec

import (
	"errors"
	"fmt"
)

// FieldError is an error caused by a CRI request field. Field is the CRI
// (protobuf) path of the field, e.g. "linux.security_context.capabilities.add_capabilities".
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// IsInvalidArgument reports whether err was caused by the CRI input (and so
// deserves codes.InvalidArgument) rather than by the host.
func IsInvalidArgument(err error) bool {
	var fe *FieldError
	return errors.As(err, &fe)
}

// ErrUnsupported marks a FieldError for a CRI feature peapod does not
// implement (the caller answers Unimplemented, not InvalidArgument: the
// request is valid, peapod cannot do it).
var ErrUnsupported = errors.New("not supported by peapod")

func unsupported(field, what string) error {
	return &FieldError{Field: field, Err: fmt.Errorf("%s: %w", what, ErrUnsupported)}
}

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Warnings are non-fatal adjustments made while building a spec (an
// oom_score_adj raised to peapod's own, an AppArmor profile ignored on a host
// without AppArmor). The caller logs them.
type Warnings []string

func (w *Warnings) add(format string, args ...any) {
	*w = append(*w, fmt.Sprintf(format, args...))
}
