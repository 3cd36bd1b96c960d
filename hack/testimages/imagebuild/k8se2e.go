package imagebuild

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// K8sVersion is the Kubernetes release whose node e2e images K8sE2E builds
// (the tags below are those of its test/utils/image/manifest.go).
const K8sVersion = "v1.37.2"

// DefaultK8sSrc is where hack/ keeps the rewritten k8s.io/kubernetes source
// tree of K8sVersion (see shared/NOTES.md, "Building Kubernetes components
// offline"); its sibling bin/ caches what is built from it.
const DefaultK8sSrc = "/var/cache/peapod/kubernetes-" + K8sVersion + "/src"

// K8sImage is one image of the Kubernetes e2e set: ID is its ImageID in
// test/utils/image/manifest.go, Repo and Tag the name it is pushed under
// (the original repository path without the registry host).
type K8sImage struct {
	ID        string
	Repo, Tag string
}

// The images K8sE2E builds, in push order. registry.k8s.io/e2e-test-images/X
// is pushed as e2e-test-images/X, registry.k8s.io/pause as pause.
var (
	K8sAgnhost      = K8sImage{"Agnhost", "e2e-test-images/agnhost", "2.66.1"}
	K8sAgnhostPrev  = K8sImage{"AgnhostPrev", "e2e-test-images/agnhost", "2.55"}
	K8sBusyBox      = K8sImage{"BusyBox", "e2e-test-images/busybox", "1.37.0-2"}
	K8sGlibcDNS     = K8sImage{"GlibcDnsTesting", "e2e-test-images/glibc-dns-testing", "2.1.1"}
	K8sNginx        = K8sImage{"Nginx", "e2e-test-images/nginx", "1.27.0-2"}
	K8sNginxNew     = K8sImage{"NginxNew", "e2e-test-images/nginx", "1.28.0-2"}
	K8sNonewprivs   = K8sImage{"Nonewprivs", "e2e-test-images/nonewprivs", "1.4"}
	K8sNonRoot      = K8sImage{"NonRoot", "e2e-test-images/nonroot", "1.5"}
	K8sPause        = K8sImage{"Pause", "pause", "3.10.2"}
	K8sE2EImageList = []K8sImage{K8sAgnhost, K8sAgnhostPrev, K8sBusyBox, K8sGlibcDNS, K8sNginx, K8sNginxNew,
		K8sNonewprivs, K8sNonRoot, K8sPause}
)

// What the images hold, for tests to compare against.
const (
	AgnhostUser      = "user-defined-in-image" // uid 1000, in group-defined-in-image (gid 50000)
	AgnhostGroup     = "group-defined-in-image"
	NonRootUser      = "1234"
	PauseUser        = "65535:65535"
	FakeRegistryDir  = "/var/registry" // agnhost fake-registry-server's content
	FakeRegistryRepo = "pause"         // served as <registry>/pause:testing
	FakeRegistryTag  = "testing"
	nginxHTML        = "<html><body>peapod stand-in for nginx (hack/testimages ctrbin)</body></html>\n"
)

// AgnhostPorts are the ports upstream's agnhost Dockerfile EXPOSEs.
var AgnhostPorts = []string{"80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp"}

// K8sE2EOptions choose the inputs of the Kubernetes node e2e image set.
type K8sE2EOptions struct {
	Options // Busybox: busybox-static, the base of every image (unless ShellBusybox)
	// Ctrbin is a static build of hack/testimages/ctrbin: the nginx
	// stand-in, and curl and nc in the agnhost image.
	Ctrbin string
	// Pause is a static pause binary (cmd/peapod-pause): pause:3.10.2, and
	// the pause:testing image in agnhost's fake registry.
	Pause string
	// Agnhost is the agnhost binary built from test/images/agnhost of the
	// Kubernetes source tree (BuildK8sBinary), Nnp nonewprivs' nnp.
	Agnhost, Nnp string
	// K8sSrc is the Kubernetes source tree: agnhost's porter certificates
	// (test/images/agnhost/porter/localhost.{crt,key}) come from it.
	K8sSrc string
	// ShellBusybox, if set, is a busybox built without FEATURE_SH_STANDALONE
	// (Debian's dynamic `busybox`) with ShellLibs, its shared libraries (host
	// paths, copied to the same paths); it then replaces busybox-static in
	// EVERY image of the set, so `sh -c CMD` execs CMD from PATH as upstream's
	// Alpine/busybox shells do (and reaches agnhost's /usr/bin/nc).
	ShellBusybox string
	ShellLibs    []string
}

