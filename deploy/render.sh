#!/usr/bin/env bash
# Prints the plain manifests of deploy/rollguard.yaml: a Namespace with the restricted Pod
# Security profile enforced, then the Helm chart rendered with its default values (CRDs
# included). `make deploy` writes it; tests/deploy_in_sync.rs checks the file matches.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=../tests/cluster/versions.sh
source "$repo/tests/cluster/versions.sh"
helm=${HELM:-$TOOLS_BIN/helm}
if [[ ! -x $helm ]]; then
	echo "deploy/render.sh: no helm at $helm; build it with: tests/cluster/build-tools.sh helm" >&2
	exit 1
fi
cat <<'YAML'
# Generated from charts/rollguard with its default values by `make deploy` (deploy/render.sh);
# do not edit. Install: kubectl apply --server-side -f deploy/rollguard.yaml
---
apiVersion: v1
kind: Namespace
metadata:
  name: rollguard-system
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/audit: restricted
YAML
"$helm" template rollguard "$repo/charts/rollguard" --namespace rollguard-system --include-crds
