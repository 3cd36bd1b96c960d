package oci

import "testing"

// What conmon, runc and crun print for --version, old and new, parsed to
// the name the binary gives itself and its version.
func TestParseVersion(t *testing.T) {
	tests := []struct {
		out      string
		wantName string
		want     Version
		ok       bool
	}{
		{out: "conmon version 2.1.6\ncommit: unknown\n", wantName: "conmon", want: Version{2, 1, 6}, ok: true},
		{out: "conmon version 2.0.30\ncommit: 0f7a7...\n", wantName: "conmon", want: Version{2, 0, 30}, ok: true},
		{out: "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n", wantName: "runc", want: Version{1, 1, 5}, ok: true},
		{out: "runc version 1.2.0-rc.1\ncommit: v1.2.0-rc.1-0-g275e6d85\n", wantName: "runc", want: Version{1, 2, 0}, ok: true},
		{out: "crun version 1.8.1\ncommit: f8a096be\nrundir: /run/crun\nspec: 1.0.0\n+SYSTEMD +SELINUX\n", wantName: "crun", want: Version{1, 8, 1}, ok: true},
		{out: "crun version 1.4\n", wantName: "crun", want: Version{1, 4, 0}, ok: true},
		{out: "some warning on stderr\nrunc version v1.1.12\n", wantName: "runc", want: Version{1, 1, 12}, ok: true},
		{out: "runsc version release-20230101.0\nspec: 1.0.2\n"},
		{out: "Usage: conmon [OPTION?]\n"},
		{out: ""},
	}
	for _, tt := range tests {
		name, v, ok := ParseVersion(tt.out)
		if ok != tt.ok || name != tt.wantName || v != tt.want {
			t.Errorf("ParseVersion(%q) = %q, %v, %v; want %q, %v, %v", tt.out, name, v, ok, tt.wantName, tt.want, tt.ok)
		}
	}
}

func TestVersionLess(t *testing.T) {
	tests := []struct {
		a, b Version
		less bool
	}{
		{Version{2, 0, 30}, MinConmon, true},
		{Version{2, 1, 1}, MinConmon, true},
		{Version{2, 1, 2}, MinConmon, false},
		{Version{2, 1, 6}, MinConmon, false},
		{Version{3, 0, 0}, MinConmon, false},
		{Version{1, 0, 3}, MinRuntime["runc"], true},
		{Version{1, 1, 0}, MinRuntime["runc"], false},
		{Version{1, 3, 0}, MinRuntime["crun"], true},
		{Version{1, 8, 1}, MinRuntime["crun"], false},
	}
	for _, tt := range tests {
		if got := tt.a.Less(tt.b); got != tt.less {
			t.Errorf("%v.Less(%v) = %v, want %v", tt.a, tt.b, got, tt.less)
		}
	}
}
