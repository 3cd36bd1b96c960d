// Package imagebuild builds peapod's reproducible test images from Debian's
// busybox-static (/bin/busybox), with no network access, and pushes or
// archives them. The command hack/testimages and the test helpers in
// hack/testenv are thin wrappers around it.
//
// # Reproducibility
//
// Every layer is a tar stream of sorted entries (hard links after the
// regular files they point to), mtime 0, uid/gid 0 unless stated below, no
// user or group names, compressed like `gzip -n` (no name, mtime 0). Configs
// carry "created": 1970-01-01T00:00:00Z. So every digest depends only on the
// busybox binary (and its applet list) and on the Go release's compress/flate:
// building twice on one machine gives identical digests (TestReproducible),
// and so does any machine with the same busybox-static package and Go.
//
// # The images (repository names as pushed; tag "latest")
//
// library/busybox (Docker schema 2 manifest, media types as on Docker Hub)
//
//	One layer, the busybox rootfs: /bin/busybox plus a HARD LINK in /bin for
//	every applet of `busybox --list` (Debian's busybox is built with
//	FEATURE_SH_STANDALONE: `sh -c ls` runs the applet in-process; upstream
//	busybox images hard-link the applets the same way). /etc/passwd and
//	/etc/group (see Users), /root (0700), /home, /home/user (1000:1000),
//	/tmp (1777), /var, /var/tmp (1777), and empty /dev, /proc, /sys.
//	Config: Env PATH=DefaultPath, Cmd ["sh"], linux/<host arch>.
//
// peapod/busybox-config (OCI manifest and media types)
//
//	The busybox layer plus one layer holding /work (1000:1000, 0755) and
//	/work/hello.txt ("hello from a layer\n", 0644, root). Config: see the
//	Config* constants: User "1000:1000", Env PATH + FOO=bar + EQUALS=a=b,
//	WorkingDir /work, Entrypoint ["/bin/sh","-c"], Cmd ["echo hello from
//	config"], StopSignal SIGUSR1, ExposedPorts 8080/tcp, Labels
//	org.peapod.test=busybox-config. Run as is, it prints "hello from config".
//
// peapod/whiteout (OCI; three layers, so it runs: busybox, then two more)
//
//	Layer 2 adds /data/{keep.txt,gone.txt,gonedir/inner.txt,replaced} (all
//	files) and /opaque/{old1.txt,sub/old2.txt}.
//	Layer 3 deletes /data/gone.txt (.wh.gone.txt), the directory /data/gonedir
//	(.wh.gonedir) and the busybox applet /bin/vi (.wh.vi, a hard link in layer
//	1); makes /opaque opaque (.wh..wh..opq) and adds /opaque/new.txt; replaces
//	the file /data/replaced by a directory holding new.txt; adds
//	/data/added.txt. WhiteoutPresent and WhiteoutAbsent list the expected
//	result, for unpacker tests.
//
// library/busybox-multi (OCI image index)
//
//	Three manifests: busybox for linux/<host arch> (the same layer as
//	library/busybox, OCI media types), a fake image for the other
//	architecture (linux/arm64/v8 on amd64 hosts, linux/amd64 elsewhere) whose
//	only layer holds /bin/sh as a text file (FakeArchMarker), so a runtime
//	that picks the wrong platform fails visibly; and a buildx-style
//	attestation manifest (platform unknown/unknown, annotation
//	vnd.docker.reference.type=attestation-manifest) that must never be chosen.
//
// # Users (/etc/passwd, /etc/group in every busybox-based image)
//
//	root 0:0 (/root), daemon 1:1, bin 2:2, sys 3:3, www-data 33:33 (/var/www),
//	user 1000:1000 (/home/user), nobody 65534:65534 (group nogroup).
//	Extra groups: users 100 (members user), group1 50000 (members user).
//
// # Archives
//
// WriteOCIArchive writes an OCI image layout, as a tar, holding the OCI
// busybox image annotated org.opencontainers.image.ref.name (and
// io.containerd.image.name) = docker.io/library/busybox:latest, as `peapod
// images import` and `ctr images export` expect. WriteDockerArchive writes a
// `docker save`-style tarball (manifest.json with RepoTags, "busybox:latest"
// by default) of the Docker
// schema 2 busybox image.
//
// # Sets under original repository paths
//
// Conformance (conformance.go) builds the images cri-tools' critest pulls,
// K8sE2E (k8se2e.go) those the [NodeConformance] specs of Kubernetes
// K8sVersion's e2e.test pull, with agnhost and nnp built from the
// Kubernetes source tree by K8sBuild (k8sbuild.go); see their doc comments.
package imagebuild

