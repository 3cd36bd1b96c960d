// Command testimages builds peapod's reproducible test images from Debian's
// busybox-static and pushes or archives them. The images, their configs and
// why their digests are stable are described in package
// peapod/hack/testimages/imagebuild (see its doc comment, or README.md here).
//
//	go run ./hack/testimages list                                  # names and digests
//	go run ./hack/testimages push --registry 127.0.0.1:5000 [--prefix P/]
//	go run ./hack/testimages oci-archive --out busybox.oci.tar     # for `peapod images import`
//	go run ./hack/testimages docker-archive --out busybox.docker.tar
//	go run ./hack/testimages rootfs --out DIR                      # busybox rootfs on disk
//	go run ./hack/testimages conformance-push --registry 127.0.0.1:5000 --ctrbin FILE [--pause FILE]
//	go run ./hack/testimages k8s-e2e-push --registry 127.0.0.1:5000 --ctrbin FILE --pause FILE \
//	    [--k8s-src DIR] [--bin-dir DIR] [--agnhost FILE] [--nnp FILE]  # Kubernetes v1.37.2 node e2e images
//
// Every subcommand takes --busybox PATH (default $PEAPOD_BUSYBOX, else
// /bin/busybox). push talks plain HTTP to the given registry only, which must
// be a local one (127.0.0.1 / localhost / ::1) unless --allow-remote is set.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"peapod/hack/testimages/imagebuild"
)

