package network

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"peapod/internal/atomicfile"
)

const otherConf = `{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"ptp","ipam":{"type":"host-local","subnet":"10.99.0.0/24"}}]}`

func TestNewDefaultConf(t *testing.T) {
	tests := []struct {
		name     string
		existing map[string]string // files in the conf dir before New
		wantFile string            // config in use afterwards
		wantNet  string
	}{
		{name: "empty dir gets the default", wantFile: DefaultConfFile, wantNet: "peapod"},
		{name: "missing dir gets created", existing: nil, wantFile: DefaultConfFile, wantNet: "peapod"},
		{name: "conflist kept", existing: map[string]string{"50-other.conflist": otherConf}, wantFile: "50-other.conflist", wantNet: "other"},
		{name: "single .conf kept", existing: map[string]string{"99-x.conf": `{"cniVersion":"0.4.0","name":"single","type":"bridge"}`}, wantFile: "99-x.conf", wantNet: "single"},
		{name: "non-config files ignored", existing: map[string]string{"README": "hi"}, wantFile: DefaultConfFile, wantNet: "peapod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "net.d")
			if tt.name != "missing dir gets created" {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for f, c := range tt.existing {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m, err := New(Options{ConfDir: dir, CacheDir: t.TempDir(), Bridge: "ppx0", Subnet: "10.250.7.0/24"})
			if err != nil {
				t.Fatal(err)
			}
			if got := filepath.Base(m.ConfFile()); got != tt.wantFile {
				t.Fatalf("config in use = %q, want %q", got, tt.wantFile)
			}
			list, err := m.networkList()
			if err != nil {
				t.Fatal(err)
			}
			if list.Name != tt.wantNet {
				t.Errorf("network = %q, want %q", list.Name, tt.wantNet)
			}
			for f, c := range tt.existing {
				got, _ := os.ReadFile(filepath.Join(dir, f))
				if string(got) != c {
					t.Errorf("%s was changed", f)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, DefaultConfFile)); (err == nil) != (tt.wantFile == DefaultConfFile) {
				t.Errorf("default conf present = %v, want %v", err == nil, tt.wantFile == DefaultConfFile)
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.Contains(e.Name(), ".tmp-") {
					t.Errorf("temp file left: %s", e.Name())
				}
			}
		})
	}
}

func TestDefaultConfListContent(t *testing.T) {
	data, err := DefaultConfList(Options{Bridge: "br9", Subnet: "10.250.9.0/24", IPAMDataDir: "/x/ipam"})
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		CNIVersion string `json:"cniVersion"`
		Name       string
		Plugins    []map[string]any
	}
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if c.Name != "peapod" || len(c.Plugins) != 2 || c.CNIVersion != "1.0.0" {
		t.Fatalf("unexpected conflist: %s", data)
	}
	br := c.Plugins[0]
	for k, want := range map[string]any{"type": "bridge", "bridge": "br9", "isGateway": true, "ipMasq": false, "hairpinMode": true} {
		if br[k] != want {
			t.Errorf("bridge %s = %v, want %v", k, br[k], want)
		}
	}
	ipam := br["ipam"].(map[string]any)
	if ipam["type"] != "host-local" || ipam["dataDir"] != "/x/ipam" || !strings.Contains(string(data), `"10.250.9.0/24"`) {
		t.Errorf("ipam = %v", ipam)
	}
	pm := c.Plugins[1]
	if pm["type"] != "portmap" || !reflect.DeepEqual(pm["capabilities"], map[string]any{"portMappings": true}) {
		t.Errorf("portmap = %v", pm)
	}
}

