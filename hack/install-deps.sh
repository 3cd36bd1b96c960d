#!/usr/bin/env bash
# hack/install-deps.sh [runtime|test|bench|build] — install the Debian packages peapod needs.
#
#   runtime (default)  what `peapod serve` uses on a node:
#                        runc, crun          OCI runtimes (runc is the default handler; Debian's crun
#                                            1.8.1 refuses hybrid-cgroup hosts, see shared/NOTES.md)
#                        conmon              one monitor per container
#                        containernetworking-plugins  bridge, host-local, loopback, portmap (/usr/lib/cni)
#                        iptables            portmap and the bridge plugin's ipMasq run iptables(-restore)
#                        iproute2            ip netns / ip link
#                        e2fsprogs, mount, util-linux   mkfs.ext4, losetup/mount, nsenter/unshare
#                        lxcfs               containers.lxcfs: container-aware /proc files (hack/lxcfs.sh
#                                            starts it; its Debian service is held back like the others)
#   test               runtime, plus what the tests use:
#                        docker-registry     local registry (hack/registry.sh, hack/testenv)
#                        busybox-static      /bin/busybox, the source of every test image
#                        prometheus          a real Prometheus scrapes peapod in test/e2e/metrics_test.go
#                        containerd          Debian's 1.6: peapod-agent runs on it (test/e2e), the reference
#   bench              test (hack/bench also runs containerd v2.4.2, built by make containerd)
#   build              what `make runc` (hack/runc.sh) compiles runc with: gcc, libc6-dev,
#                        libseccomp-dev, pkg-config (cgo with libseccomp)
#
# Idempotent: installs only what is missing; `apt-get update` runs at most
# once, and only when a missing package has no install candidate (empty or
# stale package lists) or an install fails on stale lists. Non-interactive
# (CI has no stdin); run as root (or with password-less sudo). Services that
# packages would start (docker-registry's, prometheus', containerd's) are held back, so nothing listens
# on :5000 afterwards. Quiet on success; apt's output is shown on failure.
set -euo pipefail

runtime_pkgs=(runc crun conmon containernetworking-plugins iptables iproute2 e2fsprogs mount util-linux lxcfs)
test_pkgs=(docker-registry busybox-static prometheus containerd skopeo)
bench_pkgs=()
build_pkgs=(gcc libc6-dev libseccomp-dev pkg-config)

# What must exist afterwards, checked whatever apt said.
runtime_files=(/usr/sbin/runc /usr/bin/crun /usr/bin/conmon /usr/lib/cni/bridge /usr/lib/cni/host-local
	/usr/lib/cni/loopback /usr/lib/cni/portmap /usr/sbin/iptables /usr/sbin/iptables-restore /usr/sbin/ip
	/usr/sbin/mkfs.ext4 /usr/sbin/losetup /usr/bin/nsenter /usr/bin/lxcfs)
test_files=(/usr/bin/docker-registry /bin/busybox /usr/bin/prometheus /usr/bin/containerd /usr/bin/containerd-shim-runc-v2 /usr/bin/skopeo)
bench_files=()
build_files=(/usr/bin/gcc /usr/bin/pkg-config /usr/include/seccomp.h)

log() { echo "install-deps: $*"; }
die() { echo "install-deps: error: $*" >&2; exit 1; }

case ${1:-runtime} in
runtime) pkgs=("${runtime_pkgs[@]}") files=("${runtime_files[@]}") ;;
test) pkgs=("${runtime_pkgs[@]}" "${test_pkgs[@]}") files=("${runtime_files[@]}" "${test_files[@]}") ;;
bench) pkgs=("${runtime_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") files=("${runtime_files[@]}" "${test_files[@]}" "${bench_files[@]}") ;;
build) pkgs=("${build_pkgs[@]}") files=("${build_files[@]}") ;;
-h | --help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "usage: $0 [runtime|test|bench|build]" >&2; exit 2 ;;
esac

command -v apt-get >/dev/null && command -v dpkg-query >/dev/null ||
	die "apt-get not found: this script installs Debian packages (Debian 12 bookworm)"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null && sudo -n true 2>/dev/null ||
		die "must run as root (or with password-less sudo)"
	SUDO=(sudo -n)
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-q -y -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
aptlog=$(mktemp /tmp/peapod-install-deps.XXXXXX.log)
policy_rc_d=/usr/sbin/policy-rc.d
own_policy=
cleanup() {
	[ -z "$own_policy" ] || "${SUDO[@]}" rm -f "$policy_rc_d"
	rm -f "$aptlog"
}
trap cleanup EXIT

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
has_candidate() { # (no pipe into grep -q: with pipefail, apt-cache's SIGPIPE would count)
	local out
	out=$(apt-cache policy "$1" 2>/dev/null) || return 1
	[[ $out == *"Candidate: "[!\(]* ]]
}

run_apt() { # run_apt WHAT ARGS...: apt-get quietly; its output on failure
	if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" "$@" >"$aptlog" 2>&1 </dev/null; then
		echo "install-deps: apt-get $* failed:" >&2
		tail -n 30 "$aptlog" >&2
		return 1
	fi
}

updated=
apt_update() {
	[ -z "$updated" ] || return 0
	log "apt-get update"
	run_apt update || die "apt-get update failed (no network to the Debian mirror?)"
	updated=1
}

missing=()
for p in "${pkgs[@]}"; do
	installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
	for p in "${missing[@]}"; do
		has_candidate "$p" || { apt_update; break; }
	done
	for p in "${missing[@]}"; do
		has_candidate "$p" || die "no Debian package '$p' in the configured apt sources (is this Debian 12?)"
	done
	# Keep package scripts from starting services (docker-registry's would
	# listen on :5000 with auth); containers usually have this file already.
	if [ ! -e "$policy_rc_d" ]; then
		printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy_rc_d" >/dev/null
		"${SUDO[@]}" chmod 755 "$policy_rc_d"
		own_policy=1
	fi
	log "installing ${missing[*]}"
	if ! run_apt install --no-install-recommends "${missing[@]}"; then
		[ -z "$updated" ] || die "apt-get install ${missing[*]} failed"
		log "retrying after apt-get update (stale package lists?)"
		apt_update
		run_apt install --no-install-recommends "${missing[@]}" || die "apt-get install ${missing[*]} failed"
	fi
fi

absent=()
for f in "${files[@]}"; do
	[ -e "$f" ] || absent+=("$f")
done
[ ${#absent[@]} -eq 0 ] || die "still missing after install: ${absent[*]}"
log "ok: ${pkgs[*]}"