import (
	"archive/tar"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Repository names (without registry host) and the tag every image is pushed under.
const (
	RepoBusybox       = "library/busybox"
	RepoBusyboxConfig = "peapod/busybox-config"
	RepoWhiteout      = "peapod/whiteout"
	RepoBusyboxMulti  = "library/busybox-multi"
	Tag               = "latest"

	// ArchiveRefName is the name `testimages oci-archive` gives busybox.
	ArchiveRefName = "docker.io/library/busybox:latest"
	// DockerArchiveTag is the RepoTags entry `testimages docker-archive`
	// writes: the short form, as `docker save busybox` writes it.
	DockerArchiveTag = "busybox:latest"

	// DefaultBusybox is where Debian's busybox-static installs the binary.
	DefaultBusybox = "/bin/busybox"
	// BusyboxEnv, when set, names another busybox binary to build from.
	BusyboxEnv = "PEAPOD_BUSYBOX"

	DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// What peapod/busybox-config's config holds, for tests to check against.
const (
	ConfigUser       = "1000:1000"
	ConfigWorkingDir = "/work"
	ConfigStopSignal = "SIGUSR1"
	ConfigOutput     = "hello from config" // what the image prints when run with its defaults
	ConfigLabelKey   = "org.peapod.test"
	ConfigLabelValue = "busybox-config"
	ConfigPort       = "8080/tcp"
	// ConfigHelloFile is a file in the image's second layer, and its content.
	ConfigHelloFile    = "/work/hello.txt"
	ConfigHelloContent = "hello from a layer\n"
)

var (
	ConfigEnv        = []string{"PATH=" + DefaultPath, "FOO=bar", "EQUALS=a=b"}
	ConfigEntrypoint = []string{"/bin/sh", "-c"}
	ConfigCmd        = []string{"echo " + ConfigOutput}
)

// Expected file system of peapod/whiteout once all layers are applied
// (absolute paths inside the rootfs).
var (
	WhiteoutPresent = []string{
		"/data/keep.txt", "/data/added.txt", "/data/replaced/new.txt",
		"/opaque/new.txt", "/bin/busybox", "/bin/sh", "/bin/ls",
	}
	WhiteoutAbsent = []string{
		"/data/gone.txt", "/data/gonedir", "/data/gonedir/inner.txt",
		"/opaque/old1.txt", "/opaque/sub", "/opaque/sub/old2.txt", "/bin/vi",
		// no whiteout marker may survive unpacking
		"/data/.wh.gone.txt", "/data/.wh.gonedir", "/opaque/.wh..wh..opq", "/bin/.wh.vi",
	}
)

// FakeArchMarker is the content of /bin/sh in busybox-multi's fake-platform image.
const FakeArchMarker = "#!/fake\n# peapod test image: wrong platform chosen from library/busybox-multi\n"

// Options choose the inputs of the build.
type Options struct {
	// Busybox is the static busybox binary to build from. Empty: $PEAPOD_BUSYBOX,
	// else DefaultBusybox.
	Busybox string
}

func (o Options) busybox() string {
	if o.Busybox != "" {
		return o.Busybox
	}
	if p := os.Getenv(BusyboxEnv); p != "" {
		return p
	}
	return DefaultBusybox
}

// Set is the built set of test images.
type Set struct {
	Busybox       v1.Image // Docker schema 2
	BusyboxOCI    v1.Image // the same layer and config, OCI media types
	BusyboxConfig v1.Image
	Whiteout      v1.Image
	BusyboxMulti  v1.ImageIndex
	FakeArch      v1.Image // the fake-platform member of BusyboxMulti
	// Platform is the real platform of the busybox images (linux/<host arch>).
	Platform v1.Platform
	// FakePlatform is the platform FakeArch claims.
	FakePlatform v1.Platform
}

// Named is one image or index of a Set under its repository and tag.
type Named struct {
	Repo, Tag string
	Image     v1.Image // exactly one of Image and Index is set
	Index     v1.ImageIndex
}

// Digest is the manifest (or index) digest of n.
func (n Named) Digest() (v1.Hash, error) {
	if n.Index != nil {
		return n.Index.Digest()
	}
	return n.Image.Digest()
}

// All lists the set's images under the names they are pushed as.
func (s *Set) All() []Named {
	return []Named{
		{Repo: RepoBusybox, Tag: Tag, Image: s.Busybox},
		{Repo: RepoBusyboxConfig, Tag: Tag, Image: s.BusyboxConfig},
		{Repo: RepoWhiteout, Tag: Tag, Image: s.Whiteout},
		{Repo: RepoBusyboxMulti, Tag: Tag, Index: s.BusyboxMulti},
	}
}

// Build builds every test image. It runs `busybox --list` and reads the binary;
// nothing else leaves the process.
func Build(opts Options) (*Set, error) {
	base, err := busyboxEntries(opts.busybox())
	if err != nil {
		return nil, err
	}
	s := &Set{Platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}
	if runtime.GOARCH == "amd64" {
		s.FakePlatform = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	} else {
		s.FakePlatform = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	raw, err := tarLayer(base)
	if err != nil {
		return nil, err
	}
	gz, err := gzipBytes(raw)
	if err != nil {
		return nil, err
	}
	// One compressed blob, two media types: the layer digest is the same in
	// the Docker and the OCI images.
	baseDocker, err := layerFromGzip(gz, types.DockerLayer)
	if err != nil {
		return nil, err
	}
	baseOCI, err := layerFromGzip(gz, types.OCILayer)
	if err != nil {
		return nil, err
	}
	busyboxHistory := v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "peapod hack/testimages: busybox rootfs (" + fmt.Sprint(len(base)) + " entries)"}
	plainCfg := v1.Config{Env: []string{"PATH=" + DefaultPath}, Cmd: []string{"sh"}}

	if s.Busybox, err = image(false, s.Platform, plainCfg, layerAdd{baseDocker, busyboxHistory}); err != nil {
		return nil, err
	}
	if s.BusyboxOCI, err = image(true, s.Platform, plainCfg, layerAdd{baseOCI, busyboxHistory}); err != nil {
		return nil, err
	}

	work, err := newLayer([]entry{
		{path: "work", typ: tar.TypeDir, mode: 0o755, uid: 1000, gid: 1000},
		file("work/hello.txt", 0o644, ConfigHelloContent),
	}, types.OCILayer)
	if err != nil {
		return nil, err
	}
	s.BusyboxConfig, err = image(true, s.Platform, v1.Config{
		User:         ConfigUser,
		Env:          ConfigEnv,
		WorkingDir:   ConfigWorkingDir,
		Entrypoint:   ConfigEntrypoint,
		Cmd:          ConfigCmd,
		StopSignal:   ConfigStopSignal,
		ExposedPorts: map[string]struct{}{ConfigPort: {}},
		Labels:       map[string]string{ConfigLabelKey: ConfigLabelValue},
	}, layerAdd{baseOCI, busyboxHistory}, layerAdd{work, history("WORKDIR /work; COPY hello.txt")})
	if err != nil {
		return nil, err
	}

	if s.Whiteout, err = whiteoutImage(s.Platform, baseOCI, busyboxHistory, plainCfg); err != nil {
		return nil, err
	}
	if s.FakeArch, s.BusyboxMulti, err = multi(s); err != nil {
		return nil, err
	}
	return s, nil
}

var (
	cacheMu sync.Mutex
	cache   = map[string]*Set{}
)

// Cached is Build, memoised per busybox path for the life of the process
// (tests that start several registries build the images once).
func Cached(opts Options) (*Set, error) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	key := opts.busybox()
	if s, ok := cache[key]; ok {
		return s, nil
	}
	s, err := Build(opts)
	if err != nil {
		return nil, err
	}
	cache[key] = s
	return s, nil
}

type layerAdd struct {
	layer   v1.Layer
	history v1.History
}

func history(by string) v1.History { return v1.History{Created: v1.Time{Time: epoch}, CreatedBy: by} }

func image(oci bool, p v1.Platform, cfg v1.Config, layers ...layerAdd) (v1.Image, error) {
	img := empty.Image
	if oci {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: p.Architecture,
		Variant:      p.Variant,
		OS:           p.OS,
		Created:      v1.Time{Time: epoch},
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	adds := make([]mutate.Addendum, 0, len(layers))
	for _, l := range layers {
		adds = append(adds, mutate.Addendum{Layer: l.layer, History: l.history})
	}
	return mutate.Append(img, adds...)
}

func whiteoutImage(p v1.Platform, base v1.Layer, baseHistory v1.History, cfg v1.Config) (v1.Image, error) {
	l2, err := newLayer([]entry{
		dir("data", 0o755),
		file("data/keep.txt", 0o644, "keep\n"),
		file("data/gone.txt", 0o644, "gone\n"),
		dir("data/gonedir", 0o755),
		file("data/gonedir/inner.txt", 0o644, "inner\n"),
		file("data/replaced", 0o644, "a file in layer 2\n"),
		dir("opaque", 0o755),
		file("opaque/old1.txt", 0o644, "old1\n"),
		dir("opaque/sub", 0o755),
		file("opaque/sub/old2.txt", 0o644, "old2\n"),
	}, types.OCILayer)
	if err != nil {
		return nil, err
	}
	l3, err := newLayer([]entry{
		dir("bin", 0o755),
		file("bin/.wh.vi", 0, ""),
		dir("data", 0o755),
		file("data/.wh.gone.txt", 0, ""),
		file("data/.wh.gonedir", 0, ""),
		file("data/added.txt", 0o644, "added\n"),
		dir("data/replaced", 0o755),
		file("data/replaced/new.txt", 0o644, "a directory in layer 3\n"),
		dir("opaque", 0o755),
		file("opaque/.wh..wh..opq", 0, ""),
		file("opaque/new.txt", 0o644, "new\n"),
	}, types.OCILayer)
	if err != nil {
		return nil, err
	}
	return image(true, p, cfg,
		layerAdd{base, baseHistory},
		layerAdd{l2, history("add /data and /opaque")},
		layerAdd{l3, history("delete /data/gone.txt /data/gonedir /bin/vi; opaque /opaque; /data/replaced file -> dir")})
}

func multi(s *Set) (v1.Image, v1.ImageIndex, error) {
	fakeLayer, err := newLayer([]entry{dir("bin", 0o755), file("bin/sh", 0o755, FakeArchMarker)}, types.OCILayer)
	if err != nil {
		return nil, nil, err
	}
	fake, err := image(true, s.FakePlatform, v1.Config{Cmd: []string{"sh"}}, layerAdd{fakeLayer, history("fake platform")})
	if err != nil {
		return nil, nil, err
	}
	realDigest, err := s.BusyboxOCI.Digest()
	if err != nil {
		return nil, nil, err
	}
	att := static.NewLayer([]byte(`{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","subject":[],"predicate":{}}`), "application/vnd.in-toto+json")
	attImg, err := image(true, v1.Platform{OS: "unknown", Architecture: "unknown"}, v1.Config{}, layerAdd{att, history("attestation")})
	if err != nil {
		return nil, nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	idx = mutate.AppendManifests(idx,
		mutate.IndexAddendum{Add: s.BusyboxOCI, Descriptor: v1.Descriptor{Platform: &s.Platform}},
		mutate.IndexAddendum{Add: fake, Descriptor: v1.Descriptor{Platform: &s.FakePlatform}},
		mutate.IndexAddendum{Add: attImg, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{
				"vnd.docker.reference.digest": realDigest.String(),
				"vnd.docker.reference.type":   "attestation-manifest",
			},
		}},
	)
	return fake, idx, nil
}

// passwd and group of every busybox-based test image.
const (
	passwd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
user:x:1000:1000:test user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
`
	group = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
www-data:x:33:
users:x:100:user
user:x:1000:
group1:x:50000:user
nogroup:x:65534:
`
)

// Applets runs `busybox --list` and returns the applet names, sorted, without
// "busybox" itself.
func Applets(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w (install Debian's busybox-static: hack/install-deps.sh test)", busybox, err)
	}
	var names []string
	for _, n := range strings.Fields(string(out)) {
		if n != "busybox" && !strings.Contains(n, "/") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("%s --list printed no applets", busybox)
	}
	return names, nil
}

// busyboxEntries is the busybox rootfs: the base layer of every image.
func busyboxEntries(busybox string) ([]entry, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w (install Debian's busybox-static: hack/install-deps.sh test)", err)
	}
	applets, err := Applets(busybox)
	if err != nil {
		return nil, err
	}
	es := []entry{
		dir("bin", 0o755),
		{path: "bin/busybox", typ: tar.TypeReg, mode: 0o755, data: bin},
		dir("dev", 0o755),
		dir("etc", 0o755),
		file("etc/passwd", 0o644, passwd),
		file("etc/group", 0o644, group),
		dir("home", 0o755),
		{path: "home/user", typ: tar.TypeDir, mode: 0o755, uid: 1000, gid: 1000},
		dir("proc", 0o555),
		dir("root", 0o700),
		dir("sys", 0o555),
		dir("tmp", 0o1777),
		dir("var", 0o755),
		dir("var/tmp", 0o1777),
		dir("var/www", 0o755),
	}
	for _, a := range applets {
		es = append(es, hardlink("bin/"+a, "bin/busybox", 0o755))
	}
	return withParents(es), nil
}

// WriteRootfs lays the busybox rootfs (the content of library/busybox's
// layer) out under dir, which may exist. Ownership is set only when running
// as root.
func WriteRootfs(dir string, opts Options) error {
	es, err := busyboxEntries(opts.busybox())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeTree(dir, es)
}
