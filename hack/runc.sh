#!/usr/bin/env bash
# hack/runc.sh — build a current runc (opencontainers/runc $RUNC_VERSION, v1.5.3
# by default) from the Go module proxy into a cache outside the work tree keyed
# by version, as hack/cluster/build.sh does for Kubernetes and containerd:
#
#   $PEAPOD_CACHE/runc-$RUNC_VERSION/bin/runc      (PEAPOD_CACHE: /var/cache/peapod)
#
# Why: Debian's runc 1.1.5 has no idmapped mounts, so it cannot run pods with
# `hostUsers: false` (CRI user namespaces). peapod registers this runc as the
# handler `runc-userns` when the file exists (README.md, "User namespaces").
#
# How: a writable copy of the module (its go.mod has no replaces; go.sum comes
# with it), cgo with libseccomp (Debian's libseccomp-dev, found through
# pkg-config) and runc's own release tags minus libpathrs (a Rust library
# Debian 12 does not package): `-tags "seccomp urfave_cli_no_docs"`, a dynamic
# PIE like `make runc`. The version comes from the module's VERSION file
# (embedded), the commit is unknown offline. A binary already in the cache is
# never rebuilt (~1 min cold on 2 cores). Checks that `runc features` reports
# idmapped mounts, then prints the bin dir.
set -euo pipefail

RUNC_VERSION=${RUNC_VERSION:-v1.5.3}
PEAPOD_CACHE=${PEAPOD_CACHE:-/var/cache/peapod}
export PATH=/usr/local/go/bin:$PATH
export GOSUMDB=off GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=1

log() { echo "runc: $*" >&2; }
die() { echo "runc: error: $*" >&2; exit 1; }

dir=$PEAPOD_CACHE/runc-$RUNC_VERSION
bin=$dir/bin
if [ ! -x "$bin/runc" ]; then
	command -v gcc >/dev/null || die "runc needs cgo: no gcc (apt-get install gcc libc6-dev)"
	pkg-config --exists libseccomp 2>/dev/null ||
		die "runc needs libseccomp through cgo: apt-get install -y libseccomp-dev pkg-config"
	start=$SECONDS
	mkdir -p "$bin"
	tmp=$(mktemp -d "$dir/src.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	log "downloading github.com/opencontainers/runc@$RUNC_VERSION from the module proxy"
	src=$(cd "$tmp" && go mod download -json "github.com/opencontainers/runc@$RUNC_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$src" ] && [ -d "$src" ] || die "go mod download gave no module dir for runc@$RUNC_VERSION"
	cp -r "$src" "$tmp/runc"
	chmod -R u+w "$tmp/runc"
	log "building runc $RUNC_VERSION (cgo, -tags seccomp)"
	(cd "$tmp/runc" && go build -trimpath -buildmode=pie -tags "seccomp urfave_cli_no_docs" \
		-ldflags "-X main.gitCommit=$RUNC_VERSION-module-proxy" -o "$bin/.runc.tmp" .) ||
		die "runc $RUNC_VERSION build failed"
	mv -f "$bin/.runc.tmp" "$bin/runc"
	log "runc $RUNC_VERSION built in $((SECONDS - start))s"
fi
"$bin/runc" features | tr -d ' \n' | grep -q '"idmap":{"enabled":true}' ||
	die "$bin/runc features does not report idmapped mounts"
echo "$bin"
