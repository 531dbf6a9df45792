# rollguard — the commands a developer and CI need. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
CLUSTER_ENV := $(or $(CLUSTER_STATE),target/cluster)/env

.PHONY: help build test faults unit integration lint crds deploy readme-reference prerequisites cluster-up cluster-down tools demo demo-down bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

build: ## Build the operator and the kubectl plugin
	$(CARGO) build --locked --bins

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets --features fault-injection -- -D warnings

crds: ## Regenerate crds/, the chart's CRDs and deploy/ from the Rust types
	$(CARGO) run --locked --quiet --bin rollguard -- crd > crds/rollguard.dev.yaml
	cp crds/rollguard.dev.yaml charts/rollguard/crds/rollguard.dev.yaml
	$(MAKE) --no-print-directory deploy

deploy: ## Re-render deploy/rollguard.yaml from charts/rollguard (default values)
	tests/cluster/build-tools.sh helm
	deploy/render.sh > deploy/rollguard.yaml.tmp && mv deploy/rollguard.yaml.tmp deploy/rollguard.yaml

prerequisites: ## Install what this machine lacks: Debian packages (as root) and rustup's clippy and rustfmt
	tests/cluster/prerequisites.sh

tools: ## Build the local control plane's tools, helm and the python-tools venv once per machine (~/.cache/rollguard)
	tests/cluster/build-tools.sh all

readme-reference: ## Regenerate README.md's CRD field reference from the schema
	$(CARGO) run --locked --quiet --bin rollguard -- crd --reference --splice README.md

cluster-up: ## Start etcd, kube-apiserver and Prometheus 3 on loopback (installs and builds what is missing); writes target/cluster/env
	tests/cluster/up.sh

cluster-down: ## Stop exactly what cluster-up started and remove its state
	tests/cluster/down.sh

unit: ## Unit tests only (no cluster)
	$(CARGO) test --locked --lib --bins

# Tests build the operator with test-only fault points (crash-resume tests); release builds never have them.
test: prerequisites lint cluster-up ## Install what is missing, lint, then unit and integration tests against the local control plane
	source $(CLUSTER_ENV) && $(CARGO) test --locked --lib --bins --tests --features fault-injection

# make test runs a fixed sample of tests/faults.rs; this runs the full suite, a fresh base seed
# each time unless ROLLGUARD_FAULT_SEED is given (each run prints its seed for
# ROLLGUARD_FAULT_REPLAY). Sizes per fault kind: ROLLGUARD_FAULT_RUNS_<KIND>.
faults: cluster-up ## The full fault suite (stale watches, SIGKILL, API server outages, compaction, concurrency) with its tally
	source $(CLUSTER_ENV) && \
	ROLLGUARD_FAULT_SEED=$${ROLLGUARD_FAULT_SEED:-$$(date +%s)} \
	ROLLGUARD_FAULT_RUNS_KILL=$${ROLLGUARD_FAULT_RUNS_KILL:-60} \
	ROLLGUARD_FAULT_RUNS_STALE=$${ROLLGUARD_FAULT_RUNS_STALE:-24} \
	ROLLGUARD_FAULT_RUNS_APISERVER=$${ROLLGUARD_FAULT_RUNS_APISERVER:-12} \
	ROLLGUARD_FAULT_RUNS_COMPACTION=$${ROLLGUARD_FAULT_RUNS_COMPACTION:-6} \
	ROLLGUARD_FAULT_RUNS_CONCURRENCY=$${ROLLGUARD_FAULT_RUNS_CONCURRENCY:-6} \
	$(CARGO) test --locked --features fault-injection --test faults -- --nocapture

bench: cluster-up ## Benchmarks against the local control plane (figures go to BENCHMARKS.md)
	source $(CLUSTER_ENV) && $(CARGO) bench --locked --bench rollback_latency
	source $(CLUSTER_ENV) && $(CARGO) bench --locked --bench guard_scale
	source $(CLUSTER_ENV) && $(CARGO) bench --locked --bench hostile_prometheus
	source $(CLUSTER_ENV) && $(CARGO) bench --locked --bench alert_latency

demo: ## The whole story on this machine: a shop goes bad, the flags roll back (DEMO_NONINTERACTIVE=1: no pauses)
	demo/run.sh

demo-down: ## Stop what `make demo` started (operator, shop, webhook receiver); the control plane stays up
	demo/down.sh

clean: cluster-down ## Stop the cluster and remove build output
	$(CARGO) clean
