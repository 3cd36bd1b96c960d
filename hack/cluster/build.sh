#!/usr/bin/env bash
# hack/cluster/build.sh [all|control-plane|e2e|containerd|metrics-server|flannel|csi-sidecars] —
# build the Kubernetes components peapod's cluster tests run, from the Go
# module proxy, into a cache outside the work tree keyed by version:
#
#   $PEAPOD_CACHE/kubernetes-$K8S_VERSION/bin/{kube-apiserver,kube-controller-manager,
#       kube-scheduler,kubectl,kubelet,etcd}            (control-plane)
#   $PEAPOD_CACHE/kubernetes-$K8S_VERSION/bin/{e2e.test,ginkgo}   (e2e: node conformance)
#   $PEAPOD_CACHE/containerd-$CONTAINERD_VERSION/bin/{containerd,containerd-shim-runc-v2}
#                                  (containerd: the current reference runtime of
#                                   make bench / bench-cluster / the harness)
#   $PEAPOD_CACHE/metrics-server-$METRICS_SERVER_VERSION/bin/metrics-server
#                                  (metrics-server: kubectl top through the
#                                   aggregated metrics.k8s.io API; prints its
#                                   own bin dir; `all` builds it too)
#   $PEAPOD_CACHE/flannel-$FLANNEL_VERSION/{bin/flanneld,cni/flannel}
#                                  (flannel: the cluster network of the
#                                   multi-node tests; flanneld and the
#                                   `flannel` CNI meta plugin; prints its dir)
#   $PEAPOD_CACHE/csi-sidecars-$CSI_PROVISIONER_VERSION-$CSI_ATTACHER_VERSION-$CSI_RESIZER_VERSION/bin/{csi-provisioner,csi-attacher,csi-resizer}
#                                  (csi-sidecars: external-provisioner,
#                                   external-attacher and external-resizer,
#                                   beside the control plane for
#                                   peapod-csi-loop; prints its bin dir)
#
# PEAPOD_CACHE defaults to /var/cache/peapod; K8S_VERSION to v1.37.2 (the
# release whose k8s.io/* v0.37.2 libraries peapod links). A binary already in
# the cache is never rebuilt, so only the first run on a machine pays (about
# 15-20 min cold on 2 cores; see hack/cluster/README.md). Prints the bin dir.
#
# How: the k8s.io/kubernetes module zip has no staging/ (its go.mod replaces
# k8s.io/<x> with ./staging/src/k8s.io/<x>), ships a go.work pointing there and
# an empty vendor/. A writable copy of the module gets each such replace
# rewritten to the published k8s.io/<x> v0.<minor>.<patch>, GOWORK=off and no
# vendor/; then one `go build` of every command shares the compile work.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
METRICS_SERVER_VERSION=${METRICS_SERVER_VERSION:-v0.9.0}
FLANNEL_VERSION=${FLANNEL_VERSION:-v0.28.10}
# The `flannel` CNI meta plugin: its own repository (flannel-io/cni-plugin)
# is refused by the module proxy; containernetworking/plugins carried the same
# plugin until v0.9.1 (plugins/meta/flannel), where it builds.
FLANNEL_CNI_VERSION=${FLANNEL_CNI_VERSION:-v0.9.1}
# flannel requires tencentcloud-sdk-go/tencentcloud/vpc v1.3.188, which the
# module proxy refuses; v1.3.75 is served and has what its tencentvpc backend uses.
FLANNEL_TENCENT_VPC=${FLANNEL_TENCENT_VPC:-v1.3.75}
# The CSI sidecars the cluster runs for peapod-csi-loop (harness/csi.go).
CSI_PROVISIONER_VERSION=${CSI_PROVISIONER_VERSION:-v6.4.0}
CSI_ATTACHER_VERSION=${CSI_ATTACHER_VERSION:-v4.13.0}
CSI_RESIZER_VERSION=${CSI_RESIZER_VERSION:-v2.3.0}
PEAPOD_CACHE=${PEAPOD_CACHE:-/var/cache/peapod}
what=${1:-control-plane}

export PATH=/usr/local/go/bin:$PATH
export GOSUMDB=off GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off

base=$PEAPOD_CACHE/kubernetes-$K8S_VERSION
bin=$base/bin
src=$base/src
mkdir -p "$bin"

log() { echo "cluster/build: $*" >&2; }
die() { echo "cluster/build: error: $*" >&2; exit 1; }

