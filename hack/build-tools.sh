#!/usr/bin/env bash
# hack/build-tools.sh [crictl|critest|all|critest-vX.Y.Z] — build the CRI client
# tools that peapod's conformance tests and benchmarks drive, into bin/ of the repo.
#
#   crictl  sigs.k8s.io/cri-tools/cmd/crictl  (a `tool` directive in hack/tools/go.mod)
#   critest sigs.k8s.io/cri-tools/cmd/critest (a test binary: `go test -c`)
#
# critest-vX.Y.Z (e.g. critest-v1.37.0) builds critest of another cri-tools
# release, side by side with the pinned one, into a cache outside the work tree
# keyed by version: $PEAPOD_CACHE/cri-tools-vX.Y.Z/bin/critest (PEAPOD_CACHE
# defaults to /var/cache/peapod, as for hack/cluster/build.sh), from a scratch
# module that requires that release (the module proxy resolves its go.sum);
# hack/tools is untouched. A binary already there is never rebuilt. Prints its
# path on stdout. Use it with CRITEST=PATH hack/conformance/run.sh.
#
# Versions are pinned by hack/tools/go.mod (cri-tools v1.34.0), a module of its
# own so the tools' dependencies never enter peapod's go.mod. Everything comes
# from the Go module proxy; GOSUMDB=off because the checksum database is not
# reachable from these machines (go.sum in hack/tools still pins the hashes).
# Binaries already newer than hack/tools/go.{mod,sum} are not rebuilt.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$repo/hack/tools"
bin="$repo/bin"
what=${1:-all}

export GOSUMDB=off GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}

version=$(awk '$1 == "sigs.k8s.io/cri-tools" { print $2 }' "$tools/go.mod")
[ -n "$version" ] || { echo "build-tools: sigs.k8s.io/cri-tools not in $tools/go.mod" >&2; exit 1; }
ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$version"

mkdir -p "$bin"

fresh() { # fresh BINARY: true when BINARY exists and is newer than the pins
	[ -x "$1" ] && [ "$1" -nt "$tools/go.mod" ] && [ "$1" -nt "$tools/go.sum" ]
}

build() { # build NAME
	local name=$1 out="$bin/$1" start=$SECONDS
	if fresh "$out"; then
		echo "build-tools: $name $version up to date ($out)"
		return
	fi
	echo "build-tools: building $name $version ..."
	case $name in
	crictl) (cd "$tools" && go build -trimpath -ldflags "$ldflags" -o "$out.tmp" sigs.k8s.io/cri-tools/cmd/crictl) ;;
	critest) (cd "$tools" && go test -c -trimpath -ldflags "$ldflags" -o "$out.tmp" sigs.k8s.io/cri-tools/cmd/critest) ;;
	esac || { rm -f "$out.tmp"; echo "build-tools: building $name failed" >&2; exit 1; }
	mv -f "$out.tmp" "$out"
	echo "build-tools: $name $version -> $out ($((SECONDS - start))s)"
}

# build_versioned VERSION: critest of cri-tools VERSION into the cache.
build_versioned() {
	local v=$1 start=$SECONDS tmp
	local vbin=${PEAPOD_CACHE:-/var/cache/peapod}/cri-tools-$v/bin
	local out=$vbin/critest
	mkdir -p "$vbin"
	if [ -x "$out" ]; then
		echo "build-tools: critest $v cached ($out)" >&2
		echo "$out"
		return
	fi
	echo "build-tools: building critest $v from the module proxy ..." >&2
	tmp=$(mktemp -d "$vbin/../mod.XXXXXX")
	(
		cd "$tmp"
		go mod init peapod.local/critest-build >/dev/null 2>&1
		go get "sigs.k8s.io/cri-tools@$v" >/dev/null
		go test -c -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$v" \
			-o "$out.tmp" sigs.k8s.io/cri-tools/cmd/critest
	) || { rm -rf "$tmp" "$out.tmp"; echo "build-tools: building critest $v failed" >&2; exit 1; }
	rm -rf "$tmp"
	mv -f "$out.tmp" "$out"
	echo "build-tools: critest $v -> $out ($((SECONDS - start))s)" >&2
	echo "$out"
}

case $what in
crictl | critest) build "$what" ;;
all) build crictl; build critest ;;
critest-v[0-9]*.[0-9]*.[0-9]*) build_versioned "${what#critest-}" ;;
*) echo "usage: $0 [crictl|critest|all|critest-vX.Y.Z]" >&2; exit 2 ;;
esac
