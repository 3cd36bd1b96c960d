#!/usr/bin/env bash
# hack/run.sh — README command 1 (`make run`), after deps are installed and
# bin/ is built: lay out a busybox image built locally from Debian's
# busybox-static, start `peapod serve` on its embedded defaults, import the
# image through the running daemon (no registry needed), and stay in the
# foreground until Ctrl-C / SIGTERM, which stops the daemon by its PID.
# Containers keep running under conmon when peapod stops, as designed.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p _output
archive=_output/busybox-oci.tar
go run ./hack/testimages oci-archive --out "$archive"

# The current runc (make runc) as a second handler, runc-userns, for pods
# with their own user namespace (README.md, "User namespaces"): a config
# file that holds only that table, unless the caller or
# /etc/peapod/peapod.toml says otherwise.
args=("$@")
runc_userns=${PEAPOD_CACHE:-/var/cache/peapod}/runc-v1.5.3/bin/runc
if [ -x "$runc_userns" ] && [ ! -e /etc/peapod/peapod.toml ] && [[ " $* " != *" --config"* ]]; then
	printf '[runtimes.runc-userns]\npath = "%s"\n' "$runc_userns" >_output/run-peapod.toml
	args=(--config _output/run-peapod.toml "${args[@]}")
	echo "run: handler runc-userns = $runc_userns (runtime_handler runc-userns, or a RuntimeClass with that handler, for hostUsers: false pods)"
fi
bin/peapod serve "${args[@]}" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' INT TERM EXIT

# The admin socket appears once the daemon answers.
for _ in $(seq 1 200); do
	[ -S /run/peapod/admin.sock ] && break
	kill -0 "$pid" 2>/dev/null || { echo "run: peapod serve exited during start-up" >&2; exit 1; }
	sleep 0.05
done
bin/peapod images import "$archive"
cat <<EOT

peapod is serving on unix:///run/peapod/peapod.sock (metrics on http://127.0.0.1:9315/metrics).
Try:  crictl --runtime-endpoint unix:///run/peapod/peapod.sock images     (make tools builds crictl into bin/)
Ctrl-C stops the daemon.
EOT
wait "$pid"
