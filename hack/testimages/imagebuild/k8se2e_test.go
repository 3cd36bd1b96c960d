package imagebuild_test

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"peapod/hack/testimages/imagebuild"
)

// fakeBusybox is a stand-in for busybox-static: `--list` is all the build runs.
const fakeBusybox = "#!/bin/sh\n[ \"$1\" = --list ] && printf 'busybox\\nhostname\\nid\\nls\\nnc\\nsh\\nsleep\\n'\n"

// k8sFixture writes small fake binaries and a fake Kubernetes tree and
// returns the options that build the set from them.
func k8sFixture(t *testing.T) imagebuild.K8sE2EOptions {
	t.Helper()
	dir := t.TempDir()
	write := func(rel, content string, mode os.FileMode) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("src/test/images/agnhost/porter/localhost.crt", "fake crt\n", 0o644)
	write("src/test/images/agnhost/porter/localhost.key", "fake key\n", 0o644)
	return imagebuild.K8sE2EOptions{
		Options: imagebuild.Options{Busybox: write("busybox", fakeBusybox, 0o755)},
		Ctrbin:  write("ctrbin", "fake ctrbin\n", 0o755),
		Pause:   write("pause", "fake pause\n", 0o755),
		Agnhost: write("agnhost", "fake agnhost\n", 0o755),
		Nnp:     write("nnp", "fake nnp\n", 0o755),
		K8sSrc:  filepath.Join(dir, "src"),
	}
}

func buildK8s(t *testing.T, o imagebuild.K8sE2EOptions) map[string]imagebuild.Named {
	t.Helper()
	imgs, err := imagebuild.K8sE2E(o)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	out := map[string]imagebuild.Named{}
	for _, n := range imgs {
		names = append(names, n.Repo+":"+n.Tag)
		out[n.Repo+":"+n.Tag] = n
	}
	want := []string{
		"e2e-test-images/agnhost:2.66.1", "e2e-test-images/agnhost:2.55", "e2e-test-images/busybox:1.37.0-2",
		"e2e-test-images/glibc-dns-testing:2.1.1", "e2e-test-images/nginx:1.27.0-2", "e2e-test-images/nginx:1.28.0-2",
		"e2e-test-images/nonewprivs:1.4", "e2e-test-images/nonroot:1.5", "pause:3.10.2",
	}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("images\n%q\nwant\n%q", names, want)
	}
	return out
}

type fsEntry struct {
	typ  byte
	mode int64
	uid  int
	link string
	data string
}

// flatten applies the image's layers (go-containerregistry's reference
// implementation) and returns every path with its header and content.
func flatten(t *testing.T, img v1.Image) map[string]fsEntry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]fsEntry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out["/"+strings.TrimSuffix(h.Name, "/")] = fsEntry{typ: h.Typeflag, mode: h.Mode, uid: h.Uid, link: h.Linkname, data: string(b)}
	}
}

// layerPaths lists the entries of one layer in stream order: all of them,
// or only those that are not directories.
func layerPaths(t *testing.T, l v1.Layer, dirs bool) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if dirs || h.Typeflag != tar.TypeDir {
			out = append(out, h.Name)
		}
	}
}

