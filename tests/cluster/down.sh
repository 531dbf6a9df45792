#!/usr/bin/env bash
# Stops exactly the processes tests/cluster/up.sh started (by their pid files, never by
# name) and removes the cluster's state and temp directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${CLUSTER_STATE:-$repo/target/cluster}

[[ -d $state ]] || exit 0
for name in prometheus kube-apiserver etcd; do
	pidfile=$state/$name.pid
	[[ -f $pidfile ]] || continue
	pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
done
if [[ -f $state/tmpdir ]]; then
	tmp=$(cat "$state/tmpdir")
	[[ $tmp == */rollguard-cluster.* ]] && rm -rf "$tmp"
fi
rm -rf "$state"
echo "[cluster-down] stopped" >&2
