package oci

import "testing"

func TestParseFeatures(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want bool
	}{
		// runc 1.5.3 (abridged).
		{"runc 1.5", `{"ociVersionMax":"1.3.0","linux":{"namespaces":["cgroup","ipc","mount","network","pid","time","user","uts"],"mountExtensions":{"idmap":{"enabled":true}}}}`, true},
		// Debian's runc 1.1.5: user namespaces, no idmapped mounts.
		{"runc 1.1", `{"ociVersionMax":"1.0.2-dev","linux":{"namespaces":["cgroup","ipc","mount","network","pid","user","uts"]}}`, false},
		{"idmap off", `{"linux":{"namespaces":["user"],"mountExtensions":{"idmap":{"enabled":false}}}}`, false},
		{"no user ns", `{"linux":{"namespaces":["mount"],"mountExtensions":{"idmap":{"enabled":true}}}}`, false},
		{"no linux", `{}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFeatures([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			if f.UserNamespaces != tt.want || (!tt.want && f.Why == "") {
				t.Errorf("got %+v, want UserNamespaces=%v (and a reason when false)", f, tt.want)
			}
		})
	}
	if _, err := ParseFeatures([]byte("not json")); err == nil {
		t.Error("want a parse error")
	}
}