// k8sPasswd and k8sGroup are /etc/passwd and /etc/group of the K8sE2E
// images, as in Docker Hub's busybox images (the base of upstream's
// e2e-test-images/busybox): no uid 1000, so `id -G` of a pod running as
// 1000 shows only what the pod asks for.
const (
	k8sPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`
	k8sGroup = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
`
	// agnhost's Dockerfile: adduser -u 1000 -D user-defined-in-image;
	// addgroup -g 50000 group-defined-in-image; addgroup user-defined-in-image group-defined-in-image
	agnhostPasswdAdd = AgnhostUser + ":x:1000:1000:Linux User,,,:/home/" + AgnhostUser + ":/bin/sh\n"
	agnhostGroupAdd  = AgnhostUser + ":x:1000:\n" + AgnhostGroup + ":x:50000:" + AgnhostUser + "\n"
)

// K8sE2E builds the images the [NodeConformance] specs of Kubernetes
// K8sVersion's e2e.test pull (test/e2e/common/...), under their original
// repository paths (K8sE2EImageList), for a runtime whose mirrors send
// registry.k8s.io to one local registry. Docker schema 2 manifests, every
// image but pause on one shared busybox base layer (busybox-static's
// rootfs with hard-linked applets, /etc/passwd and /etc/group as Docker
// Hub's busybox):
//
//	e2e-test-images/agnhost:2.66.1   the real agnhost (Options.Agnhost) at /agnhost, /agnhost-2 -> agnhost,
//	                                 Entrypoint ["/agnhost"], Cmd ["pause"], EXPOSE 80 8080 8081 9376 5000,
//	                                 /uploads, /localhost.crt + .key (porter), user-defined-in-image 1000 in
//	                                 group-defined-in-image 50000, ctrbin as /usr/bin/curl and /usr/bin/nc,
//	                                 and /var/registry/pause (pause:testing, this set's pause as a manifest
//	                                 list) for `agnhost fake-registry-server`; /bin/bash a stand-in
//	                                 script that execs busybox's sh
//	e2e-test-images/agnhost:2.55     the same image
//	e2e-test-images/busybox:1.37.0-2 busybox, Cmd ["sh"]
//	e2e-test-images/glibc-dns-testing:2.1.1  the same image as busybox: a stand-in (its `hostname -f`
//	                                 answers from /etc/hosts, which is all the hostnameOverride specs use)
//	e2e-test-images/nginx:1.27.0-2, :1.28.0-2  stand-ins: ctrbin as /usr/sbin/nginx on :80 (one layer,
//	                                 two configs differing in NGINX_VERSION)
//	e2e-test-images/nonewprivs:1.4   the real nnp (Options.Nnp) at /usr/local/bin/nnp, mode 6755, Cmd ["nnp"]
//	e2e-test-images/nonroot:1.5      busybox, USER 1234
//	pause:3.10.2                     Pause alone as /pause, USER 65535:65535, Entrypoint ["/pause"]
func K8sE2E(o K8sE2EOptions) ([]Named, error) {
	read := func(what, path, hint string) ([]byte, error) {
		if path == "" {
			return nil, fmt.Errorf("%s: no binary given (%s)", what, hint)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w (%s)", what, err, hint)
		}
		return b, nil
	}
	ctrbin, err := read("ctrbin", o.Ctrbin, "CGO_ENABLED=0 go build ./hack/testimages/ctrbin")
	if err != nil {
		return nil, err
	}
	pauseBin, err := read("pause", o.Pause, "CGO_ENABLED=0 go build ./cmd/peapod-pause")
	if err != nil {
		return nil, err
	}
	agnhostBin, err := read("agnhost", o.Agnhost, "BuildK8sBinary(AgnhostBinary)")
	if err != nil {
		return nil, err
	}
	nnpBin, err := read("nnp", o.Nnp, "BuildK8sBinary(NnpBinary)")
	if err != nil {
		return nil, err
	}
	porterDir := filepath.Join(o.K8sSrc, "test/images/agnhost/porter")
	crt, err := os.ReadFile(filepath.Join(porterDir, "localhost.crt"))
	if err != nil {
		return nil, fmt.Errorf("agnhost porter certificate (--k8s-src): %w", err)
	}
	key, err := os.ReadFile(filepath.Join(porterDir, "localhost.key"))
	if err != nil {
		return nil, fmt.Errorf("agnhost porter key (--k8s-src): %w", err)
	}

	baseEntries, err := k8sBaseEntries(o)
	if err != nil {
		return nil, err
	}
	base, err := newLayer(baseEntries, types.DockerLayer)
	if err != nil {
		return nil, err
	}
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	baseBy := "busybox rootfs (busybox-static, applets hard-linked)"
	if o.ShellBusybox != "" {
		baseBy = "busybox rootfs (sh without FEATURE_SH_STANDALONE, applets hard-linked)"
	}
	baseAdd := layerAdd{base, history(baseBy)}
	pathEnv := []string{"PATH=" + DefaultPath}
	layer := func(by string, es ...entry) (layerAdd, error) {
		l, err := newLayer(withParents(es), types.DockerLayer)
		return layerAdd{l, history(by)}, err
	}

	// pause first: agnhost's fake registry serves it.
	pauseLayer, err := layer("COPY pause /pause", entry{path: "pause", typ: tar.TypeReg, mode: 0o755, data: pauseBin})
	if err != nil {
		return nil, err
	}
	pause, err := image(false, p, v1.Config{Env: pathEnv, User: PauseUser, WorkingDir: "/", Entrypoint: []string{"/pause"}}, pauseLayer)
	if err != nil {
		return nil, fmt.Errorf("pause: %w", err)
	}
	registry, err := fakeRegistryEntries(strings.TrimPrefix(FakeRegistryDir, "/"), FakeRegistryRepo, FakeRegistryTag, pause, p)
	if err != nil {
		return nil, fmt.Errorf("agnhost fake registry: %w", err)
	}

	agnhostFiles := append([]entry{
		file("etc/passwd", 0o644, k8sPasswd+agnhostPasswdAdd),
		file("etc/group", 0o644, k8sGroup+agnhostGroupAdd),
		{path: "home/" + AgnhostUser, typ: tar.TypeDir, mode: 0o755, uid: 1000, gid: 1000},
		dir("uploads", 0o755),
		{path: "localhost.crt", typ: tar.TypeReg, mode: 0o644, data: crt},
		{path: "localhost.key", typ: tar.TypeReg, mode: 0o644, data: key},
		{path: "usr/bin/curl", typ: tar.TypeReg, mode: 0o755, data: ctrbin},
		hardlink("usr/bin/nc", "usr/bin/curl", 0o755),
		// Upstream's base image has bash and the probe specs run
		// `/bin/bash -c SCRIPT`; their scripts are POSIX sh (trap, while,
		// sleep), which busybox's ash runs.
		file("bin/bash", 0o755, agnhostBash),
	}, registry...)
	filesLayer, err := layer("adduser "+AgnhostUser+"; addgroup "+AgnhostGroup+"; mkdir /uploads; ADD porter/localhost.*; "+
		"COPY ctrbin /usr/bin/curl /usr/bin/nc; COPY registry "+FakeRegistryDir, agnhostFiles...)
	if err != nil {
		return nil, err
	}
	binLayer, err := layer("ADD agnhost agnhost; ln -s agnhost agnhost-2",
		entry{path: "agnhost", typ: tar.TypeReg, mode: 0o755, data: agnhostBin},
		symlink("agnhost-2", "agnhost"))
	if err != nil {
		return nil, err
	}
	ports := map[string]struct{}{}
	for _, port := range AgnhostPorts {
		ports[port] = struct{}{}
	}
	agnhost, err := image(false, p, v1.Config{Env: pathEnv, Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, ExposedPorts: ports},
		baseAdd, filesLayer, binLayer)
	if err != nil {
		return nil, fmt.Errorf("agnhost: %w", err)
	}

	busybox, err := image(false, p, v1.Config{Env: pathEnv, Cmd: []string{"sh"}}, baseAdd)
	if err != nil {
		return nil, fmt.Errorf("busybox: %w", err)
	}
	nonroot, err := image(false, p, v1.Config{Env: pathEnv, Cmd: []string{"sh"}, User: NonRootUser}, baseAdd)
	if err != nil {
		return nil, fmt.Errorf("nonroot: %w", err)
	}
	nnpLayer, err := layer("COPY nnp /usr/local/bin/nnp; chmod +s /usr/local/bin/nnp",
		entry{path: "usr/local/bin/nnp", typ: tar.TypeReg, mode: 0o6755, data: nnpBin})
	if err != nil {
		return nil, err
	}
	nonewprivs, err := image(false, p, v1.Config{Env: pathEnv, Cmd: []string{"nnp"}}, baseAdd, nnpLayer)
	if err != nil {
		return nil, fmt.Errorf("nonewprivs: %w", err)
	}
	nginxLayer, err := layer("COPY ctrbin /usr/sbin/nginx (peapod stand-in)",
		entry{path: "usr/sbin/nginx", typ: tar.TypeReg, mode: 0o755, data: ctrbin},
		file("usr/share/nginx/html/index.html", 0o644, nginxHTML),
		dir("var/run", 0o755))
	if err != nil {
		return nil, err
	}
	nginx := func(version string) (v1.Image, error) {
		return image(false, p, v1.Config{
			Env:          append(append([]string(nil), pathEnv...), "NGINX_VERSION="+version),
			Cmd:          []string{"/usr/sbin/nginx", "-port", "80", "master process"},
			ExposedPorts: map[string]struct{}{"80/tcp": {}},
			StopSignal:   "SIGQUIT",
		}, baseAdd, nginxLayer)
	}
	nginx127, err := nginx("1.27.0")
	if err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	nginx128, err := nginx("1.28.0")
	if err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}

	byID := map[string]v1.Image{
		K8sAgnhost.ID: agnhost, K8sAgnhostPrev.ID: agnhost,
		K8sBusyBox.ID: busybox, K8sGlibcDNS.ID: busybox,
		K8sNginx.ID: nginx127, K8sNginxNew.ID: nginx128,
		K8sNonewprivs.ID: nonewprivs, K8sNonRoot.ID: nonroot, K8sPause.ID: pause,
	}
	out := make([]Named, 0, len(K8sE2EImageList))
	for _, ki := range K8sE2EImageList {
		out = append(out, Named{Repo: ki.Repo, Tag: ki.Tag, Image: byID[ki.ID]})
	}
	return out, nil
}