func TestReady(t *testing.T) {
	usrLib := "/usr/lib/cni"
	if _, err := os.Stat(filepath.Join(usrLib, "bridge")); err != nil {
		t.Skip("needs the CNI plugins in /usr/lib/cni (Debian containernetworking-plugins)")
	}
	empty := t.TempDir()
	tests := []struct {
		name    string
		files   map[string]string // replace the conf dir's contents
		binDirs []string
		want    string // "" = ready
	}{
		{name: "default conf, plugins present", binDirs: []string{usrLib}},
		{name: "empty dir", files: map[string]string{}, binDirs: []string{usrLib}, want: "no CNI network config in CONFDIR"},
		{name: "plugin missing", binDirs: []string{empty, "/nonexistent"}, want: `CNI plugin "bridge" not found in [` + empty + ` /nonexistent]`},
		{name: "ipam plugin missing", files: map[string]string{"10.conflist": `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"nosuchipam"}}]}`}, binDirs: []string{usrLib}, want: `CNI plugin "nosuchipam" not found`},
		{name: "invalid only", files: map[string]string{"10.conflist": `{nope`}, binDirs: []string{usrLib}, want: "no valid CNI network config in CONFDIR (10.conflist: "},
		{name: "invalid skipped, next used", files: map[string]string{"10.conflist": `{nope`, "20.conflist": otherConf}, binDirs: []string{usrLib}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			m, err := New(Options{ConfDir: dir, BinDirs: tt.binDirs, CacheDir: t.TempDir(), Bridge: "ppx0", Subnet: "10.250.7.0/24"})
			if err != nil {
				t.Fatal(err)
			}
			if tt.files != nil {
				os.Remove(filepath.Join(dir, DefaultConfFile))
				for f, c := range tt.files {
					if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			err = m.Ready()
			want := strings.ReplaceAll(tt.want, "CONFDIR", dir)
			switch {
			case want == "" && err != nil:
				t.Fatalf("Ready() = %v, want nil", err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
				t.Fatalf("Ready() = %v, want %q", err, want)
			}
		})
	}
}

// A config added or changed after New is picked up without a restart.
func TestReadyPicksUpChanges(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Options{ConfDir: dir, BinDirs: []string{"/usr/lib/cni"}, CacheDir: t.TempDir(), Bridge: "ppx0", Subnet: "10.250.7.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, DefaultConfFile)); err != nil {
		t.Fatal(err)
	}
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), "no CNI network config in "+dir) {
		t.Fatalf("Ready() on empty dir = %v", err)
	}
	write := func(name, c string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("50-other.conflist", otherConf)
	if f := filepath.Base(m.ConfFile()); f != "50-other.conflist" {
		t.Fatalf("config = %q after adding one", f)
	}
	// An earlier name wins.
	write("05-first.conflist", strings.Replace(otherConf, `"other"`, `"first"`, 1))
	if l, _ := m.networkList(); l == nil || l.Name != "first" {
		t.Fatalf("network = %v, want first", l)
	}
	// In-place edit of the file in use (same dir mtime possible).
	time.Sleep(10 * time.Millisecond)
	write("05-first.conflist", strings.Replace(otherConf, `"other"`, `"edited"`, 1))
	if l, _ := m.networkList(); l == nil || l.Name != "edited" {
		t.Fatalf("network = %v, want edited", l)
	}
}

// With NoDefaultConf an empty conf dir stays empty: the network is not
// ready, and Setup says why, until the operator's config appears.
func TestNoDefaultConf(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d")
	m, err := New(Options{ConfDir: dir, BinDirs: []string{"/usr/lib/cni"}, CacheDir: t.TempDir(), NoDefaultConf: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("conf dir %s was created", dir)
	}
	want := "no CNI network config in " + dir
	if err := m.Ready(); err == nil || err.Error() != want {
		t.Fatalf("Ready() = %v, want %q", err, want)
	}
	st := m.ConfStatus()
	if st.File != "" || st.Network != "" || st.ConfDir != dir || st.Err == nil {
		t.Errorf("ConfStatus = %+v", st)
	}
	// Setup reads the config before it touches the netns.
	_, err = m.Setup(context.Background(), Pod{ID: "p1", Name: "a", Namespace: "default", NetNS: "/nonexistent"})
	if err == nil || !strings.Contains(err.Error(), "network not ready: "+want) {
		t.Fatalf("Setup = %v, want network not ready", err)
	}
	// Nothing ADDed, nothing configured: Teardown has nothing to undo.
	if err := m.Teardown(context.Background(), Pod{ID: "p1", Name: "a", Namespace: "default"}); err != nil {
		t.Errorf("Teardown with no config and no cached ADD = %v, want nil", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-flannel.conflist"), []byte(otherConf), 0o644); err != nil {
		t.Fatal(err)
	}
	st = m.ConfStatus()
	if st.Err != nil || filepath.Base(st.File) != "10-flannel.conflist" || st.Network != "other" || !reflect.DeepEqual(st.Plugins, []string{"ptp"}) {
		t.Fatalf("ConfStatus after install = %+v", st)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("conf dir holds %d files, want only the operator's", len(ents))
	}
}

// Every change an operator makes to the dir is seen by the next call: a
// file replaced by rename with the same size and mtime, an invalid file
// sorting first fixed in place, the file in use removed.
func TestConfChanges(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Options{ConfDir: dir, BinDirs: []string{"/usr/lib/cni"}, CacheDir: t.TempDir(), NoDefaultConf: true})
	if err != nil {
		t.Fatal(err)
	}
	network := func() string {
		t.Helper()
		l, err := m.networkList()
		if err != nil {
			return "error: " + err.Error()
		}
		return l.Name
	}
	write := func(name, c string, mtime time.Time) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := atomicfile.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		if !mtime.IsZero() {
			if err := os.Chtimes(p, mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
	}
	conf := func(name string) string { return strings.Replace(otherConf, `"other"`, `"`+name+`"`, 1) }
	mtime := time.Unix(1700000000, 0)
	write("10-net.conflist", conf("aaaa"), mtime)
	if got := network(); got != "aaaa" {
		t.Fatalf("network = %q, want aaaa", got)
	}
	// Same name, size and mtime; a new inode (rename over it).
	write("10-net.conflist", conf("bbbb"), mtime)
	if got := network(); got != "bbbb" {
		t.Fatalf("after replace: network = %q, want bbbb", got)
	}
	// An invalid config sorting first is skipped...
	if err := os.WriteFile(filepath.Join(dir, "05-bad.conflist"), []byte(`{nope`), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := network(); got != "bbbb" {
		t.Fatalf("with an invalid first file: network = %q, want bbbb", got)
	}
	// ...and used once fixed in place.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(dir, "05-bad.conflist"), []byte(conf("fixed")), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := network(); got != "fixed" {
		t.Fatalf("after the fix: network = %q, want fixed", got)
	}
	for _, f := range []string{"05-bad.conflist", "10-net.conflist"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if got := network(); got != "error: no CNI network config in "+dir {
		t.Fatalf("after removing all: network = %q", got)
	}
}

func TestRuntimeConf(t *testing.T) {
	m := &Manager{}
	p := Pod{
		ID: "abc", Name: "web", Namespace: "default", UID: "u-1", NetNS: "/run/netns/x",
		PortMappings: []PortMapping{{HostPort: 8080, ContainerPort: 80}, {HostPort: 53, ContainerPort: 53, Protocol: "udp", HostIP: "127.0.0.1"}},
		CgroupParent: "/kubepods/pod1",
		Bandwidth:    &Bandwidth{IngressRate: 1000, EgressRate: 2000},
	}
	rt := m.runtimeConf(p, p.NetNS)
	if rt.ContainerID != "abc" || rt.NetNS != "/run/netns/x" || rt.IfName != "eth0" {
		t.Errorf("rt = %+v", rt)
	}
	wantArgs := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web"}, {"K8S_POD_INFRA_CONTAINER_ID", "abc"}, {"K8S_POD_UID", "u-1"}}
	if !reflect.DeepEqual(rt.Args, wantArgs) {
		t.Errorf("args = %v", rt.Args)
	}
	got, _ := json.Marshal(rt.CapabilityArgs)
	want := `{"bandwidth":{"egressBurst":0,"egressRate":2000,"ingressBurst":0,"ingressRate":1000},"cgroupPath":"/kubepods/pod1","portMappings":[{"containerPort":80,"hostPort":8080,"protocol":"tcp"},{"containerPort":53,"hostIP":"127.0.0.1","hostPort":53,"protocol":"udp"}]}`
	if string(got) != want {
		t.Errorf("capability args\n got %s\nwant %s", got, want)
	}
	if rt := m.runtimeConf(Pod{ID: "x"}, ""); len(rt.CapabilityArgs) != 0 {
		t.Errorf("empty pod capability args = %v", rt.CapabilityArgs)
	}
}

func TestFirstConf(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := FirstConf(dir); err == nil || !strings.Contains(err.Error(), "no CNI network config") {
		t.Fatalf("empty dir: %v", err)
	}
	conf := `{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel","delegate":{"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}},{"type":"bandwidth","ipam":{"type":"host-local"}}]}`
	if err := os.WriteFile(filepath.Join(dir, "10-flannel.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	file, plugins, err := FirstConf(dir)
	if err != nil || filepath.Base(file) != "10-flannel.conflist" || strings.Join(plugins, ",") != "flannel,portmap,bandwidth,host-local" {
		t.Fatalf("FirstConf = %s %v %v", file, plugins, err)
	}
}