func usage() {
	fmt.Fprintln(os.Stderr, `usage: testimages COMMAND [flags]
commands:
  list                                       print each image's name and digest
  push --registry HOST:PORT [--prefix P/]    push all images (plain HTTP)
  oci-archive --out FILE [--name REF]        OCI layout tar of busybox (OCI media types)
  docker-archive --out FILE [--name REF]     docker-save tarball of busybox (Docker media types)
  rootfs --out DIR                           lay out the busybox rootfs in DIR
  conformance-push --registry HOST:PORT --ctrbin FILE [--pause FILE]
                   [--shell-busybox FILE --shell-libs LIB,...]
                                             push the images critest uses, under their original paths
  k8s-e2e-push --registry HOST:PORT --ctrbin FILE --pause FILE [--k8s-src DIR] [--bin-dir DIR]
               [--agnhost FILE] [--nnp FILE] [--shell-busybox FILE --shell-libs LIB,...]
                                             push the images Kubernetes `+imagebuild.K8sVersion+`'s [NodeConformance]
                                             specs pull, under their original paths; agnhost and nnp are
                                             built from --k8s-src into --bin-dir unless given
common flags: --busybox PATH`)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	busybox := fs.String("busybox", "", "static busybox binary (default $PEAPOD_BUSYBOX, else /bin/busybox)")
	registry := fs.String("registry", "127.0.0.1:5000", "push: registry host:port")
	prefix := fs.String("prefix", "", "push: prepended to every repository name")
	allowRemote := fs.Bool("allow-remote", false, "push: allow a registry that is not on loopback")
	ctrbin := fs.String("ctrbin", "", "conformance-push, k8s-e2e-push: static build of hack/testimages/ctrbin")
	pause := fs.String("pause", "", "conformance-push: static pause binary for pause:3.6 (optional); k8s-e2e-push: for pause:3.10.2 (required)")
	shellBusybox := fs.String("shell-busybox", "", "conformance-push: busybox without FEATURE_SH_STANDALONE for e2e-test-images/busybox; k8s-e2e-push: for every image (optional)")
	shellLibs := fs.String("shell-libs", "", "conformance-push, k8s-e2e-push: comma-separated host libraries --shell-busybox needs")
	k8sSrc := fs.String("k8s-src", imagebuild.DefaultK8sSrc, "k8s-e2e-push: the rewritten k8s.io/kubernetes "+imagebuild.K8sVersion+" source tree")
	binDir := fs.String("bin-dir", "", "k8s-e2e-push: cache of binaries built from --k8s-src (default: --k8s-src/../bin)")
	agnhost := fs.String("agnhost", "", "k8s-e2e-push: prebuilt agnhost binary (default: build test/images/agnhost, cached)")
	nnp := fs.String("nnp", "", "k8s-e2e-push: prebuilt nonewprivs nnp binary (default: build test/images/nonewprivs, cached)")
	out := fs.String("out", "", "oci-archive, docker-archive, rootfs: output file or directory")
	ref := fs.String("name", "", "oci-archive, docker-archive: image name recorded in the archive (default "+
		imagebuild.ArchiveRefName+", docker-archive "+imagebuild.DockerArchiveTag+")")
	_ = fs.Parse(os.Args[2:])
	if *ref == "" {
		*ref = imagebuild.ArchiveRefName
		if cmd == "docker-archive" {
			*ref = imagebuild.DockerArchiveTag
		}
	}
	opts := imagebuild.Options{Busybox: *busybox}
	if cmd == "conformance-push" {
		if err := conformancePush(imagebuild.ConformanceOptions{Options: opts, Ctrbin: *ctrbin, Pause: *pause, ShellBusybox: *shellBusybox, ShellLibs: splitList(*shellLibs)}, *registry, *allowRemote); err != nil {
			fmt.Fprintf(os.Stderr, "testimages %s: %v\n", cmd, err)
			os.Exit(1)
		}
		return
	}

	if cmd == "k8s-e2e-push" {
		ko := imagebuild.K8sE2EOptions{Options: opts, Ctrbin: *ctrbin, Pause: *pause, Agnhost: *agnhost, Nnp: *nnp,
			K8sSrc: *k8sSrc, ShellBusybox: *shellBusybox, ShellLibs: splitList(*shellLibs)}
		if err := k8sE2EPush(ko, *binDir, *registry, *allowRemote); err != nil {
			fmt.Fprintf(os.Stderr, "testimages %s: %v\n", cmd, err)
			os.Exit(1)
		}
		return
	}

	if err := run(cmd, opts, *registry, *prefix, *allowRemote, *out, *ref); err != nil {
		fmt.Fprintf(os.Stderr, "testimages %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func run(cmd string, opts imagebuild.Options, registry, prefix string, allowRemote bool, out, ref string) error {
	if cmd == "rootfs" {
		if out == "" {
			return fmt.Errorf("--out DIR is required")
		}
		return imagebuild.WriteRootfs(out, opts)
	}
	set, err := imagebuild.Build(opts)
	if err != nil {
		return err
	}
	switch cmd {
	case "list":
		for _, n := range set.All() {
			d, err := n.Digest()
			if err != nil {
				return err
			}
			fmt.Printf("%s:%s\t%s\n", n.Repo, n.Tag, d)
		}
		return nil
	case "push":
		if !allowRemote && !isLoopback(registry) {
			return fmt.Errorf("registry %q is not on loopback (use --allow-remote if you mean it)", registry)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := time.Now()
		pushed, err := imagebuild.Push(ctx, set, registry, prefix)
		for _, p := range pushed {
			fmt.Printf("%s\t%s\n", p.Ref, p.Digest)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "pushed %d images in %v\n", len(pushed), time.Since(start).Round(time.Millisecond))
		return nil
	case "oci-archive", "docker-archive":
		if out == "" {
			return fmt.Errorf("--out FILE is required")
		}
		if cmd == "oci-archive" {
			err = imagebuild.WriteOCIArchiveFile(out, set.BusyboxOCI, ref)
		} else {
			err = imagebuild.WriteDockerArchiveFile(out, set.Busybox, ref)
		}
		if err != nil {
			return err
		}
		fmt.Println(out)
		return nil
	}
	usage()
	return nil
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func conformancePush(co imagebuild.ConformanceOptions, registry string, allowRemote bool) error {
	if !allowRemote && !isLoopback(registry) {
		return fmt.Errorf("registry %q is not on loopback (use --allow-remote if you mean it)", registry)
	}
	imgs, err := imagebuild.Conformance(co)
	if err != nil {
		return err
	}
	return pushNamed(imgs, registry, 5*time.Minute)
}

// k8sE2EPush builds what is missing (agnhost, nnp; cached in binDir), builds
// the Kubernetes node e2e image set and pushes it. Progress goes to stderr,
// one "REF\tDIGEST" line per pushed image to stdout.
func k8sE2EPush(o imagebuild.K8sE2EOptions, binDir, registry string, allowRemote bool) error {
	if !allowRemote && !isLoopback(registry) {
		return fmt.Errorf("registry %q is not on loopback (use --allow-remote if you mean it)", registry)
	}
	if o.Ctrbin == "" || o.Pause == "" {
		return fmt.Errorf("--ctrbin and --pause are required (CGO_ENABLED=0 go build ./hack/testimages/ctrbin ./cmd/peapod-pause)")
	}
	if err := imagebuild.CheckK8sManifest(o.K8sSrc); err != nil {
		return err
	}
	b := imagebuild.K8sBuild{Src: o.K8sSrc, BinDir: binDir, Log: os.Stderr}
	for _, x := range []struct {
		flag *string
		bin  imagebuild.K8sBinary
	}{{&o.Agnhost, imagebuild.AgnhostBinary}, {&o.Nnp, imagebuild.NnpBinary}} {
		if *x.flag != "" {
			continue
		}
		res, err := b.Ensure(context.Background(), x.bin)
		if err != nil {
			return err
		}
		if res.Built {
			fmt.Fprintf(os.Stderr, "%s %s: built in %v: %s\n", x.bin.Name, res.Version, res.Took.Round(time.Second), res.Path)
		} else {
			fmt.Fprintf(os.Stderr, "%s %s: cached: %s\n", x.bin.Name, res.Version, res.Path)
		}
		*x.flag = res.Path
	}
	start := time.Now()
	imgs, err := imagebuild.K8sE2E(o)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "built %d images in %v\n", len(imgs), time.Since(start).Round(time.Millisecond))
	return pushNamed(imgs, registry, 10*time.Minute)
}

// pushNamed pushes imgs within timeout, printing "REF\tDIGEST" per pushed
// image to stdout (also those pushed before a failure) and a count to stderr.
func pushNamed(imgs []imagebuild.Named, registry string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	pushed, err := imagebuild.PushNamed(ctx, imgs, registry, "")
	for _, p := range pushed {
		fmt.Printf("%s\t%s\n", p.Ref, p.Digest)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "pushed %d images in %v\n", len(pushed), time.Since(start).Round(time.Millisecond))
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
