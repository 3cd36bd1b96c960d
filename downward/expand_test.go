package downward

import "testing"

func TestExpand(t *testing.T) {
	vars := map[string]string{"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": "", "VAR_SPACE": " "}
	m := MappingFor(vars)
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"no vars", "no vars"},
		{"$(VAR_A)", "A"},
		{"___$(VAR_B)___", "___B___"},
		{"$(VAR_A)-$(VAR_B)-$(VAR_C)", "A-B-C"},
		{"$(VAR_A)$(VAR_B)", "AB"},
		{"$(VAR_REF)", "$(VAR_A)"}, // no recursion
		{"$(VAR_EMPTY)", ""},
		{"$(VAR_SPACE)x", " x"},
		{"$(UNKNOWN)", "$(UNKNOWN)"},
		{"$$(VAR_A)", "$(VAR_A)"},
		{"$$$(VAR_A)", "$A"},
		{"$$$$(VAR_A)", "$$(VAR_A)"},
		{"$$", "$"},
		{"$", "$"},
		{"x$", "x$"},
		{"$x", "$x"},
		{"$(VAR_A", "$(VAR_A"},
		{"$(", "$("},
		{"$()", "$()"}, // an empty name is unknown
		{"$(VAR_A)$", "A$"},
		{"foo$(VAR_A)bar$(VAR_B)", "fooAbarB"},
		{"$(VAR_A)))", "A))"},
		{"$((VAR_A))", "$((VAR_A))"},
	} {
		if got := Expand(tc.in, m); got != tc.want {
			t.Errorf("expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
