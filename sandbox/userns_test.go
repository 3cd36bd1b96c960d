package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"peapod/oci"
)

// featureRuntime is an OCIRuntime that reports features (as *oci.Runtime).
type featureRuntime struct {
	OCIRuntime
	f oci.Features
}

func (r featureRuntime) Features(context.Context) oci.Features { return r.f }

func TestHandlerUserNamespaces(t *testing.T) {
	m := &Manager{o: Options{DefaultRuntime: "runc", Runtimes: map[string]OCIRuntime{
		"runc":        featureRuntime{f: oci.Features{Why: "/usr/sbin/runc reports no idmapped mounts (mountExtensions.idmap)"}},
		"runc-userns": featureRuntime{f: oci.Features{UserNamespaces: true}},
		"plain":       nil, // a runtime that cannot say
	}}}
	for _, tt := range []struct {
		handler string
		want    bool
		why     string
	}{
		{"runc-userns", true, ""},
		{"runc", false, "idmapped mounts"},
		{"", false, "idmapped mounts"}, // the default
		{"plain", false, "does not report"},
		{"missing", false, "not configured"},
	} {
		ok, why := m.HandlerUserNamespaces(context.Background(), tt.handler)
		if ok != tt.want || !strings.Contains(why, tt.why) {
			t.Errorf("%q: got %v %q, want %v and a reason with %q", tt.handler, ok, why, tt.want, tt.why)
		}
	}
	err := m.checkUserNS(context.Background(), "runc")
	if !errors.Is(err, ErrFailedPrecondion) || !strings.Contains(err.Error(), "userns_options") || !strings.Contains(err.Error(), `"runc"`) {
		t.Errorf("checkUserNS(runc) = %v, want a failed precondition naming the field and the handler", err)
	}
	m.o.State = searchable(t)
	if err := m.checkUserNS(context.Background(), "runc-userns"); err != nil {
		t.Errorf("checkUserNS(runc-userns) = %v", err)
	}
	// A state dir the pod's root cannot reach: said before any work.
	closed := filepath.Join(m.o.State, "closed")
	os.Mkdir(closed, 0o700)
	m.o.State = filepath.Join(closed, "state")
	os.Mkdir(m.o.State, 0o711)
	err = m.checkUserNS(context.Background(), "runc-userns")
	if !errors.Is(err, ErrFailedPrecondion) || !strings.Contains(err.Error(), closed+" (mode 0700) is not searchable") {
		t.Errorf("checkUserNS with a 0700 parent = %v", err)
	}
}

// searchable is a temp dir that every user can search down to.
func searchable(t *testing.T) string {
	dir := t.TempDir()
	for p := dir; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o711)
	}
	return dir
}