// k8sBaseEntries is the base layer of the K8sE2E images: the busybox rootfs
// (busyboxEntries, or ShellBusybox's with its libraries) with k8sPasswd and
// k8sGroup and without /home/user.
func k8sBaseEntries(o K8sE2EOptions) ([]entry, error) {
	bb := o.busybox()
	if o.ShellBusybox != "" {
		bb = o.ShellBusybox
	}
	es, err := busyboxEntries(bb)
	if err != nil {
		return nil, err
	}
	out := es[:0:0]
	for _, e := range es {
		switch e.path {
		case "etc/passwd", "etc/group", "home/user":
			continue
		}
		out = append(out, e)
	}
	out = append(out, file("etc/passwd", 0o644, k8sPasswd), file("etc/group", 0o644, k8sGroup))
	if o.ShellBusybox != "" {
		for _, lib := range o.ShellLibs {
			data, err := os.ReadFile(lib)
			if err != nil {
				return nil, err
			}
			out = append(out, entry{path: strings.TrimPrefix(lib, "/"), typ: tar.TypeReg, mode: 0o755, data: data})
		}
	}
	return withParents(out), nil
}

// fakeRegistryEntries lays img out as agnhost's fake-registry-server reads
// it (test/images/agnhost/fakeregistryserver, filled upstream by
// prepare_registry.sh): under root/repo, manifests/TAG holds the digest of
// a manifest list whose only entry is img for platform p, and every
// manifest and blob is at {manifests,blobs}/sha256/<2 hex>/<hex>/data.
func fakeRegistryEntries(root, repo, tag string, img v1.Image, p v1.Platform) ([]entry, error) {
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.DockerManifestList),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	dir := root + "/" + repo
	var es []entry
	put := func(kind string, h v1.Hash, data []byte) {
		es = append(es, entry{path: fmt.Sprintf("%s/%s/%s/%s/%s/data", dir, kind, h.Algorithm, h.Hex[:2], h.Hex), typ: tar.TypeReg, mode: 0o644, data: data})
	}
	idxRaw, err := idx.RawManifest()
	if err != nil {
		return nil, err
	}
	idxDigest, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	put("manifests", idxDigest, idxRaw)
	es = append(es, file(dir+"/manifests/"+tag, 0o644, idxDigest.String()+"\n"))
	raw, err := img.RawManifest()
	if err != nil {
		return nil, err
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	put("manifests", d, raw)
	cfg, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	put("blobs", cfgName, cfg)
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			return nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		_, err = io.Copy(&buf, rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
		put("blobs", ld, buf.Bytes())
	}
	return es, nil
}

