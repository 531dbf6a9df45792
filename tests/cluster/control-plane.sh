#!/usr/bin/env bash
# The command lines of etcd and kube-apiserver, in one place: up.sh starts the shared local
# control plane with them, and the fault tests (tests/common/plane.rs) start private ones on
# their own loopback ports, which they may kill, pause and compact without touching anyone
# else's. Sourced, each function leaves the command line in the array CMD; run as a script,
# `control-plane.sh etcd|apiserver ARGS...` execs it (so the caller's child is the binary).
# shellcheck shell=bash

etcd_cmd() { # data_dir client_port peer_port
	local dir=$1 client=$2 peer=$3
	CMD=("$TOOLS_BIN/etcd" --name rollguard-test --data-dir "$dir"
		--listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client"
		--listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer"
		--initial-cluster "rollguard-test=http://127.0.0.1:$peer"
		--unsafe-no-fsync --listen-metrics-urls "" --log-level warn)
}

apiserver_cmd() { # etcd_port api_port cert_dir pki_dir [extra kube-apiserver flags...]
	local etcd=$1 api=$2 certs=$3 pki=$4
	shift 4
	CMD=("$TOOLS_BIN/kube-apiserver"
		--etcd-servers "http://127.0.0.1:$etcd"
		--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api"
		--cert-dir "$certs"
		--tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key"
		--client-ca-file "$pki/ca.crt"
		--authorization-mode RBAC
		--service-account-issuer "https://127.0.0.1:$api"
		--service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key"
		--service-cluster-ip-range 10.0.0.0/24
		--disable-admission-plugins ServiceAccount
		--allow-privileged=true
		--endpoint-reconciler-type none
		--profiling=false
		"$@")
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	# shellcheck source=versions.sh
	source "$(cd "$(dirname "$0")" && pwd)/versions.sh"
	what=$1
	shift
	"${what}_cmd" "$@"
	exec "${CMD[@]}"
fi
