#!/usr/bin/env bash
# hack/conformance/run.sh — cri-tools' critest v1.34.0 against a CRI runtime, offline.
#
#   [CRITEST=/path/to/critest] hack/conformance/run.sh [peapod|containerd|containerd-debian|unix:///path/to.sock] [critest flags...]
#
# CRITEST runs another critest binary instead of bin/critest (the v1.34.0 that
# hack/build-tools.sh builds from hack/tools/go.mod), e.g. critest v1.37.0 from
# `hack/build-tools.sh critest-v1.37.0` (make conformance-v1.37).
#
#   peapod      (default) build bin/peapod and run `peapod serve` with private
#               root, state, socket, CNI conf, bridge and /24 subnet; its
#               default handler is runc-userns, the current runc that
#               hack/runc.sh builds (user namespaces; CONFORMANCE_RUNC=debian:
#               Debian's runc 1.1.5 instead)
#   containerd  run the current containerd (hack/cluster/build.sh containerd)
#               the same way (own root, state, socket, CNI conf, registry
#               hosts; hack/containerdref); the reference runtime
#   containerd-debian  the same with Debian's containerd 1.6
#   unix://...  any CRI endpoint already running (its mirrors must send
#               registry.k8s.io, gcr.io, docker.io and, for critest v1.37,
#               k8s.gcr.io to the registry this
#               script starts: set CONFORMANCE_REGISTRY_PORT to pin its port)
#
# Steps: build crictl and critest (hack/build-tools.sh; only crictl when
# CRITEST is set); start a local docker-registry on 127.0.0.1; push the
# images critest pulls under their original repository paths (go run
# ./hack/testimages conformance-push); start the runtime with registry
# mirrors for registry.k8s.io, gcr.io, docker.io, public.ecr.aws and
# k8s.gcr.io (critest v1.37 pulls pause:3.9 from both registry.k8s.io and
# k8s.gcr.io) that point at that registry and never fall back upstream; run
# critest with a JUnit report; print passed / failed /
# skipped and each failure (hack/conformance/summary); remove every pod the
# suite left, stop the daemon and the registry by their PIDs, and delete the
# bridge and the work dir. Extra arguments go to critest, e.g.
# -ginkgo.focus='Streaming'. CONFORMANCE_KEEP=1 keeps the work dir (logs,
# junit.xml). Exit status: 0 when no spec failed.
#
# Nothing leaves the machine: the registry, the streaming servers and the
# pods' bridge are all local; critest's own image names resolve only through
# the runtime's mirrors.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
target=${1:-peapod}
[ $# -gt 0 ] && shift
export GOFLAGS=${GOFLAGS:--buildvcs=false}
start_time=$SECONDS

log() { echo "conformance: $*" >&2; }
die() { log "$*"; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (namespaces, mounts, cgroups)"

work=$(mktemp -d /tmp/peapod-conformance.XXXXXX)
# A pod with its own user namespace runs as an unprivileged host uid that
# must walk to its bundle below here (peapod's own dirs are 0711).
chmod 711 "$work"
daemon_pid=
sock=
bridge=pcf$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')

had_peapod_cgroup=$(ls -d /sys/fs/cgroup/*/peapod 2>/dev/null | head -1 || true)

cleanup() {
	local rc=$?
	set +e
	if [ -n "$sock" ] && [ -S "$sock" ] && [ -n "$daemon_pid" ]; then
		# Remove what the suite left (it removes its own pods; a failed
		# spec may not).
		"$repo/bin/crictl" --runtime-endpoint "unix://$sock" --timeout 60s rmp -af >/dev/null 2>&1
	fi
	if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
		kill -TERM "$daemon_pid"
		for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$daemon_pid" 2>/dev/null && kill -KILL "$daemon_pid"
		wait "$daemon_pid" 2>/dev/null
	fi
	bash "$repo/hack/registry.sh" stop "$work/registry" >/dev/null 2>&1
	ip link del "$bridge" 2>/dev/null
	# peapod's default cgroup parent, when this run made it (empty by now).
	if [ -z "$had_peapod_cgroup" ]; then
		rmdir /sys/fs/cgroup/*/peapod 2>/dev/null
	fi
	# The agent's (empty) QoS tree under its own cgroup root.
	for t in kubepods/burstable kubepods/besteffort kubepods ""; do
		rmdir /sys/fs/cgroup/*/"$bridge"-agent/$t 2>/dev/null
	done
	# Host dirs the reference containerd made, and containerd 2's default
	# cgroup parent for critest's pods, when this run made them.
	for m in ${containerd_made_dirs:-}; do rmdir "$m" 2>/dev/null; done
	if [ -n "${daemon_pid:-}" ] && [ "$target" != peapod ] && [ -z "${had_k8s_cgroup:-}" ]; then
		rmdir /sys/fs/cgroup/*/k8s.io 2>/dev/null
	fi
	# Mounts under the work dir (none should remain), deepest first.
	awk -v d="$work" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
		log "unmounting leftover $m"
		umount -l "$m"
	done
	if [ "${CONFORMANCE_KEEP:-}" = 1 ]; then
		log "kept $work"
	else
		rm -rf "$work"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Tools.
critest=${CRITEST:-$repo/bin/critest}
if [ -n "${CRITEST:-}" ]; then
	[ -x "$CRITEST" ] || die "CRITEST=$CRITEST is not an executable file"
	bash hack/build-tools.sh crictl >&2
else
	bash hack/build-tools.sh all >&2
fi
log "critest: $critest ($("$critest" -version 2>/dev/null | awk '/^critest version/ { print $3 }'))"

# 2. Registry with the images critest pulls.
port=${CONFORMANCE_REGISTRY_PORT:-}
if [ -z "$port" ]; then
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 20000))
		ss -Hltn "sport = :$p" | grep -q . || { port=$p; break; }
	done
fi
[ -n "$port" ] || die "no free port for the registry"
bash hack/registry.sh start "$work/registry" "$port" >&2
reg=127.0.0.1:$port
mkdir -p "$work/bin"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/bin/ctrbin" ./hack/testimages/ctrbin
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/bin/peapod-pause" ./cmd/peapod-pause
# Debian's dynamic busybox (its sh execs external commands, unlike
# busybox-static's) for e2e-test-images/busybox, so MaskedPaths can be
# checked; fetched once with apt into _output/ (busybox and busybox-static
# conflict as installed packages). Without it that one spec fails.
shell_args=()
cache=$repo/_output/conformance
if [ ! -x "$cache/busybox/bin/busybox" ]; then
	mkdir -p "$cache"
	(cd "$cache" && rm -f busybox_*.deb && apt-get download busybox >/dev/null 2>&1 &&
		dpkg-deb -x busybox_*.deb "$cache/busybox.tmp" && rm -rf "$cache/busybox" && mv "$cache/busybox.tmp" "$cache/busybox") ||
		log "could not fetch Debian's busybox package: MaskedPaths will fail"
fi
if [ -x "$cache/busybox/bin/busybox" ]; then
	libs=$(ldd "$cache/busybox/bin/busybox" | awk '$2 == "=>" { print $3 } $1 ~ /^\// { print $1 }' | paste -sd, -)
	shell_args=(--shell-busybox "$cache/busybox/bin/busybox" --shell-libs "$libs")
fi
go run ./hack/testimages conformance-push --registry "$reg" --ctrbin "$work/bin/ctrbin" --pause "$work/bin/peapod-pause" "${shell_args[@]}" >"$work/images.txt"
log "pushed $(wc -l <"$work/images.txt") images to $reg"

# 3. CNI: a bridge and /24 of our own.
subnet=
routes=$(ip -4 route)
for _ in $(seq 50); do
	s="10.253.$((RANDOM % 256))."
	grep -qF "$s" <<<"$routes" || { subnet=${s}0/24; break; }
done
[ -n "$subnet" ] || die "no free subnet"
mkdir -p "$work/cni"
cat >"$work/cni/10-conformance.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "conformance-$bridge", "plugins": [
  {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$subnet"}]], "dataDir": "$work/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
wait_socket() { # wait_socket SOCK LOG
	for _ in $(seq 300); do
		if [ -S "$1" ] && "$repo/bin/crictl" --runtime-endpoint "unix://$1" --timeout 2s version >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$daemon_pid" 2>/dev/null || { tail -20 "$2" >&2; die "daemon exited during start-up"; }
		sleep 0.1
	done
	tail -20 "$2" >&2
	die "daemon did not answer on $1"
}

# 4. The runtime. Every registry critest names goes to the local one.
mirrored="registry.k8s.io gcr.io docker.io public.ecr.aws k8s.gcr.io"
case $target in
peapod)
	make -s build >&2
	# The current runc (hack/runc.sh, cached) is this run's default
	# handler, runc-userns: critest runs every spec on one handler, and its
	# UserNamespaces specs need idmapped mounts, which Debian's runc 1.1.5
	# lacks (README.md, "User namespaces"). CONFORMANCE_RUNC=debian keeps
	# Debian's runc as the default (those specs then skip).
	userns_runc=
	if [ "${CONFORMANCE_RUNC:-current}" != debian ]; then
		userns_runc=$(bash hack/runc.sh)/runc || die "hack/runc.sh failed (CONFORMANCE_RUNC=debian runs on Debian's runc alone)"
	fi
	sock=$work/peapod/run/peapod.sock
	mkdir -p "$work/peapod"
	{
		printf 'root = "%s"\nstate = "%s"\n' "$work/peapod/root" "$work/peapod/run"
		printf '[cri]\nsocket = "%s"\n' "$sock"
		[ -z "$userns_runc" ] || printf 'default_runtime = "runc-userns"\n'
		printf '[http]\naddress = "127.0.0.1:0"\n'
		printf '[cni]\nconf_dir = "%s"\nbridge = "%s"\nsubnet = "%s"\n' "$work/cni" "$bridge" "$subnet"
		printf '[runtimes.runc]\npath = "/usr/sbin/runc"\nroot = "%s"\n' "$work/peapod/run/runc"
		printf '[runtimes.crun]\npath = "/usr/bin/crun"\nroot = "%s"\n' "$work/peapod/run/crun"
		if [ -n "$userns_runc" ]; then
			printf '[runtimes.runc-userns]\npath = "%s"\nroot = "%s"\n' "$userns_runc" "$work/peapod/run/runc-userns"
		fi
		printf '[agent]\nmanifests_dir = "%s"\npod_logs_dir = "%s"\ncgroup_root = "/%s-agent"\n' "$work/peapod/manifests" "$work/peapod/pods" "$bridge"
		for h in $mirrored; do
			printf '[registry.mirrors."%s"]\nendpoints = ["http://%s"]\n' "$h" "$reg"
		done
	} >"$work/peapod/peapod.toml"
	"$repo/bin/peapod" serve --config "$work/peapod/peapod.toml" >"$work/daemon.log" 2>&1 &
	daemon_pid=$!
	wait_socket "$sock" "$work/daemon.log"
	endpoint=unix://$sock
	;;
containerd | containerd-debian)
	d=$work/containerd
	sock=$d/containerd.sock
	which=current
	[ "$target" = containerd-debian ] && which=debian
	# The config every reference run here shares (hack/containerdref):
	# own root, state, sockets; registry hosts failing closed.
	mapfile -t ref < <(cd "$repo" && go run ./hack/containerdref/write -which "$which" -dir "$d" \
		-cni-conf-dir "$work/cni" -registry "$reg" -mirrored "${mirrored// /,}")
	[ "${#ref[@]}" -ge 3 ] || die "containerdref/write gave no config"
	containerd_made_dirs=${ref[3]:-}
	had_k8s_cgroup=$(ls -d /sys/fs/cgroup/*/k8s.io 2>/dev/null || true)
	PATH=${ref[1]} "${ref[0]}" --config "${ref[2]}" >"$work/daemon.log" 2>&1 &
	daemon_pid=$!
	wait_socket "$sock" "$work/daemon.log"
	endpoint=unix://$sock
	;;
unix://*)
	endpoint=$target
	;;
*) die "unknown target $target (peapod, containerd, containerd-debian or unix:///path)" ;;
esac
log "runtime: $target at $endpoint (setup $((SECONDS - start_time))s)"

# 5. critest.
suite_start=$SECONDS
set +e
"$critest" -runtime-endpoint "$endpoint" -image-endpoint "$endpoint" \
	-ginkgo.junit-report "$work/junit.xml" -ginkgo.no-color "$@" >"$work/critest.log" 2>&1
crit_rc=$?
set -e
log "critest exit $crit_rc after $((SECONDS - suite_start))s (log: $work/critest.log)"
if [ ! -s "$work/junit.xml" ]; then
	tail -40 "$work/critest.log" >&2
	die "critest wrote no report"
fi
log "$target: total $((SECONDS - start_time))s"
# The summary comes last: its "critest: N passed, N failed, N skipped" line
# is the run's closing line.
set +e
go run ./hack/conformance/summary ${CONFORMANCE_VERBOSE:+-v} "$work/junit.xml"
rc=$?
set -e
exit $rc
