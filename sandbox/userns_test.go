package sandbox

import (
	"context"
	"errors"
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
	if err := m.checkUserNS(context.Background(), "runc-userns"); err != nil {
		t.Errorf("checkUserNS(runc-userns) = %v", err)
	}
}
