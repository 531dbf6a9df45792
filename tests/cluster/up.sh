#!/usr/bin/env bash
# Starts the local control plane in the background: etcd, kube-apiserver (RBAC, client
# certificates, service-account tokens) and Prometheus 3, all on loopback. Idempotent: if
# everything is already up it only rewrites nothing and exits 0. Writes target/cluster/env.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.sh
source "$here/versions.sh"
# shellcheck source=control-plane.sh
source "$here/control-plane.sh"

state=${CLUSTER_STATE:-$repo/target/cluster}
etcd_port=${ETCD_PORT:-23790}
etcd_peer_port=${ETCD_PEER_PORT:-23800}
api_port=${APISERVER_PORT:-26443}
prom_port=${PROMETHEUS_PORT:-29090}

log() { printf '[cluster-up] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

alive() { [[ -f $state/$1.pid ]] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

# What this cluster runs: a cluster started with other pins (an older checkout, Debian's
# Prometheus 2) is restarted, so tests never run against tools the pins do not name.
pins="tools=$TOOLS_VERSION_TAG prometheus=$PROMETHEUS_VERSION"
if alive etcd && alive kube-apiserver && alive prometheus && [[ -f $state/env ]]; then
	if [[ $(cat "$state/pins" 2>/dev/null) == "$pins" ]]; then
		log "already up ($state/env)"
		exit 0
	fi
	log "the running cluster was started with other tools ($(cat "$state/pins" 2>/dev/null || echo 'before pins were recorded'); now $pins): restarting it"
fi
# A partial cluster (e.g. one process died) is torn down and started fresh.
if [[ -d $state ]]; then
	CLUSTER_STATE=$state "$here/down.sh"
fi

# Debian packages and rustup components when missing, then the tools built from source.
"$here/prerequisites.sh"
"$here/build-tools.sh" all
[[ -x $TOOLS_BIN/prometheus ]] || die "no $TOOLS_BIN/prometheus (tests/cluster/build-tools.sh prometheus)"
command -v openssl >/dev/null || die "openssl is not installed"

mkdir -p "$state"
# On any failure, leave nothing running.
trap '[[ $? -eq 0 ]] || CLUSTER_STATE=$state "$here/down.sh"' EXIT
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rollguard-cluster.XXXXXX")
echo "$tmp" >"$state/tmpdir"
pki=$state/pki
mkdir -p "$pki" "$state/logs" "$state/users" "$state/prometheus-sd"

# --- certificates -----------------------------------------------------------------------
openssl_quiet() { openssl "$@" 2>/dev/null; }
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=rollguard-test-ca" \
	-keyout "$pki/ca.key" -out "$pki/ca.crt"
sign() { # name subject [extfile]
	local name=$1 subj=$2 ext=${3:-}
	openssl_quiet req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$pki/$name.key" -out "$pki/$name.csr"
	openssl_quiet x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
		-days 3650 -out "$pki/$name.crt" ${ext:+-extfile "$ext"}
}
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$pki/serving.ext"
printf 'extendedKeyUsage=clientAuth\n' >"$pki/client.ext"
sign serving "/CN=127.0.0.1" "$pki/serving.ext"
sign admin "/CN=admin/O=system:masters" "$pki/client.ext"
sign alice "/CN=alice" "$pki/client.ext"
sign bob "/CN=bob" "$pki/client.ext"
openssl_quiet genrsa -out "$pki/sa.key" 2048
openssl_quiet rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

kubeconfig() { # user -> path
	local user=$1 out=$2
	cat >"$out" <<KC
apiVersion: v1
kind: Config
clusters:
- name: rollguard-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$user.crt
    client-key: $pki/$user.key
contexts:
- name: $user@rollguard-test
  context: {cluster: rollguard-test, user: $user, namespace: default}
current-context: $user@rollguard-test
KC
}
kubeconfig admin "$state/admin.kubeconfig"
kubeconfig alice "$state/users/alice.kubeconfig"
kubeconfig bob "$state/users/bob.kubeconfig"

# --- processes ----------------------------------------------------------------------------
start() { # name command...
	local name=$1
	shift
	setsid "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$state/$name.pid"
}

etcd_cmd "$tmp/etcd" "$etcd_port" "$etcd_peer_port"
start etcd "${CMD[@]}"

wait_for() { # what seconds command...
	local what=$1 secs=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ! alive "$what"; then
			log "$what exited; last log lines:"
			tail -n 30 "$state/logs/$what.log" >&2 || true
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log "$what did not become ready within ${secs}s; last log lines:"
			tail -n 30 "$state/logs/$what.log" >&2 || true
			return 1
		fi
		sleep 0.2
	done
}
wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health" || die "etcd did not start"

apiserver_cmd "$etcd_port" "$api_port" "$tmp/apiserver" "$pki"
start kube-apiserver "${CMD[@]}"
wait_for kube-apiserver 120 curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
	"https://127.0.0.1:$api_port/readyz" || die "kube-apiserver did not become ready"

cat >"$state/prometheus.yml" <<PY
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: rollguard-test
    file_sd_configs:
      - files: ['$state/prometheus-sd/*.json', '$state/prometheus-sd/*.yml', '$state/prometheus-sd/*.yaml']
        refresh_interval: 1s
PY
start prometheus "$TOOLS_BIN/prometheus" --config.file "$state/prometheus.yml" --storage.tsdb.path "$tmp/prometheus" \
	--web.listen-address "127.0.0.1:$prom_port" --storage.tsdb.retention.time 2h --log.level warn
wait_for prometheus 60 curl -sf "http://127.0.0.1:$prom_port/-/ready" || die "prometheus did not become ready"

echo "$pins" >"$state/pins"
cat >"$state/env" <<ENV
# Written by tests/cluster/up.sh; source it to talk to the local control plane.
export KUBECONFIG=$state/admin.kubeconfig
export PROMETHEUS_URL=http://127.0.0.1:$prom_port
export PROM_SD_DIR=$state/prometheus-sd
export USER_KUBECONFIG_DIR=$state/users
export PATH=$TOOLS_BIN:\$PATH
ENV
log "up: kube-apiserver https://127.0.0.1:$api_port, prometheus http://127.0.0.1:$prom_port; source $state/env"