func TestK8sE2EImages(t *testing.T) {
	o := k8sFixture(t)
	set := buildK8s(t, o)
	const path = "PATH=" + imagebuild.DefaultPath
	reg := func(data string, mode int64) fsEntry { return fsEntry{typ: tar.TypeReg, mode: mode, data: data} }
	busyboxFiles := map[string]fsEntry{
		"/bin/busybox": reg(fakeBusybox, 0o755),
		"/bin/sh":      {typ: tar.TypeLink, mode: 0o755, link: "bin/busybox"},
		"/tmp":         {typ: tar.TypeDir, mode: 0o1777},
	}
	for _, tc := range []struct {
		ref        string
		layers     int
		entrypoint []string
		cmd        []string
		user       string
		env        []string
		ports      []string
		files      map[string]fsEntry
		absent     []string
		passwd     []string // lines /etc/passwd must hold
		group      []string
		top        []string // every non-directory path of the last layer, when it is not the base
		mid        []string // paths the layer before it holds (agnhost)
	}{
		{
			ref: "e2e-test-images/agnhost:2.66.1", layers: 3,
			entrypoint: []string{"/agnhost"}, cmd: []string{"pause"}, env: []string{path}, ports: imagebuild.AgnhostPorts,
			files: map[string]fsEntry{
				"/agnhost":                        reg("fake agnhost\n", 0o755),
				"/agnhost-2":                      {typ: tar.TypeSymlink, mode: 0o777, link: "agnhost"},
				"/uploads":                        {typ: tar.TypeDir, mode: 0o755},
				"/localhost.crt":                  reg("fake crt\n", 0o644),
				"/localhost.key":                  reg("fake key\n", 0o644),
				"/usr/bin/curl":                   reg("fake ctrbin\n", 0o755),
				"/usr/bin/nc":                     {typ: tar.TypeLink, mode: 0o755, link: "usr/bin/curl"},
				"/bin/bash":                       reg("#!/bin/sh\n# peapod stand-in for bash: runs the script with busybox's sh\nexec /bin/sh \"$@\"\n", 0o755),
				"/home/" + imagebuild.AgnhostUser: {typ: tar.TypeDir, mode: 0o755, uid: 1000},
				"/bin/sh":                         busyboxFiles["/bin/sh"],
			},
			passwd: []string{"root:x:0:0:", imagebuild.AgnhostUser + ":x:1000:1000:"},
			group:  []string{imagebuild.AgnhostUser + ":x:1000:", imagebuild.AgnhostGroup + ":x:50000:" + imagebuild.AgnhostUser},
			top:    []string{"agnhost", "agnhost-2"},
			mid: []string{"etc/passwd", "etc/group", "home/" + imagebuild.AgnhostUser + "/", "uploads/", "localhost.crt", "localhost.key",
				"usr/bin/curl", "usr/bin/nc", "bin/bash", "var/registry/pause/manifests/testing"},
		},
		{ref: "e2e-test-images/busybox:1.37.0-2", layers: 1, cmd: []string{"sh"}, env: []string{path}, files: busyboxFiles,
			absent: []string{"/home/user", "/agnhost"}, passwd: []string{"root:x:0:0:", "nobody:x:65534:65534:"}},
		{ref: "e2e-test-images/nonroot:1.5", layers: 1, cmd: []string{"sh"}, user: imagebuild.NonRootUser, env: []string{path}, files: busyboxFiles},
		{ref: "e2e-test-images/nonewprivs:1.4", layers: 2, cmd: []string{"nnp"}, env: []string{path},
			files: map[string]fsEntry{"/usr/local/bin/nnp": reg("fake nnp\n", 0o6755), "/bin/sh": busyboxFiles["/bin/sh"]},
			top:   []string{"usr/local/bin/nnp"}},
		{ref: "e2e-test-images/nginx:1.27.0-2", layers: 2, cmd: []string{"/usr/sbin/nginx", "-port", "80", "master process"},
			env: []string{path, "NGINX_VERSION=1.27.0"}, ports: []string{"80/tcp"},
			files: map[string]fsEntry{"/usr/sbin/nginx": reg("fake ctrbin\n", 0o755), "/var/run": {typ: tar.TypeDir, mode: 0o755}, "/bin/sleep": {typ: tar.TypeLink, mode: 0o755, link: "bin/busybox"}},
			top:   []string{"usr/sbin/nginx", "usr/share/nginx/html/index.html"}},
		{ref: "e2e-test-images/nginx:1.28.0-2", layers: 2, cmd: []string{"/usr/sbin/nginx", "-port", "80", "master process"},
			env: []string{path, "NGINX_VERSION=1.28.0"}, ports: []string{"80/tcp"},
			files: map[string]fsEntry{"/usr/sbin/nginx": reg("fake ctrbin\n", 0o755)}},
		{ref: "pause:3.10.2", layers: 1, entrypoint: []string{"/pause"}, user: imagebuild.PauseUser, env: []string{path},
			files: map[string]fsEntry{"/pause": reg("fake pause\n", 0o755)}, absent: []string{"/bin/sh", "/etc/passwd"},
			top: []string{"pause"}},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			img := set[tc.ref].Image
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			c := cf.Config
			if cf.OS != "linux" || cf.Created.Unix() != 0 {
				t.Errorf("os %q created %v", cf.OS, cf.Created)
			}
			if !reflect.DeepEqual(c.Entrypoint, tc.entrypoint) || !reflect.DeepEqual(c.Cmd, tc.cmd) || c.User != tc.user || !reflect.DeepEqual(c.Env, tc.env) {
				t.Errorf("config entrypoint %q cmd %q user %q env %q; want %q %q %q %q", c.Entrypoint, c.Cmd, c.User, c.Env, tc.entrypoint, tc.cmd, tc.user, tc.env)
			}
			var ports []string
			for p := range c.ExposedPorts {
				ports = append(ports, p)
			}
			sort.Strings(ports)
			want := append([]string(nil), tc.ports...)
			sort.Strings(want)
			if strings.Join(ports, ",") != strings.Join(want, ",") {
				t.Errorf("exposed ports %q, want %q", ports, want)
			}
			ls, err := img.Layers()
			if err != nil || len(ls) != tc.layers {
				t.Fatalf("%d layers (%v), want %d", len(ls), err, tc.layers)
			}
			m, err := img.Manifest()
			if err != nil || m.MediaType != "application/vnd.docker.distribution.manifest.v2+json" {
				t.Errorf("manifest media type %q %v", m.MediaType, err)
			}
			if tc.top != nil {
				if got := layerPaths(t, ls[len(ls)-1], false); !reflect.DeepEqual(got, tc.top) {
					t.Errorf("last layer holds %q, want %q", got, tc.top)
				}
			}
			if tc.mid != nil {
				have := map[string]bool{}
				for _, p := range layerPaths(t, ls[len(ls)-2], true) {
					have[p] = true
				}
				for _, p := range tc.mid {
					if !have[p] {
						t.Errorf("layer %d lacks %s", len(ls)-2, p)
					}
				}
			}
			fs := flatten(t, img)
			for p, w := range tc.files {
				if got, ok := fs[p]; !ok {
					t.Errorf("%s missing", p)
				} else if got != w {
					t.Errorf("%s: %+v, want %+v", p, got, w)
				}
			}
			for _, p := range tc.absent {
				if _, ok := fs[p]; ok {
					t.Errorf("%s present", p)
				}
			}
			for _, l := range tc.passwd {
				if !strings.Contains(fs["/etc/passwd"].data, "\n"+l) && !strings.HasPrefix(fs["/etc/passwd"].data, l) {
					t.Errorf("/etc/passwd lacks %q:\n%s", l, fs["/etc/passwd"].data)
				}
			}
			for _, l := range tc.group {
				if !strings.Contains(fs["/etc/group"].data, "\n"+l+"\n") {
					t.Errorf("/etc/group lacks %q:\n%s", l, fs["/etc/group"].data)
				}
			}
			if strings.Contains(fs["/etc/passwd"].data, ":x:1000:") != strings.Contains(tc.ref, "agnhost") {
				t.Errorf("uid 1000 in /etc/passwd only in agnhost:\n%s", fs["/etc/passwd"].data)
			}
		})
	}

	digest := func(ref string) v1.Hash {
		d, err := set[ref].Image.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	layerDigests := func(ref string) []v1.Hash {
		m, err := set[ref].Image.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		var out []v1.Hash
		for _, l := range m.Layers {
			out = append(out, l.Digest)
		}
		return out
	}
	for _, same := range [][2]string{
		{"e2e-test-images/agnhost:2.66.1", "e2e-test-images/agnhost:2.55"},
		{"e2e-test-images/busybox:1.37.0-2", "e2e-test-images/glibc-dns-testing:2.1.1"},
	} {
		if digest(same[0]) != digest(same[1]) {
			t.Errorf("%s and %s differ; they are documented as one image", same[0], same[1])
		}
	}
	if digest("e2e-test-images/nginx:1.27.0-2") == digest("e2e-test-images/nginx:1.28.0-2") {
		t.Error("the two nginx tags are one image; they must differ (NGINX_VERSION)")
	}
	if !reflect.DeepEqual(layerDigests("e2e-test-images/nginx:1.27.0-2"), layerDigests("e2e-test-images/nginx:1.28.0-2")) {
		t.Error("the two nginx tags do not share their layers")
	}
	base := layerDigests("e2e-test-images/busybox:1.37.0-2")[0]
	for ref := range set {
		if ref != "pause:3.10.2" && layerDigests(ref)[0] != base {
			t.Errorf("%s: base layer %s, want the shared %s", ref, layerDigests(ref)[0], base)
		}
	}
}

