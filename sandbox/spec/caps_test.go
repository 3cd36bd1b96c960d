package spec

import (
	"slices"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCapabilities(t *testing.T) {
	without := func(set []string, drop ...string) []string {
		return slices.DeleteFunc(slices.Clone(set), func(s string) bool { return slices.Contains(drop, s) })
	}
	tests := []struct {
		name       string
		c          *runtimeapi.Capability
		privileged bool
		hostCaps   []string
		want       []string
		ambient    []string
		errField   string
		warn       bool
	}{
		{name: "default", want: DefaultCapabilities},
		{name: "add without prefix", c: &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}}, want: append(slices.Clone(DefaultCapabilities), "CAP_NET_ADMIN")},
		{name: "add with prefix, lower case, twice", c: &runtimeapi.Capability{AddCapabilities: []string{"cap_sys_admin", "SYS_ADMIN"}}, want: append(slices.Clone(DefaultCapabilities), "CAP_SYS_ADMIN")},
		{name: "add existing is no-op", c: &runtimeapi.Capability{AddCapabilities: []string{"CHOWN"}}, want: DefaultCapabilities},
		{name: "drop", c: &runtimeapi.Capability{DropCapabilities: []string{"NET_RAW", "CAP_MKNOD"}}, want: without(DefaultCapabilities, "CAP_NET_RAW", "CAP_MKNOD")},
		{name: "drop ALL", c: &runtimeapi.Capability{DropCapabilities: []string{"ALL"}}, want: []string{}},
		{name: "drop ALL add one", c: &runtimeapi.Capability{DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"NET_BIND_SERVICE"}}, want: []string{"CAP_NET_BIND_SERVICE"}},
		{name: "add ALL", c: &runtimeapi.Capability{AddCapabilities: []string{"all"}}, want: allCaps},
		{name: "add ALL drop one", c: &runtimeapi.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"SYS_ADMIN"}}, want: without(allCaps, "CAP_SYS_ADMIN")},
		{name: "privileged", privileged: true, want: allCaps},
		{name: "privileged limited to host caps", privileged: true, hostCaps: without(allCaps, "CAP_SYS_RESOURCE"), want: without(allCaps, "CAP_SYS_RESOURCE")},
		{name: "add ALL limited to host caps", c: &runtimeapi.Capability{AddCapabilities: []string{"ALL"}}, hostCaps: []string{"CAP_KILL"}, want: []string{"CAP_KILL"}},
		{name: "add cap the host lacks warns", c: &runtimeapi.Capability{AddCapabilities: []string{"SYS_RESOURCE"}}, hostCaps: without(allCaps, "CAP_SYS_RESOURCE"), want: append(slices.Clone(DefaultCapabilities), "CAP_SYS_RESOURCE"), warn: true},
		{name: "ambient", c: &runtimeapi.Capability{DropCapabilities: []string{"ALL"}, AddAmbientCapabilities: []string{"NET_BIND_SERVICE"}}, want: []string{"CAP_NET_BIND_SERVICE"}, ambient: []string{"CAP_NET_BIND_SERVICE"}},
		{name: "unknown add", c: &runtimeapi.Capability{AddCapabilities: []string{"FOO"}}, errField: "linux.security_context.capabilities.add_capabilities"},
		{name: "unknown drop", c: &runtimeapi.Capability{DropCapabilities: []string{"CAP_BAR"}}, errField: "linux.security_context.capabilities.drop_capabilities"},
		{name: "unknown ambient", c: &runtimeapi.Capability{AddAmbientCapabilities: []string{"BAZ"}}, errField: "linux.security_context.capabilities.add_ambient_capabilities"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w Warnings
			got, err := capabilities(tt.c, tt.privileged, tt.hostCaps, &w)
			if tt.errField != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.errField+": unknown capability") {
					t.Fatalf("want %s error, got %v", tt.errField, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sorted := func(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
			for name, set := range map[string][]string{"bounding": got.Bounding, "effective": got.Effective, "permitted": got.Permitted} {
				if !slices.Equal(sorted(set), sorted(tt.want)) {
					t.Errorf("%s = %v, want %v", name, set, tt.want)
				}
			}
			if !slices.Equal(got.Ambient, tt.ambient) || !slices.Equal(got.Inheritable, tt.ambient) {
				t.Errorf("ambient %v inheritable %v, want %v", got.Ambient, got.Inheritable, tt.ambient)
			}
			if tt.warn != (len(w) > 0) {
				t.Errorf("warnings %q, want some: %v", w, tt.warn)
			}
		})
	}
	_, err := capabilities(&runtimeapi.Capability{AddCapabilities: []string{"FOO"}}, false, nil, new(Warnings))
	if want := `linux.security_context.capabilities.add_capabilities: unknown capability "FOO"`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestCurrentCapabilities(t *testing.T) {
	caps, err := CurrentCapabilities()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range caps {
		if _, ok := normalizeCap(c); !ok {
			t.Errorf("unknown cap %q", c)
		}
	}
}
