package image

import "testing"

// FuzzNormalize: image references come from pod specs and CRI requests.
// Normalize never panics, and a name it returns normalizes to itself.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"busybox", "busybox:1.36", "docker.io/library/busybox:latest", "registry.k8s.io/pause:3.10",
		"localhost:5000/a/b:c", "127.0.0.1:5000/x@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"UPPER/case", "a:b:c", "@sha256:", "", "::::", "a//b", "-a", "a/../b", "[::1]:5000/x:y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		n, err := Normalize(ref)
		if err != nil {
			return
		}
		again, err := Normalize(n)
		if err != nil || again != n {
			t.Fatalf("Normalize(%q) = %q, which normalizes to %q, %v", ref, n, again, err)
		}
	})
}