// TestK8sE2EFakeRegistry follows agnhost fake-registry-server's lookups
// (tag file → manifest list → manifest → blobs) through /var/registry of
// the agnhost image and checks it serves this set's pause:3.10.2.
func TestK8sE2EFakeRegistry(t *testing.T) {
	set := buildK8s(t, k8sFixture(t))
	fs := flatten(t, set["e2e-test-images/agnhost:2.66.1"].Image)
	dir := imagebuild.FakeRegistryDir + "/" + imagebuild.FakeRegistryRepo
	at := func(kind, digest string) []byte {
		t.Helper()
		algo, h, _ := strings.Cut(digest, ":")
		e, ok := fs[fmt.Sprintf("%s/%s/%s/%s/%s/data", dir, kind, algo, h[:2], h)]
		if !ok {
			t.Fatalf("%s %s missing from %s", kind, digest, dir)
		}
		sum := sha256.Sum256([]byte(e.data))
		if algo != "sha256" || hex.EncodeToString(sum[:]) != h {
			t.Fatalf("%s %s: content has digest sha256:%x", kind, digest, sum)
		}
		return []byte(e.data)
	}
	tag, ok := fs[dir+"/manifests/"+imagebuild.FakeRegistryTag]
	if !ok {
		t.Fatalf("tag file %s/manifests/%s missing", dir, imagebuild.FakeRegistryTag)
	}
	var list struct {
		MediaType string
		Manifests []struct {
			MediaType, Digest string
			Platform          struct{ OS, Architecture string }
		}
	}
	if err := json.Unmarshal(at("manifests", strings.TrimSpace(tag.data)), &list); err != nil {
		t.Fatal(err)
	}
	pause := set["pause:3.10.2"].Image
	want, _ := pause.Digest()
	if list.MediaType != "application/vnd.docker.distribution.manifest.list.v2+json" || len(list.Manifests) != 1 ||
		list.Manifests[0].Digest != want.String() || list.Manifests[0].Platform.OS != "linux" {
		t.Fatalf("manifest list %+v, want one linux entry %s", list, want)
	}
	var m v1.Manifest
	if err := json.Unmarshal(at("manifests", want.String()), &m); err != nil {
		t.Fatal(err)
	}
	at("blobs", m.Config.Digest.String())
	for _, l := range m.Layers {
		at("blobs", l.Digest.String())
	}
}

