package config

import (
	"reflect"
	"testing"
)

// FuzzParse: any file given to --config parses or is refused with an
// error, never a panic; an accepted config renders back to a file that
// parses to the same config.
func FuzzParse(f *testing.F) {
	def, err := Render(Default())
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		string(def),
		"root = \"/var/lib/p\"\n[cri]\nsocket = \"/run/p.sock\"\n",
		"[registry.mirrors.\"docker.io\"]\nendpoints = [\"http://127.0.0.1:5000\"]\n",
		"[runtimes.runc]\npath = \"/usr/sbin/runc\"\n[cri]\ndefault_runtime = \"runc\"\n",
		"[image]\nstall_timeout = \"1m\"\n",
		"[containers]\nlxcfs = \"on\"\nlxcfs_dir = \"/run/lxcfs\"\n",
		"[image]\nstall_timeout = \"-1s\"\n",
		"root = 5\n",
		"[agent]\nenabled = false\nunknown = 1\n",
		"[[cni.bin_dirs]]\n",
		"\x00\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Default()
		if err := Parse(data, c); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		out, err := Render(c)
		if err != nil {
			t.Fatalf("render an accepted config: %v", err)
		}
		again := Default()
		if err := Parse(out, again); err != nil {
			t.Fatalf("rendered config does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("render/parse round trip changed the config:\n%+v\n%+v", c, again)
		}
	})
}
