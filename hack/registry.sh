#!/usr/bin/env bash
# hack/registry.sh — a local, offline image registry for peapod's tests.
#
#   hack/registry.sh start  DIR [PORT]   start Debian's docker-registry on 127.0.0.1:PORT (default 5000),
#                                        storage in DIR/data, config DIR/config.yml, log DIR/registry.log,
#                                        PID in DIR/registry.pid; returns once GET /v2/ answers
#   hack/registry.sh stop   DIR          stop the registry whose PID is in DIR/registry.pid (that PID only)
#   hack/registry.sh status DIR          exit 0 and print the address when it runs, exit 3 when not
#   hack/registry.sh up     DIR [PORT]   start, then push the test images (go run ./hack/testimages push)
#
# The registry makes no outbound connection: no proxy (pull-through) section,
# no notifications, no auth, health checks off, and it starts with an empty
# environment so no REGISTRY_* variable can switch any of those on. It binds
# 127.0.0.1 only. Install it with: hack/install-deps.sh test
set -euo pipefail
trap '' PIPE # a peer that closes early must not kill the script

REGISTRY_BIN=${REGISTRY_BIN:-/usr/bin/docker-registry}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "registry.sh: $*" >&2; exit 1; }
usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 2 ] || usage
cmd=$1
dir=$2
port=${3:-5000}
pidfile=$dir/registry.pid

# pid_alive: the PID in DIR/registry.pid names a live docker-registry process
# (a recycled PID of another program does not count).
pid_alive() {
	[ -s "$pidfile" ] || return 1
	local pid exe
	pid=$(cat "$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[ -d "/proc/$pid" ] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
	[ "$exe" = "$(readlink -f "$REGISTRY_BIN")" ] || return 1
	# a zombie has exited already
	[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

# pid_state: "alive" (the registry runs), "execing" (the started process
# exists but has not exec'd the registry yet: $! is the forked shell, then
# env, for a moment) or "dead". One reading of /proc/PID/exe decides: two
# readings (alive? then execing?) raced with the exec in between and
# declared a starting registry dead.
pid_state() {
	local pid exe
	pid=$(cat "$pidfile" 2>/dev/null) || { echo dead; return; }
	[[ $pid =~ ^[0-9]+$ ]] && [ -d "/proc/$pid" ] || { echo dead; return; }
	[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || { echo dead; return; }
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
	if [ "$exe" = "$(readlink -f "$REGISTRY_BIN")" ]; then
		echo alive
	elif [ -d "/proc/$pid" ]; then
		echo execing
	else
		echo dead
	fi
}

addr_of() { sed -n 's/^  addr: //p' "$dir/config.yml" 2>/dev/null; }

# port_taken HOST PORT: something already accepts connections there.
port_taken() { { exec 8<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1; exec 8<&- 8>&-; }

# v2_answers HOST PORT: GET /v2/ returns 200 (plain bash, no curl needed).
v2_answers() {
	local line
	{ exec 9<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1
	printf 'GET /v2/ HTTP/1.0\r\nHost: %s:%s\r\n\r\n' "$1" "$2" >&9 2>/dev/null || { exec 9<&- 9>&-; return 1; }
	IFS= read -r -t 2 line <&9 || line=
	exec 9<&- 9>&-
	[[ $line == HTTP/1.?" 200"* ]]
}

start() {
	[[ $port =~ ^[0-9]+$ ]] || die "bad port: $port"
	[ -x "$REGISTRY_BIN" ] || die "$REGISTRY_BIN not found: run hack/install-deps.sh test (Debian package docker-registry)"
	if pid_alive; then
		echo "registry.sh: already running (pid $(cat "$pidfile"), $(addr_of))"
		return 0
	fi
	port_taken 127.0.0.1 "$port" && die "127.0.0.1:$port is already in use"
	mkdir -p "$dir/data"
	dir=$(cd "$dir" && pwd)
	pidfile=$dir/registry.pid
	cat >"$dir/config.yml" <<YAML
# written by hack/registry.sh: local test registry, no outbound connections
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: peapod-local-test-registry
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
YAML
	local start_ns=$(date +%s%N)
	# env -i: no REGISTRY_* overrides, no proxy variables. env execs, so $!
	# is the registry's own PID.
	env -i HOME=/nonexistent "$REGISTRY_BIN" serve "$dir/config.yml" \
		</dev/null >"$dir/registry.log" 2>&1 &
	echo $! >"$pidfile"
	local i
	for ((i = 0; i < 200; i++)); do
		case $(pid_state) in
		execing)
			sleep 0.05
			continue
			;;
		dead)
			tail -n 20 "$dir/registry.log" >&2 || true
			rm -f "$pidfile"
			die "docker-registry exited at start (port $port in use?); log: $dir/registry.log"
			;;
		esac
		if v2_answers 127.0.0.1 "$port"; then
			echo "registry.sh: 127.0.0.1:$port up (pid $(cat "$pidfile"), $(( ($(date +%s%N) - start_ns) / 1000000 )) ms)"
			return 0
		fi
		sleep 0.05
	done
	stop
	die "127.0.0.1:$port/v2/ did not answer within 10 s; log: $dir/registry.log"
}

stop() {
	if ! pid_alive; then
		rm -f "$pidfile"
		echo "registry.sh: not running ($dir)"
		return 0
	fi
	local pid i
	pid=$(cat "$pidfile")
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		pid_alive || break
		sleep 0.05
	done
	if pid_alive; then
		kill -KILL "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			pid_alive || break
			sleep 0.05
		done
	fi
	pid_alive && die "pid $pid did not exit"
	rm -f "$pidfile"
	echo "registry.sh: stopped (pid $pid)"
}

case $cmd in
start) start ;;
stop) stop ;;
status)
	if pid_alive; then
		echo "running: $(addr_of) (pid $(cat "$pidfile"))"
	else
		echo "not running"
		exit 3
	fi
	;;
up)
	start
	(cd "$repo" && go run ./hack/testimages push --registry "$(addr_of)")
	;;
*) usage ;;
esac
