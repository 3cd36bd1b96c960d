package containerdref

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// plugin digs a plugin's table out of a decoded config.
func plugin(t *testing.T, conf map[string]any, name string) map[string]any {
	t.Helper()
	ps, _ := conf["plugins"].(map[string]any)
	p, ok := ps[name].(map[string]any)
	if !ok {
		t.Fatalf("no [plugins.%q] in config", name)
	}
	return p
}

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		major   int
		version int64
		// where the CRI settings live in that layout
		runtimePlugin, imagesPlugin string
	}{
		{"debian-1.6", 1, 2, "io.containerd.grpc.v1.cri", "io.containerd.grpc.v1.cri"},
		{"current-2.x", 2, 4, "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			in := Install{Name: tc.name, Major: tc.major}
			path, err := in.Write(Options{Dir: dir, CNIConfDir: "/cni/conf", Registry: "127.0.0.1:5000", Mirrored: []string{"docker.io", "registry.k8s.io"}})
			if err != nil {
				t.Fatal(err)
			}
			var conf map[string]any
			if _, err := toml.DecodeFile(path, &conf); err != nil {
				t.Fatalf("config does not parse: %v", err)
			}
			if conf["version"] != tc.version {
				t.Errorf("version = %v, want %d", conf["version"], tc.version)
			}
			// Every path the daemon writes is inside dir.
			for _, k := range []string{"root", "state"} {
				if v, _ := conf[k].(string); !strings.HasPrefix(v, dir+"/") {
					t.Errorf("%s = %q, not under %s", k, v, dir)
				}
			}
			rt := plugin(t, conf, tc.runtimePlugin)
			opts := rt["containerd"].(map[string]any)["runtimes"].(map[string]any)["runc"].(map[string]any)["options"].(map[string]any)
			if opts["BinaryName"] != "/usr/sbin/runc" || opts["SystemdCgroup"] != false || !strings.HasPrefix(opts["Root"].(string), dir+"/") {
				t.Errorf("runc options = %v", opts)
			}
			cni := rt["cni"].(map[string]any)
			if cni["conf_dir"] != "/cni/conf" {
				t.Errorf("cni = %v", cni)
			}
			reg := plugin(t, conf, tc.imagesPlugin)["registry"].(map[string]any)
			if reg["config_path"] != filepath.Join(dir, "certs.d") {
				t.Errorf("registry config_path = %v", reg["config_path"])
			}
			if tc.major == 2 {
				if a := plugin(t, conf, "io.containerd.server.v1.grpc")["address"]; a != filepath.Join(dir, "containerd.sock") {
					t.Errorf("grpc address = %v", a)
				}
				if p := plugin(t, conf, "io.containerd.nri.v1.nri")["socket_path"].(string); !strings.HasPrefix(p, dir+"/") {
					t.Errorf("nri socket %q outside dir", p)
				}
				if rt["netns_mounts_under_state_dir"] != true {
					t.Error("netns mounts not under the state dir")
				}
				if s := plugin(t, conf, "io.containerd.shim.v1.manager")["socket_dir"].(string); len(s) > maxSocketDir {
					t.Errorf("shim socket_dir %q longer than containerd allows", s)
				}
			}
			// Registries fail closed: server and host are the local one.
			for _, h := range []string{"docker.io", "registry.k8s.io"} {
				data, err := os.ReadFile(filepath.Join(dir, "certs.d", h, "hosts.toml"))
				if err != nil {
					t.Fatal(err)
				}
				var hosts struct {
					Server string                    `toml:"server"`
					Host   map[string]map[string]any `toml:"host"`
				}
				if err := toml.Unmarshal(data, &hosts); err != nil {
					t.Fatal(err)
				}
				if hosts.Server != "http://127.0.0.1:5000" || len(hosts.Host) != 1 || hosts.Host["http://127.0.0.1:5000"] == nil {
					t.Errorf("%s hosts.toml = %+v", h, hosts)
				}
			}
		})
	}
}

func TestWriteRejects(t *testing.T) {
	in := Install{Name: "x", Major: 2}
	for name, o := range map[string]Options{
		"relative dir": {Dir: "rel", Registry: "127.0.0.1:1"},
		"no registry":  {Dir: t.TempDir()},
	} {
		if _, err := in.Write(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestShimSocketDir(t *testing.T) {
	short := "/tmp/x"
	if got := shimSocketDir(short); got != "/tmp/x/s" {
		t.Errorf("short dir: %q", got)
	}
	long := "/tmp/peapod-bench-1234567890/containerd-2.4.2"
	got := shimSocketDir(long)
	if len(got) > maxSocketDir || strings.HasPrefix(got, long) {
		t.Errorf("long dir: %q", got)
	}
	if got != shimSocketDir(long) {
		t.Error("not deterministic: a later process could not find it to remove it")
	}
	in := Install{Major: 2}
	if hd := in.HostDirs(long); len(hd) != 1 || hd[0] != got {
		t.Errorf("HostDirs(long) = %v, want [%s]", hd, got)
	}
	if hd := in.HostDirs(short); len(hd) != 0 {
		t.Errorf("HostDirs(short) = %v", hd)
	}
}

func TestProbeVersions(t *testing.T) {
	for out, want := range map[string]string{
		"containerd github.com/containerd/containerd/v2 v2.4.2 proxy\n":            "2.4.2",
		"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n": "1.6.20",
	} {
		m := versionRE.FindStringSubmatch(out)
		if m == nil || strings.TrimPrefix(m[0], "v") != want {
			t.Errorf("%q: got %v, want %s", out, m, want)
		}
	}
}
