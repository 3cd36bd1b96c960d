package imagebuild

import (
	"archive/tar"
	"fmt"
	"os"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ConformanceOptions choose the inputs of the conformance image set.
type ConformanceOptions struct {
	Options
	// Ctrbin is a static build of hack/testimages/ctrbin: the web servers
	// (nginx, httpd) and the setuid nonewprivs probe.
	Ctrbin string
	// Pause, if set, is a static pause binary (peapod-pause) for
	// pause:3.6 (containerd's sandbox image) and pause:3.9 (critest v1.37);
	// empty leaves those images out.
	Pause string
	// ShellBusybox, if set, is a busybox built WITHOUT FEATURE_SH_STANDALONE
	// (Debian's dynamic `busybox` package) for e2e-test-images/busybox, with
	// ShellLibs (host paths, copied to the same paths) for its loader. Its
	// sh execs /bin/ls as upstream's does, so critest's MaskedPaths spec
	// (`sh -c ls` with /bin/ls masked) sees "Permission denied"; Debian's
	// busybox-static runs the applet in-process and never execs it.
	ShellBusybox string
	ShellLibs    []string
}

// Conformance builds the images cri-tools' critest v1.34 and v1.37 pull, under their
// ORIGINAL repository paths (the registry host stripped), so a runtime whose
// mirrors send registry.k8s.io, gcr.io and docker.io to one local registry
// finds them by the names critest asks for. Every image is the busybox
// layer (hard-linked applets, so `ls` in a container really execs /bin/ls)
// plus at most one small layer:
//
//	e2e-test-images/busybox:1.29-2       busybox + ctrbin as /usr/bin/pgrep and /usr/bin/ipcs, Cmd sh
//	e2e-test-images/nginx:1.14-2         ctrbin as /usr/sbin/nginx on :80, pid in /var/run/nginx.pid,
//	                                     "master process" in its argv (as the real one's title)
//	e2e-test-images/httpd:2.4.39-4       ctrbin as /usr/local/bin/httpd on :80, prints "httpd"
//	e2e-test-images/nonewprivs:1.3       ctrbin as /usr/local/bin/nonewprivs, setuid root
//	k8s-staging-cri-tools/hostnet-nginx-<arch>:latest   nginx on :12003
//	k8s-staging-cri-tools/test-image-{latest,1,2,3}:latest, test-image-tag:{test,all}
//	                                     busybox + one marker file each (distinct ids)
//	k8s-staging-cri-tools/test-image-tags:{1,2,3}   one image under three tags
//	k8s-staging-cri-tools/test-image-user-uid        USER 1002
//	k8s-staging-cri-tools/test-image-user-username   USER www-data
//	k8s-staging-cri-tools/test-image-user-uid-group  USER 1003:1004
//	k8s-staging-cri-tools/test-image-user-username-group  USER www-data:1004
//	k8s-staging-cri-tools/test-image-predefined-group     USER 1000; /etc/passwd and
//	                                     /etc/group as `adduser -u 1000 -D default-user;
//	                                     addgroup -g 50000 group-defined-in-image;
//	                                     addgroup default-user group-defined-in-image`
//	library/busybox:{1,1-glibc,1-musl}   busybox (critest -benchmark)
//	pause:3.6                            Pause alone, as /pause (for containerd)
//	pause:3.9                            Pause alone, as /pause, USER 65535:65535 (critest
//	                                     v1.37 pulls it as registry.k8s.io/pause:3.9 and
//	                                     k8s.gcr.io/pause:3.9, expecting one image with
//	                                     exactly those two tags: so not pause:3.6's id)
//
// Not rebuildable: test-image-digest@sha256:9700f9…, pinned by digest.
func Conformance(o ConformanceOptions) ([]Named, error) {
	base, err := busyboxEntries(o.busybox())
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(o.Ctrbin)
	if err != nil {
		return nil, fmt.Errorf("ctrbin: %w (build it: CGO_ENABLED=0 go build ./hack/testimages/ctrbin)", err)
	}
	raw, err := tarLayer(base)
	if err != nil {
		return nil, err
	}
	gz, err := gzipBytes(raw)
	if err != nil {
		return nil, err
	}
	baseLayer, err := layerFromGzip(gz, types.DockerLayer)
	if err != nil {
		return nil, err
	}
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	baseAdd := layerAdd{baseLayer, history("busybox rootfs")}
	mk := func(cfg v1.Config, by string, es ...entry) (v1.Image, error) {
		if cfg.Env == nil {
			cfg.Env = []string{"PATH=" + DefaultPath}
		}
		if len(es) == 0 {
			return image(false, p, cfg, baseAdd)
		}
		l, err := newLayer(withParents(es), types.DockerLayer)
		if err != nil {
			return nil, err
		}
		return image(false, p, cfg, baseAdd, layerAdd{l, history(by)})
	}
	page := file("usr/share/nginx/html/index.html", 0o644, "<html><body>peapod conformance web server</body></html>\n")
	// pgrep and ipcs, which Debian's busybox-static lacks, in every image
	// critest execs them in.
	tools := []entry{
		{path: "usr/bin/pgrep", typ: tar.TypeReg, mode: 0o755, data: bin},
		hardlink("usr/bin/ipcs", "usr/bin/pgrep", 0o755),
	}
	server := func(name, path string, args ...string) (v1.Image, error) {
		es := append([]entry{{path: path[1:], typ: tar.TypeReg, mode: 0o755, data: bin}, page, dir("var/run", 0o755)}, tools...)
		return mk(v1.Config{Cmd: append([]string{path}, args...), StopSignal: "SIGQUIT"}, "COPY ctrbin "+path, es...)
	}

	var out []Named
	add := func(repo, tag string, img v1.Image, err error) error {
		if err != nil {
			return fmt.Errorf("%s:%s: %w", repo, tag, err)
		}
		out = append(out, Named{Repo: repo, Tag: tag, Image: img})
		return nil
	}
	plain, err := mk(v1.Config{Cmd: []string{"sh"}}, "")
	var withTools v1.Image
	if err == nil && o.ShellBusybox == "" {
		withTools, err = mk(v1.Config{Cmd: []string{"sh"}}, "COPY ctrbin /usr/bin/pgrep /usr/bin/ipcs", tools...)
	} else if err == nil {
		withTools, err = shellBusybox(o, p, tools)
	}
	const e2e, cri = "e2e-test-images/", "k8s-staging-cri-tools/"
	steps := []func() error{
		func() error { return add(e2e+"busybox", "1.29-2", withTools, err) },
		func() error {
			img, err := server("nginx", "/usr/sbin/nginx", "-port", "80", "master process")
			return add(e2e+"nginx", "1.14-2", img, err)
		},
		func() error {
			img, err := server("httpd", "/usr/local/bin/httpd")
			return add(e2e+"httpd", "2.4.39-4", img, err)
		},
		func() error {
			img, err := server("nginx", "/usr/sbin/nginx", "-port", "12003")
			return add(cri+"hostnet-nginx-"+runtime.GOARCH, Tag, img, err)
		},
		func() error {
			img, err := mk(v1.Config{Cmd: []string{"/usr/local/bin/nonewprivs"}}, "COPY --chmod=4755 ctrbin /usr/local/bin/nonewprivs",
				entry{path: "usr/local/bin/nonewprivs", typ: tar.TypeReg, mode: 0o4755, data: bin})
			return add(e2e+"nonewprivs", "1.3", img, err)
		},
	}
	marker := func(name string) (v1.Image, error) {
		return mk(v1.Config{Cmd: []string{"sh"}}, "ADD "+name, file(name, 0o644, name+"\n"))
	}
	for _, t := range []struct{ repo, tag, marker string }{
		{"test-image-latest", Tag, "latest"},
		{"test-image-1", Tag, "1"}, {"test-image-2", Tag, "2"}, {"test-image-3", Tag, "3"},
		{"test-image-tag", "test", "test"}, {"test-image-tag", "all", "all"},
	} {
		steps = append(steps, func() error { img, err := marker("image-test-" + t.marker); return add(cri+t.repo, t.tag, img, err) })
	}
	steps = append(steps, func() error {
		img, err := marker("image-test-tags")
		for _, tag := range []string{"1", "2", "3"} {
			if err := add(cri+"test-image-tags", tag, img, err); err != nil {
				return err
			}
		}
		return nil
	})
	for _, u := range []struct{ repo, user string }{
		{"test-image-user-uid", "1002"}, {"test-image-user-username", "www-data"},
		{"test-image-user-uid-group", "1003:1004"}, {"test-image-user-username-group", "www-data:1004"},
	} {
		steps = append(steps, func() error {
			img, err := mk(v1.Config{Cmd: []string{"sh"}, User: u.user}, "")
			return add(cri+u.repo, Tag, img, err)
		})
	}
	steps = append(steps, func() error {
		img, err := mk(v1.Config{Cmd: []string{"sh"}, User: "1000"}, "adduser default-user; addgroup group-defined-in-image",
			file("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\ndefault-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"),
			file("etc/group", 0o644, "root:x:0:\nwww-data:x:33:\nusers:x:100:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\nnogroup:x:65534:\n"),
			entry{path: "home/default-user", typ: tar.TypeDir, mode: 0o755, uid: 1000, gid: 1000})
		return add(cri+"test-image-predefined-group", Tag, img, err)
	})
	for _, tag := range []string{"1", "1-glibc", "1-musl"} {
		steps = append(steps, func() error { return add("library/busybox", tag, plain, err) })
	}
	if o.Pause != "" {
		steps = append(steps, func() error {
			n, err := Pause(o.Pause)
			if err != nil {
				return err
			}
			return add(n.Repo, n.Tag, n.Image, nil)
		}, func() error {
			n, err := pauseImage(o.Pause, "3.9", PauseUser)
			if err != nil {
				return err
			}
			return add(n.Repo, n.Tag, n.Image, nil)
		})
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// shellBusybox is e2e-test-images/busybox built from o.ShellBusybox (see
// ConformanceOptions): its rootfs with hard-linked applets, its shared
// libraries, and tools.
func shellBusybox(o ConformanceOptions, p v1.Platform, tools []entry) (v1.Image, error) {
	es, err := busyboxEntries(o.ShellBusybox)
	if err != nil {
		return nil, err
	}
	for _, lib := range o.ShellLibs {
		data, err := os.ReadFile(lib)
		if err != nil {
			return nil, err
		}
		es = append(es, entry{path: strings.TrimPrefix(lib, "/"), typ: tar.TypeReg, mode: 0o755, data: data})
	}
	l, err := newLayer(withParents(append(es, tools...)), types.DockerLayer)
	if err != nil {
		return nil, err
	}
	return image(false, p, v1.Config{Env: []string{"PATH=" + DefaultPath}, Cmd: []string{"sh"}}, layerAdd{l, history("busybox (sh without FEATURE_SH_STANDALONE) rootfs")})
}

// Pause is pause:3.6, containerd's default sandbox image: the static pause
// binary pauseBin (peapod-pause) alone, as /pause.
func Pause(pauseBin string) (Named, error) {
	return pauseImage(pauseBin, "3.6", "")
}

// pauseImage is pause:TAG: pauseBin alone, as /pause, running as user (empty:
// the image sets none).
func pauseImage(pauseBin, tag, user string) (Named, error) {
	pb, err := os.ReadFile(pauseBin)
	if err != nil {
		return Named{}, fmt.Errorf("pause: %w", err)
	}
	l, err := newLayer(withParents([]entry{{path: "pause", typ: tar.TypeReg, mode: 0o755, data: pb}}), types.DockerLayer)
	if err != nil {
		return Named{}, err
	}
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	img, err := image(false, p, v1.Config{Entrypoint: []string{"/pause"}, User: user}, layerAdd{l, history("COPY pause /pause")})
	if err != nil {
		return Named{}, err
	}
	return Named{Repo: "pause", Tag: tag, Image: img}, nil
}