// manifestLine matches `configs[Agnhost] = Config{list.PromoterE2eRegistry, "agnhost", "2.66.1"}`.
var manifestLine = regexp.MustCompile(`configs\[(\w+)\]\s*=\s*Config\{list\.(\w+),\s*"([^"]+)",\s*"([^"]+)"\}`)

// manifestRegistryPath is what each RegistryList field of manifest.go adds
// to an image name in the repository path (registry.k8s.io/<this><name>).
var manifestRegistryPath = map[string]string{
	"PromoterE2eRegistry": "e2e-test-images/",
	"GcRegistry":          "",
	"GcEtcdRegistry":      "",
	"BuildImageRegistry":  "build-image/",
	"SigStorageRegistry":  "sig-storage/",
}

// ParseK8sManifest reads the image table of test/utils/image/manifest.go:
// ImageID → K8sImage (Repo without registry host; only images on
// registry.k8s.io).
func ParseK8sManifest(src []byte) map[string]K8sImage {
	out := map[string]K8sImage{}
	for _, m := range manifestLine.FindAllSubmatch(src, -1) {
		prefix, ok := manifestRegistryPath[string(m[2])]
		if !ok {
			continue
		}
		out[string(m[1])] = K8sImage{ID: string(m[1]), Repo: prefix + string(m[3]), Tag: string(m[4])}
	}
	return out
}