func TestK8sE2EReproducible(t *testing.T) {
	o := k8sFixture(t)
	a, b := buildK8s(t, o), buildK8s(t, o)
	for ref, n := range a {
		da, _ := n.Digest()
		db, _ := b[ref].Digest()
		if da != db {
			t.Errorf("%s: %s, then %s", ref, da, db)
		}
	}
}

func TestK8sE2EShellBusybox(t *testing.T) {
	o := k8sFixture(t)
	dir := t.TempDir()
	shell := filepath.Join(dir, "busybox")
	shellBusybox := fakeBusybox + "# dynamic, no FEATURE_SH_STANDALONE\n"
	lib := filepath.Join(dir, "lib", "libc.so.6")
	if err := os.WriteFile(shell, []byte(shellBusybox), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, []byte("fake libc"), 0o644); err != nil {
		t.Fatal(err)
	}
	o.ShellBusybox, o.ShellLibs = shell, []string{lib}
	set := buildK8s(t, o)
	for _, ref := range []string{"e2e-test-images/busybox:1.37.0-2", "e2e-test-images/agnhost:2.66.1", "e2e-test-images/nonroot:1.5"} {
		fs := flatten(t, set[ref].Image)
		if fs["/bin/busybox"].data != shellBusybox || fs[lib].data != "fake libc" {
			t.Errorf("%s: /bin/busybox %q, %s %q: want the shell busybox and its library", ref, fs["/bin/busybox"].data, lib, fs[lib].data)
		}
	}
}

// manifestGo renders the image table of test/utils/image/manifest.go for imgs.
func manifestGo(imgs []imagebuild.K8sImage) string {
	var b strings.Builder
	b.WriteString("func initImageConfigs(list RegistryList) (map[ImageID]Config, map[ImageID]Config) {\n")
	b.WriteString("\tconfigs[AgnhostPrivate] = Config{list.PrivateRegistry, \"agnhost\", \"2.6\"}\n")
	for _, i := range imgs {
		reg, name := "PromoterE2eRegistry", strings.TrimPrefix(i.Repo, "e2e-test-images/")
		if !strings.HasPrefix(i.Repo, "e2e-test-images/") {
			reg = "GcRegistry"
		}
		fmt.Fprintf(&b, "\tconfigs[%s] = Config{list.%s, %q, %q}\n", i.ID, reg, name, i.Tag)
	}
	return b.String() + "}\n"
}

