#!/usr/bin/env bash
# hack/build-tools.sh [crictl|critest|all] — build the CRI client tools that
# peapod's conformance tests and benchmarks drive, into bin/ of the repo.
#
#   crictl  sigs.k8s.io/cri-tools/cmd/crictl  (a `tool` directive in hack/tools/go.mod)
#   critest sigs.k8s.io/cri-tools/cmd/critest (a test binary: `go test -c`)
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

case $what in
crictl | critest) build "$what" ;;
all) build crictl; build critest ;;
*) echo "usage: $0 [crictl|critest|all]" >&2; exit 2 ;;
esac