ver=${K8S_VERSION#v}
major=${ver%%.*}
rest=${ver#*.}
minor=${rest%%.*}
staging_version=v0.${rest}

cp_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet etcd)

# prepare_src: a writable, rewritten copy of k8s.io/kubernetes@VERSION in $src.
prepare_src() {
	[ -f "$src/.peapod-rewritten" ] && return 0
	local start=$SECONDS dir tmp
	log "downloading k8s.io/kubernetes@$K8S_VERSION from the module proxy"
	tmp=$(mktemp -d "$base/dl.XXXXXX")
	dir=$(cd "$tmp" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	rm -rf "$tmp"
	[ -n "$dir" ] && [ -d "$dir" ] || die "go mod download k8s.io/kubernetes@$K8S_VERSION gave no module dir"
	rm -rf "$src.tmp"
	cp -r "$dir" "$src.tmp"
	chmod -R u+w "$src.tmp"
	rm -rf "$src.tmp/vendor" "$src.tmp/go.work" "$src.tmp/go.work.sum"
	(
		cd "$src.tmp"
		# Every ./staging replace: a required module gets its published
		# version, the others (not needed by this module) are dropped.
		local args=() mod
		while read -r mod; do
			args+=("-dropreplace=$mod")
			if go mod edit -json | grep -q "\"Path\": \"$mod\","; then
				args+=("-require=$mod@$staging_version")
			fi
		done < <(go mod edit -json | awk '/"Old": \{/{o=1} o && /"Path":/{gsub(/[",]/,"",$2); p=$2} /"New": \{/{o=0; n=1} n && /"Path": "\.\/staging/{print p} /\}/{if(!o)n=0}')
		[ ${#args[@]} -gt 0 ] || die "no ./staging replaces found in k8s.io/kubernetes go.mod"
		go mod edit "${args[@]}"
		! grep -q '=> ./staging' go.mod || die "go.mod still replaces into ./staging"
	)
	touch "$src.tmp/.peapod-rewritten"
	rm -rf "$src"
	mv "$src.tmp" "$src"
	log "source ready in $src ($((SECONDS - start))s)"
}

ldflags() {
	local x=() p
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		x+=("-X $p.gitVersion=$K8S_VERSION" "-X $p.gitMajor=$major" "-X $p.gitMinor=$minor"
			"-X $p.gitTreeState=clean" "-X $p.buildDate=1970-01-01T00:00:00Z")
	done
	echo "-s -w ${x[*]}"
}

missing() { local b; for b in "$@"; do [ -x "$bin/$b" ] || return 0; done; return 1; }

build_control_plane() {
	missing "${cp_bins[@]}" || return 0
	prepare_src
	local start=$SECONDS
	log "building kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet $K8S_VERSION (cold: ~15 min on 2 cores)"
	(cd "$src" && go build -trimpath -ldflags "$(ldflags)" -o "$bin/.tmp/" \
		./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kube-scheduler ./cmd/kubectl ./cmd/kubelet)
	log "building etcd (the version $K8S_VERSION requires)"
	(cd "$src" && go build -trimpath -ldflags "-s -w" -o "$bin/.tmp/etcd" go.etcd.io/etcd/server/v3)
	mv -f "$bin"/.tmp/* "$bin"/
	rmdir "$bin/.tmp"
	log "control plane built in $((SECONDS - start))s"
}

build_e2e() {
	missing e2e.test ginkgo || return 0
	prepare_src
	local start=$SECONDS
	log "building e2e.test $K8S_VERSION and the ginkgo CLI it pins (runs specs in parallel)"
	(cd "$src" && go test -c -trimpath -ldflags "$(ldflags)" -o "$bin/e2e.test.tmp" ./test/e2e)
	(cd "$src" && go build -trimpath -ldflags "-s -w" -o "$bin/ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo)
	mv -f "$bin/e2e.test.tmp" "$bin/e2e.test"
	mv -f "$bin/ginkgo.tmp" "$bin/ginkgo"
	log "e2e.test and ginkgo built in $((SECONDS - start))s"
}

# build_containerd: containerd and its runc shim from the module proxy
# (github.com/containerd/containerd/v2), static, without btrfs (cgo). A
# scratch module requires the release so the proxy resolves its go.sum.
build_containerd() {
	local cbin=$PEAPOD_CACHE/containerd-$CONTAINERD_VERSION/bin
	mkdir -p "$cbin"
	if [ -x "$cbin/containerd" ] && [ -x "$cbin/containerd-shim-runc-v2" ]; then
		echo "$cbin"
		return 0
	fi
	local start=$SECONDS tmp
	log "building containerd $CONTAINERD_VERSION and containerd-shim-runc-v2 (cold: ~2 min on 2 cores)"
	tmp=$(mktemp -d "$PEAPOD_CACHE/containerd-$CONTAINERD_VERSION/mod.XXXXXX")
	(
		cd "$tmp"
		go mod init peapod.local/containerd-build >/dev/null 2>&1
		go get "github.com/containerd/containerd/v2@$CONTAINERD_VERSION" >/dev/null
		go build -trimpath -tags no_btrfs \
			-ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION -X github.com/containerd/containerd/v2/version.Revision=proxy" \
			-o "$cbin/.tmp/" github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
	) || { rm -rf "$tmp" "$cbin/.tmp"; die "containerd $CONTAINERD_VERSION build failed"; }
	mv -f "$cbin"/.tmp/* "$cbin"/
	rmdir "$cbin/.tmp"
	rm -rf "$tmp"
	log "containerd $CONTAINERD_VERSION built in $((SECONDS - start))s"
	echo "$cbin"
}

# build_metrics_server: sigs.k8s.io/metrics-server's cmd/metrics-server at
# its release, static, with `go install pkg@version`: the module's own
# go.mod and go.sum decide every dependency (it has no replace directives),
# so nothing of it reaches peapod's go.mod. The version ldflags are its
# Makefile's (k8s.io/client-go/pkg/version), so --version reports the release.
build_metrics_server() {
	local mdir=$PEAPOD_CACHE/metrics-server-$METRICS_SERVER_VERSION
	local mbin=$mdir/bin
	mkdir -p "$mbin"
	if [ -x "$mbin/metrics-server" ]; then
		echo "$mbin"
		return 0
	fi
	local start=$SECONDS p=k8s.io/client-go/pkg/version
	log "building metrics-server $METRICS_SERVER_VERSION (cold: ~2 min on 2 cores)"
	rm -rf "$mbin/.tmp"
	# pkg@version: the module of the current directory (if any) plays no part.
	GOBIN="$mbin/.tmp" go install -trimpath \
		-ldflags "-s -w -X $p.gitVersion=$METRICS_SERVER_VERSION -X $p.gitCommit=proxy -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z" \
		"sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION" ||
		{ rm -rf "$mbin/.tmp"; die "metrics-server $METRICS_SERVER_VERSION build failed"; }
	mv -f "$mbin/.tmp/metrics-server" "$mbin/metrics-server"
	rmdir "$mbin/.tmp"
	log "metrics-server $METRICS_SERVER_VERSION built in $((SECONDS - start))s"
	echo "$mbin"
}

# build_flannel: flanneld (github.com/flannel-io/flannel, its module root is
# package main) and the `flannel` CNI meta plugin, into
# $PEAPOD_CACHE/flannel-$FLANNEL_VERSION/{bin,cni}; prints that dir.
#
# flanneld: a scratch module requires the release and replaces the one
# dependency the proxy refuses (FLANNEL_TENCENT_VPC above), so minimal version
# selection picks exactly flannel's own versions otherwise. cgo on, as
# flannel's Makefile builds amd64 (the UDP backend's C proxy), static like
# its release binaries; netgo/osusergo keep glibc's NSS out of a static
# binary. The CNI plugin: `go install pkg@version` (the v0.9.1 go.mod has no
# replaces), static, no cgo. Neither touches peapod's go.mod.
build_flannel() {
	local fdir=$PEAPOD_CACHE/flannel-$FLANNEL_VERSION
	if [ -x "$fdir/bin/flanneld" ] && [ -x "$fdir/cni/flannel" ]; then
		echo "$fdir"
		return 0
	fi
	local start=$SECONDS tmp
	mkdir -p "$fdir/bin" "$fdir/cni"
	rm -rf "$fdir/.tmp"
	mkdir -p "$fdir/.tmp"
	if [ ! -x "$fdir/bin/flanneld" ]; then
		command -v gcc >/dev/null || die "flanneld needs cgo: no gcc (apt-get install gcc libc6-dev)"
		log "building flanneld $FLANNEL_VERSION (cgo; cold: ~1.5 min on 2 cores)"
		tmp=$(mktemp -d "$fdir/mod.XXXXXX")
		(
			cd "$tmp"
			go mod init peapod.local/flannel-build >/dev/null 2>&1
			go mod edit -require="github.com/flannel-io/flannel@$FLANNEL_VERSION" \
				-replace="github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc=github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc@$FLANNEL_TENCENT_VPC"
			go mod download github.com/flannel-io/flannel
			CGO_ENABLED=1 go build -trimpath -tags netgo,osusergo \
				-ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION -extldflags -static" \
				-o "$fdir/.tmp/flanneld" github.com/flannel-io/flannel
		) || { rm -rf "$tmp" "$fdir/.tmp"; die "flanneld $FLANNEL_VERSION build failed"; }
		rm -rf "$tmp"
		mv -f "$fdir/.tmp/flanneld" "$fdir/bin/flanneld"
	fi
	if [ ! -x "$fdir/cni/flannel" ]; then
		log "building the flannel CNI plugin (containernetworking/plugins $FLANNEL_CNI_VERSION plugins/meta/flannel)"
		GOBIN="$fdir/.tmp" go install -trimpath \
			-ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$FLANNEL_CNI_VERSION" \
			"github.com/containernetworking/plugins/plugins/meta/flannel@$FLANNEL_CNI_VERSION" ||
			{ rm -rf "$fdir/.tmp"; die "flannel CNI plugin $FLANNEL_CNI_VERSION build failed"; }
		mv -f "$fdir/.tmp/flannel" "$fdir/cni/flannel"
	fi
	rm -rf "$fdir/.tmp"
	log "flannel $FLANNEL_VERSION built in $((SECONDS - start))s"
	echo "$fdir"
}

# build_csi_sidecars: csi-provisioner (github.com/kubernetes-csi/
# external-provisioner/v6), csi-attacher (external-attacher/v4) and
# csi-resizer (external-resizer/v2) into
# $PEAPOD_CACHE/csi-sidecars-<provisioner>-<attacher>-<resizer>/bin; prints
# that dir. Every version is in the dir's name, so a dir an older build.sh
# filled (without csi-resizer) is never taken for complete.
# Their go.mod files carry replace directives, which `go install
# pkg@version` refuses, so each is built inside a writable copy of its
# module (go mod download -json gives the dir): its own go.mod and go.sum
# decide every dependency, and peapod's go.mod never sees them. Static, no
# cgo, the version through main.version as their release-tools set it, so
# --version reports the release.
build_csi_sidecars() {
	local sdir=$PEAPOD_CACHE/csi-sidecars-$CSI_PROVISIONER_VERSION-$CSI_ATTACHER_VERSION-$CSI_RESIZER_VERSION
	local sbin=$sdir/bin
	if [ -x "$sbin/csi-provisioner" ] && [ -x "$sbin/csi-attacher" ] && [ -x "$sbin/csi-resizer" ]; then
		echo "$sbin"
		return 0
	fi
	mkdir -p "$sbin"
	local start=$SECONDS name mod ver tmp dir
	for name in csi-provisioner csi-attacher csi-resizer; do
		[ -x "$sbin/$name" ] && continue
		case $name in
		csi-provisioner) mod=github.com/kubernetes-csi/external-provisioner/v6 ver=$CSI_PROVISIONER_VERSION ;;
		csi-attacher) mod=github.com/kubernetes-csi/external-attacher/v4 ver=$CSI_ATTACHER_VERSION ;;
		csi-resizer) mod=github.com/kubernetes-csi/external-resizer/v2 ver=$CSI_RESIZER_VERSION ;;
		esac
		log "building $name $ver ($mod; cold: 5-16 min each on a busy 2-core machine)"
		tmp=$(mktemp -d "$sdir/src.XXXXXX")
		dir=$(cd "$tmp" && go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[ -n "$dir" ] && [ -d "$dir" ] || { rm -rf "$tmp"; die "go mod download $mod@$ver gave no module dir"; }
		cp -r "$dir" "$tmp/src"
		chmod -R u+w "$tmp/src"
		(cd "$tmp/src" && go build -ldflags "-s -w -X main.version=$ver" -o "$sbin/.$name.tmp" "./cmd/$name") ||
			{ rm -rf "$tmp" "$sbin/.$name.tmp"; die "$name $ver build failed"; }
		rm -rf "$tmp"
		mv -f "$sbin/.$name.tmp" "$sbin/$name"
	done
	log "CSI sidecars built in $((SECONDS - start))s"
	echo "$sbin"
}

case $what in
control-plane) build_control_plane ;;
e2e) build_e2e ;;
all) build_control_plane; build_e2e; build_metrics_server >/dev/null ;;
containerd) build_containerd; exit 0 ;;
metrics-server) build_metrics_server; exit 0 ;;
flannel) build_flannel; exit 0 ;;
csi-sidecars) build_csi_sidecars; exit 0 ;;
*) echo "usage: $0 [all|control-plane|e2e|containerd|metrics-server|flannel|csi-sidecars]" >&2; exit 2 ;;
esac
echo "$bin"