func TestCheckK8sManifest(t *testing.T) {
	changed := append([]imagebuild.K8sImage(nil), imagebuild.K8sE2EImageList...)
	changed[2].Tag = "1.38.0-1" // busybox
	for _, tc := range []struct {
		name, src, err string
	}{
		{name: "same tags", src: manifestGo(imagebuild.K8sE2EImageList)},
		{name: "another busybox", src: manifestGo(changed), err: "BusyBox: manifest.go has e2e-test-images/busybox:1.38.0-1"},
		{name: "no pause", src: manifestGo(imagebuild.K8sE2EImageList[:8]), err: "Pause: not in manifest.go"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "test/utils/image/manifest.go")
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(tc.src), 0o644); err != nil {
				t.Fatal(err)
			}
			err := imagebuild.CheckK8sManifest(dir)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
		})
	}
	if got := imagebuild.ParseK8sManifest([]byte(manifestGo(nil))); len(got) != 0 {
		t.Errorf("the private registry's image was parsed: %v", got)
	}
}

// TestK8sManifestOfTree checks the set against the real v1.37.2 tree when it is on this machine.
func TestK8sManifestOfTree(t *testing.T) {
	if _, err := os.Stat(filepath.Join(imagebuild.DefaultK8sSrc, "test/utils/image/manifest.go")); err != nil {
		t.Skipf("no Kubernetes %s source tree at %s", imagebuild.K8sVersion, imagebuild.DefaultK8sSrc)
	}
	if err := imagebuild.CheckK8sManifest(imagebuild.DefaultK8sSrc); err != nil {
		t.Fatal(err)
	}
}

// fakeGo records each call (env and arguments) and writes the -o file.
const fakeGo = `#!/bin/sh
echo "GOWORK=$GOWORK CGO_ENABLED=$CGO_ENABLED GOFLAGS=$GOFLAGS GOTOOLCHAIN=$GOTOOLCHAIN pwd=$(pwd) $*" >> "$FAKE_GO_LOG"
while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
printf 'binary\n' > "$out"
`

func TestK8sBuildCache(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "kubernetes-v1.37.2", "src")
	goBin := filepath.Join(dir, "go")
	log := filepath.Join(dir, "go.log")
	t.Setenv("FAKE_GO_LOG", log)
	if err := os.WriteFile(goBin, []byte(fakeGo), 0o755); err != nil {
		t.Fatal(err)
	}
	setVersion := func(v string) {
		p := filepath.Join(src, imagebuild.AgnhostBinary.VersionFile)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	calls := func() []string {
		b, _ := os.ReadFile(log)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	b := imagebuild.K8sBuild{Src: src, Go: goBin}
	wantPath := filepath.Join(dir, "kubernetes-v1.37.2", "bin", "agnhost")
	setVersion("2.66.1")
	for i, step := range []struct {
		name   string
		before func()
		built  bool
		calls  int
	}{
		{name: "cold", built: true, calls: 1},
		{name: "cached", built: false, calls: 1},
		{name: "new VERSION", before: func() { setVersion("2.67.0") }, built: true, calls: 2},
		{name: "binary removed", before: func() { os.Remove(wantPath) }, built: true, calls: 3},
		{name: "stamp removed", before: func() { os.Remove(wantPath + ".version") }, built: true, calls: 4},
		{name: "cached again", built: false, calls: 4},
	} {
		if step.before != nil {
			step.before()
		}
		res, err := b.Ensure(context.Background(), imagebuild.AgnhostBinary)
		if err != nil {
			t.Fatalf("step %d %s: %v", i, step.name, err)
		}
		if res.Path != wantPath || res.Built != step.built || len(calls()) != step.calls {
			t.Fatalf("step %d %s: %+v, %d go calls; want built=%v, %d calls, %s", i, step.name, res, len(calls()), step.built, step.calls, wantPath)
		}
	}
	first := calls()[0]
	for _, want := range []string{"GOWORK=off", "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local", "pwd=" + src,
		"build -trimpath -buildvcs=false -ldflags -s -w -X main.Version=2.66.1 -o", "./test/images/agnhost"} {
		if !strings.Contains(first, want) {
			t.Errorf("go call %q lacks %q", first, want)
		}
	}
	if !strings.Contains(calls()[1], "main.Version=2.67.0") {
		t.Errorf("rebuild %q: not with the new VERSION", calls()[1])
	}
	if st, err := os.Stat(wantPath); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("cached binary: %v %v", st, err)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(wantPath), ".agnhost.tmp-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %q", left)
	}
}
