#!/usr/bin/env bash
# `make demo-down`: stops every process `make demo` started — the operator and the shop
# (which also hosts the webhook receiver) — by the pid files in target/demo/, and removes
# the demo's Prometheus scrape targets. It leaves the local control plane (`make
# cluster-down` stops that) and the demo's objects in namespace `shop` (the next
# `make demo` replaces them).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
demo_dir=$repo/target/demo
quiet=${1:-}
say() { [[ $quiet == --quiet ]] || printf '[demo-down] %s\n' "$*"; }

[[ -d $demo_dir ]] || exit 0
for pidfile in "$demo_dir"/*.pid; do
	[[ -f $pidfile ]] || continue
	name=$(basename "$pidfile" .pid)
	pid=$(cat "$pidfile")
	# Only a process that is still ours: a pid reused by something else is left alone.
	if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$repo/target/debug\|target/debug/"; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		say "stopped $name (pid $pid)"
	fi
	rm -f "$pidfile"
done
if [[ -f $demo_dir/sd-files ]]; then
	while read -r file; do
		[[ $file == */rollguard-demo-*.json ]] && rm -f "$file"
	done <"$demo_dir/sd-files"
	rm -f "$demo_dir/sd-files"
fi
say "done; the local control plane is still up (make cluster-down stops it)"