// CheckK8sManifest checks that the Kubernetes source tree at src pulls
// exactly the names and tags K8sE2EImageList builds, so a set built for
// K8sVersion is never pushed for a tree of another release by mistake.
func CheckK8sManifest(src string) error {
	b, err := os.ReadFile(filepath.Join(src, "test/utils/image/manifest.go"))
	if err != nil {
		return fmt.Errorf("kubernetes source tree: %w", err)
	}
	return checkK8sManifest(ParseK8sManifest(b))
}

func checkK8sManifest(m map[string]K8sImage) error {
	var bad []string
	for _, want := range K8sE2EImageList {
		got, ok := m[want.ID]
		switch {
		case !ok:
			bad = append(bad, want.ID+": not in manifest.go")
		case got != want:
			bad = append(bad, fmt.Sprintf("%s: manifest.go has %s:%s, this set builds %s:%s", want.ID, got.Repo, got.Tag, want.Repo, want.Tag))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("test/utils/image/manifest.go does not match Kubernetes %s's image set: %s", K8sVersion, strings.Join(bad, "; "))
	}
	return nil
}

// agnhostBash stands in for upstream agnhost's bash.
const agnhostBash = "#!/bin/sh\n# peapod stand-in for bash: runs the script with busybox's sh\nexec /bin/sh \"$@\"\n"
