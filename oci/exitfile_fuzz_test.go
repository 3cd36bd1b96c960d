package oci

import (
	"strconv"
	"testing"
)

// FuzzParseExitFile: conmon's exit file is read back after crashes and
// disk trouble: any content parses to a code or an error, never a panic,
// and a code parses back from its own text.
func FuzzParseExitFile(f *testing.F) {
	for _, s := range []string{"0", "137", "-1", "2147483647", "2147483648", " 1\n", "", "x", "１"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		code, err := parseExitFile(b)
		if err != nil {
			return
		}
		if again, err := parseExitFile([]byte(strconv.Itoa(int(code)))); err != nil || again != code {
			t.Fatalf("code %d from %q does not round-trip: %d %v", code, b, again, err)
		}
	})
}
