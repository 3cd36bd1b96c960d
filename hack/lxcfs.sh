#!/usr/bin/env bash
# hack/lxcfs.sh [start|status] [DIR] — lxcfs for peapod's containers.lxcfs
# (README.md "lxcfs"). DIR defaults to /var/lib/lxcfs, peapod's
# containers.lxcfs_dir default.
#
#   start   (`make run` does this) when no lxcfs answers at DIR: unmount a
#           dead lxcfs's mount left there (a killed lxcfs leaves one, and a
#           new lxcfs cannot mount over it), then start lxcfs — through
#           systemd's lxcfs.service where systemd runs (it restarts lxcfs on
#           failure), else as a daemon of its own (setsid), with
#           --enable-cfs so /proc/cpuinfo and cpu/online follow CPU limits
#           too, pid in /run/lxcfs.pid, log in /var/log/lxcfs.log. lxcfs is
#           a host service: it stays up after peapod stops. Running
#           containers follow a restarted lxcfs within a second (peapod
#           re-binds its files), so a restart needs no container restart.
#   status  say whether lxcfs answers at DIR (exit 1 when not).
set -euo pipefail

cmd=${1:-start}
dir=${2:-/var/lib/lxcfs}

up() { [ "$(stat -f -c %t "$dir" 2>/dev/null)" = 65735546 ] && [ -r "$dir/proc/uptime" ] && cat "$dir/proc/uptime" >/dev/null 2>&1; }

case $cmd in
status)
	if up; then echo "lxcfs: up at $dir"; else echo "lxcfs: not up at $dir"; exit 1; fi
	;;
start)
	if up; then exit 0; fi
	command -v lxcfs >/dev/null || { echo "lxcfs: not installed (make deps installs Debian's lxcfs)" >&2; exit 1; }
	# A killed lxcfs leaves its mount behind, answering ENOTCONN.
	if awk -v d="$dir" '$5 == d { for (i = 6; i < NF; i++) if ($i == "-") { if ($(i + 1) == "fuse.lxcfs") f = 1; break } } END { exit !f }' /proc/self/mountinfo; then
		echo "lxcfs: unmounting a dead lxcfs mount at $dir"
		fusermount -u "$dir" 2>/dev/null || umount -l "$dir"
	fi
	mkdir -p "$dir"
	if [ -d /run/systemd/system ] && systemctl cat lxcfs.service >/dev/null 2>&1; then
		systemctl start lxcfs.service
	else
		setsid -f lxcfs --enable-cfs -p /run/lxcfs.pid "$dir" </dev/null >>/var/log/lxcfs.log 2>&1
	fi
	for _ in $(seq 1 100); do
		if up; then echo "lxcfs: up at $dir"; exit 0; fi
		sleep 0.05
	done
	echo "lxcfs: did not come up at $dir (see /var/log/lxcfs.log)" >&2
	exit 1
	;;
*)
	echo "usage: $0 [start|status] [DIR]" >&2
	exit 2
	;;
esac
