#!/usr/bin/env bash
# What `make test`, `make demo` and .ci/run need on a machine of this kind beyond what it comes
# with (Rust by rustup, Go >= 1.26, Python 3, Node.js with npm): a few Debian packages, installed
# when missing (as root; `apt-get update` once first), and rustup's clippy and rustfmt. The tools
# built from source (kube-apiserver, etcd, Prometheus, helm, …) are build-tools.sh's.
# Quick and silent when everything is there; `make test`, `make demo` (through up.sh) and .ci/run
# all call it, so the README's two commands are the install path CI runs.
set -euo pipefail

log() { printf '[prerequisites] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Toolchains a machine of this kind comes with; none of them is in Debian at the version needed.
missing=()
command -v cargo >/dev/null || missing+=("Rust (cargo, by rustup)")
command -v go >/dev/null || missing+=("Go >= 1.26")
command -v python3 >/dev/null || missing+=("Python 3")
command -v npm >/dev/null || missing+=("Node.js with npm")
((${#missing[@]} == 0)) || die "missing toolchains: ${missing[*]} (see README, Prerequisites)"

# Debian packages: command or check -> package.
need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)                 # the control plane's certificates
command -v curl >/dev/null || need_apt+=(curl)                       # readiness probes, the demo
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv) # kubectl, python-tools, flagd-tools venvs
command -v victoria-metrics >/dev/null || need_apt+=(victoria-metrics) # the second Prometheus-API backend (tests/victoria_metrics_e2e.rs)
command -v lua5.4 >/dev/null || need_apt+=(lua5.4)                   # the README's Argo CD health script (tests/kstatus.rs)
if ((${#need_apt[@]})); then
	if [[ $(id -u) != 0 ]]; then
		die "missing Debian packages; as root: apt-get update && apt-get install --no-install-recommends ${need_apt[*]}"
	fi
	log "apt-get install ${need_apt[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# `make lint` (part of `make test`) needs clippy and rustfmt.
if command -v rustup >/dev/null; then
	installed=$(rustup component list --installed 2>/dev/null || true)
	grep -q '^clippy' <<<"$installed" && grep -q '^rustfmt' <<<"$installed" || {
		log "rustup component add clippy rustfmt"
		rustup component add clippy rustfmt
	}
fi
