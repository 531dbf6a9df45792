#!/usr/bin/env bash
# `make demo`: rollguard's whole story on this machine, told in the terminal.
#
#   1. the stage: a local kube-apiserver + Prometheus (make cluster-up), the operator as a
#      process, and a simulated shop (examples/shop.rs) whose new feature sits behind a flag
#   2. a healthy rollout: the guard's dashboard
#   3. something goes wrong: we inject errors into the new feature
#   4. the trigger breaches, fires, and the operator rolls the flags back on its own
#   5. what changed: flags before/after, step timings, Events, the signed webhook
#   6. the incident report
#   7. the fix ships; a person restores the flags with `kubectl rollguard restore --watch`
#   8. effective, not just written: the shop reads its flags from a mounted volume, and the
#      guard's propagation check shows what `refreshPods` changes for users (flagEffective)
#
# Interactive: pauses between chapters. DEMO_NONINTERACTIVE=1 runs straight through.
# Everything it starts is stopped by `make demo-down` (demo/down.sh); logs: target/demo/.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
demo_dir=$repo/target/demo
NS=${DEMO_NAMESPACE:-shop}
GUARD=phase4
SHOP_ADDR=${DEMO_SHOP_ADDR:-127.0.0.1:18081}
HOOK_ADDR=${DEMO_HOOK_ADDR:-127.0.0.1:18082}
METRICS_ADDR=${DEMO_METRICS_ADDR:-127.0.0.1:18080}
SHOP=http://$SHOP_ADDR
KUBELET_DELAY=20 # the demo's stand-in kubelet updates a mounted file this late (a real one: up to ~2 min)
started_at=$SECONDS

# --- how the story is told ------------------------------------------------------------------
if [[ -t 1 && -z ${NO_COLOR:-} ]]; then
	B=$'\e[1m' DIM=$'\e[2m' CMD=$'\e[36m' OK=$'\e[32m' BAD=$'\e[31m' R=$'\e[0m'
else
	B='' DIM='' CMD='' OK='' BAD='' R=''
fi
interactive() { [[ ${DEMO_NONINTERACTIVE:-0} != 1 && -t 0 && -t 1 ]]; }
chapter() { printf '\n%s══ %s %s\n' "$B" "$*" "$R"; }
say() { printf '%s\n' "$*"; }
note() { printf '%s%s%s\n' "$DIM" "$*" "$R"; }
# Shows a command, then runs it: every command here is one you can type yourself.
run() {
	local shown=() arg
	for arg in "$@"; do
		if [[ $arg =~ ^[][A-Za-z0-9_./:=@%+,{}-]+$ ]]; then
			shown+=("$arg")
		else
			shown+=("'${arg//\'/\'\\\'\'}'")
		fi
	done
	printf '%s$ %s%s\n' "$CMD" "${shown[*]}" "$R"
	"$@"
}
pause() {
	if interactive; then
		read -r -p "${DIM}── press Enter to continue ──${R}" _ </dev/tty
	fi
}
die() {
	printf '%sdemo: %s%s\n' "$BAD" "$*" "$R" >&2
	say "Logs: $demo_dir/operator.log, $demo_dir/shop.log. Stop everything: make demo-down" >&2
	exit 1
}
# wait_for SECONDS WHAT COMMAND...: polls COMMAND every half second.
wait_for() {
	local secs=$1 what=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
		sleep 0.5
	done
}
jp() { kubectl get "$1" -n "$NS" -o "jsonpath=$2" 2>/dev/null; } # object jsonpath
flags_of() {
	kubectl get configmap feature-flags -n "$NS" \
		-o go-template='{{range $k, $v := .data}}{{$k}} {{$v}}{{"\n"}}{{end}}'
}

# --- 1. the stage -----------------------------------------------------------------------------
chapter "1. Setting the stage"
say "A local control plane (etcd + kube-apiserver, no nodes) and Prometheus, on loopback."
note "First run on a machine: builds the tools once (~16 min); afterwards seconds."
run make --no-print-directory cluster-up
# CLUSTER_STATE (and the port variables) pick another control plane, as for tests/cluster/up.sh.
cluster_env=${CLUSTER_STATE:-target/cluster}/env
# shellcheck source=/dev/null
source "$cluster_env"
export PATH=$repo/target/debug:$PATH # kubectl finds the plugin `kubectl-rollguard` here

say "Building the operator, the kubectl plugin and the simulated shop."
note "(same features as \`make test\`, so one build serves both; the test-only fault points stay inert)"
run cargo build --locked --quiet --features fault-injection --bins --example shop

# A re-run starts clean: stop the last demo's processes, delete its objects (not the
# namespace: this control plane has no namespace controller to finish a deletion).
"$repo/demo/down.sh" --quiet
mkdir -p "$demo_dir"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/rolloutguards.rollguard.dev crd/rollbackrequests.rollguard.dev --timeout=60s >/dev/null
kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS" >/dev/null
kubectl delete rollbackrequests,rolloutguards --all -n "$NS" --wait=true >/dev/null
kubectl delete secrets -l rollguard.dev/guard -n "$NS" >/dev/null
kubectl delete configmap feature-flags rollguard-status -n "$NS" --ignore-not-found >/dev/null
kubectl delete secret shop-webhook -n "$NS" --ignore-not-found >/dev/null
kubectl delete pod shop-0 -n "$NS" --ignore-not-found --wait=false >/dev/null
rm -rf "$demo_dir/volume"
kubectl delete events --all -n "$NS" >/dev/null

# start NAME COMMAND...: a background process in its own session; pid in target/demo/.
start() {
	local name=$1
	shift
	setsid "$@" >"$demo_dir/$name.log" 2>&1 </dev/null &
	echo $! >"$demo_dir/$name.pid"
}
# Prometheus scrapes what is listed in $PROM_SD_DIR (file_sd); down.sh removes our files.
scrape() { # NAME ADDR SERVICE
	local file=$PROM_SD_DIR/rollguard-demo-$1.json
	printf '[{"targets": ["%s"], "labels": {"service": "%s"}}]\n' "$2" "$3" >"$file"
	echo "$file" >>"$demo_dir/sd-files"
}

signing_key=$(openssl rand -hex 24)
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: feature-flags
  namespace: $NS
  labels: {rollguard.dev/flags: "true"}   # its owner lets rollguard write it
data:                              # the Phase 4 features of the original requirements
  completion_validation_system: "true"
  completion_validation_ui: "true"
  advanced_completion_metrics: "true"
  byzantine_consensus_validation: "true"
  intelligent_completion_suggestions: "true"
  cross_session_completion_memory: "true"
  checkout_v2: "true"              # not guarded: a rollback leaves it alone
YAML

say "Starting the shop (metrics on $SHOP/metrics, webhook receiver on http://$HOOK_ADDR/hook)."
start shop env SHOP_ADDR="$SHOP_ADDR" HOOK_ADDR="$HOOK_ADDR" HOOK_SIGNING_KEY="$signing_key" \
	SHOP_NAMESPACE="$NS" SHOP_VOLUME_DIR="$demo_dir/volume" SHOP_KUBELET_DELAY="$KUBELET_DELAY" \
	target/debug/examples/shop
scrape shop "$SHOP_ADDR" shop-demo
say "Starting the operator: rollguard run --namespace $NS (log: target/demo/operator.log)."
start operator env -u ROLLGUARD_FAULT_POINT -u ROLLGUARD_FAULT_REQUEST RUST_LOG=info,kube=warn \
	target/debug/rollguard run --namespace "$NS" --prometheus-url "$PROMETHEUS_URL" \
	--metrics-addr "$METRICS_ADDR" --kubeconfig "$KUBECONFIG" \
	--egress-allow-plain-http-credentials 127.0.0.1
scrape operator "$METRICS_ADDR" rollguard-demo
wait_for 30 "the shop" curl -sf "$SHOP/healthz"
wait_for 30 "the operator's /readyz" curl -sf "http://$METRICS_ADDR/readyz"
wait_for 30 "Prometheus to scrape the shop" \
	bash -c "curl -sf '$PROMETHEUS_URL/api/v1/query?query=http_requests_total%7Bservice%3D%22shop-demo%22%7D' | grep -q '\"value\"'"

say "Applying the guard: the five triggers of the original requirements, demo-sized windows."
guard_manifest=$demo_dir/guard.yaml
cat >"$guard_manifest" <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: shop-webhook
  namespace: $NS
  labels: {rollguard.dev/credentials: "true"}   # its owner lets rollguard read it
stringData:                        # the webhook receiver's address and the HMAC key
  url: http://$HOOK_ADDR/hook
  signingKey: $signing_key
---
apiVersion: rollguard.dev/v1alpha1
kind: RolloutGuard
metadata: {name: $GUARD, namespace: $NS}
spec:
  flags:
    configMapRef: {name: feature-flags}
    format: plain
    guarded: [completion_validation_system, completion_validation_ui, advanced_completion_metrics,
              byzantine_consensus_validation, intelligent_completion_suggestions,
              cross_session_completion_memory]
    offValue: "false"
  interval: 2s                     # production: 15s
  triggers:                        # production: for 5m-15m, [5m] windows, baselines offset 1d/7d
    - name: critical-error-rate    # > 1 % errors
      query: sum(rate(http_requests_total{service="shop-demo",code=~"5.."}[5s])) / sum(rate(http_requests_total{service="shop-demo"}[5s]))
      above: 0.01
      for: 4s
    - name: performance-degradation   # p95 latency > 5 % worse than the baseline
      query: histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{service="shop-demo"}[15s])))
      increaseAbove: 0.05
      baseline: {query: 'histogram_quantile(0.95, sum by (le) (http_request_duration_seconds_bucket{service="shop-demo"}))'}
      for: 4s
    - name: user-satisfaction      # < 4.0 / 5.0
      query: avg(user_satisfaction_score{service="shop-demo"})
      below: 4.0
      for: 4s
    - name: byzantine-consensus-failures   # > 10 % of consensus rounds fail
      query: sum(rate(consensus_rounds_failed_total{service="shop-demo"}[15s])) / sum(rate(consensus_rounds_total{service="shop-demo"}[15s]))
      above: 0.10
      for: 4s
    - name: support-ticket-surge   # > 50 % more tickets than the baseline rate
      query: sum(rate(support_tickets_created_total{service="shop-demo"}[15s]))
      increaseAbove: 0.5
      baseline: {query: 'sum(support_tickets_created_total{service="shop-demo"}) / (time() - max(process_start_time_seconds{service="shop-demo"}))'}
      for: 4s
  rollback:
    mode: automatic
    cooldown: 1m
    hooks:                         # graceful mode: drain before the flags change, resume after
      preRollback: [{url: "$SHOP/drain", timeout: 5s}]
      postRollback: [{url: "$SHOP/resume", timeout: 5s}]
  health:
    timeout: 1m
    http: [{url: "$SHOP/healthz", expectStatus: 200}]
    stabilityWindow: 20s
    propagation:                   # when did the shop stop serving the flags' on-variant?
      query: sum(rate(feature_flag_evaluations_total{service="shop-demo",feature_flag_key=~"\$FLAGS",feature_flag_result_variant!="off"}[10s]))
  notify:
    - name: ops-webhook
      type: webhook
      secretRef: {name: shop-webhook}
      "on": [triggerFiring, started, completed, failed, unhealthy, drift]
    - name: banner                 # ConfigMap rollguard-status, for an in-app banner
      type: inApp
YAML
run kubectl apply -f "$guard_manifest"
run kubectl wait --for=condition=Ready "rolloutguard/$GUARD" -n "$NS" --timeout=60s
# Every trigger has a value once Prometheus has scraped a few times.
wait_for 60 "the first trigger values" bash -c \
	"[[ \$(kubectl get rg $GUARD -n $NS -o jsonpath='{range .status.triggers[*]}{.value}{\" \"}{end}' | wc -w) -ge 5 ]]"
note "The manifest is in target/demo/guard.yaml."
pause

# --- 2. a healthy rollout ---------------------------------------------------------------------
chapter "2. A healthy rollout"
say "All six Phase 4 flags are on; the shop serves the new completion validation."
run kubectl get configmap feature-flags -n "$NS" -o yaml | sed -n '/^data:/,/^kind:/p' | sed '$d'
flags_of >"$demo_dir/flags-before"
say ""
say "The guard's dashboard: each trigger's value against its threshold."
run kubectl rollguard status -n "$NS" -o wide
pause

# --- 3. something goes wrong -------------------------------------------------------------------
chapter "3. Something goes wrong"
say "A bug in the new feature: a quarter of the requests that use it now fail."
run curl -sS -X POST "$SHOP/control?error_rate=0.25"
say ""
injected=$SECONDS
say "Watching the guard (every second): the error rate crosses 1 %, breaches for 4s, fires."
auto=""
last=""
while :; do
	((SECONDS - injected < 60)) || die "no automatic rollback within 60s"
	auto=$(kubectl get rollbackrequests -n "$NS" -o name 2>/dev/null | sed -n "s|.*/\($GUARD-auto-.*\)|\1|p" | head -1)
	line=$(jp "rg/$GUARD" '{.status.phase} {.status.triggers[?(@.name=="critical-error-rate")].value} {.status.triggers[?(@.name=="critical-error-rate")].breachingSince}')
	read -r phase value since <<<"$line"
	now="  +$((SECONDS - injected))s  phase=${phase:-?}  error rate=$(printf '%.4f' "${value:-0}") (threshold 0.01)${since:+  breaching since $since}"
	[[ $now != "$last" ]] && say "$now"
	last=$now
	[[ -n $auto ]] && break
	sleep 1
done
say "${B}TriggerFiring → RollbackRequest $auto created by the operator.${R}"
pause

# --- 4. the automatic rollback -----------------------------------------------------------------
chapter "4. The automatic rollback"
say "Snapshot → drain hook → flags off → verify health → resume hook; each step is in status."
seen=""
while :; do
	((SECONDS - injected < 150)) || die "rollback $auto did not finish"
	phase=$(jp "rbr/$auto" '{.status.phase}')
	if [[ -n $phase && $phase != "$seen" ]]; then
		say "  +$((SECONDS - injected))s  $auto: $phase"
		seen=$phase
	fi
	[[ $phase == Succeeded || $phase == Failed ]] && break
	sleep 0.5
done
[[ $phase == Succeeded ]] || die "rollback $auto ended $phase: $(jp "rbr/$auto" '{.status.message}')"
run kubectl get rollbackrequests -n "$NS"
say ""
say "Its timeline (status.timeline; the operator records each step before starting the next):"
run kubectl get rollbackrequest "$auto" -n "$NS" \
	-o jsonpath='{range .status.timeline[*]}{.time}{"\t"}{.step}{"\n"}{end}'
say ""
say "Step timings (seconds from the request's creation; the API server stamps creation to the second):"
for d in flagDisable flagEffective notification healthVerification total; do
	printf '  %-20s %s s\n' "$d" "$(jp "rbr/$auto" "{.status.durations.$d}")"
done
say ""
say "The flags ConfigMap, before and after (checkout_v2 is not guarded and stays on):"
flags_of >"$demo_dir/flags-after"
printf '  %-36s %-8s %s\n' FLAG BEFORE AFTER
LC_ALL=C join "$demo_dir/flags-before" "$demo_dir/flags-after" | while read -r k before after; do
	mark=""
	[[ $before != "$after" ]] && mark="  ← rolled back"
	printf '  %-36s %-8s %s%s\n' "$k" "$before" "$after" "$mark"
done
say ""
say "flagEffective: the shop's own flag-evaluation counter said it no longer served the new"
say "feature (spec.health.propagation; chapter 8 shows it with a mounted file)."
say ""
say "The shop saw the flag change through the API watch within a second, and errors stopped:"
grep -E '\[shop\] (flag|preRollback|postRollback)' "$demo_dir/shop.log" | sed 's/^/  /' || true
pause

# --- 5. who was told -------------------------------------------------------------------------
chapter "5. Who was told"
say "Kubernetes Events (always written):"
run kubectl get events -n "$NS" --sort-by=.eventTime \
	-o custom-columns=TIME:.eventTime,TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message
say ""
say "The local webhook receiver checked each signature (HMAC-SHA256 over <timestamp>.<body>):"
wait_for 15 "the webhook's 'completed' notification" grep -q 'event=completed' "$demo_dir/shop.log"
grep '\[webhook\]' "$demo_dir/shop.log" | sed 's/^/  /'
say ""
say "And the request records each delivery:"
run kubectl get rollbackrequest "$auto" -n "$NS" \
	-o jsonpath='{range .status.notifications[*]}{.receiver}{"\t"}{.event}{"\t"}{.state}{"\t"}{.attempts}{" attempt(s)\n"}{end}'
say ""
say "The in-app banner ConfigMap (rollguard-status):"
run kubectl get configmap rollguard-status -n "$NS" -o jsonpath='{.data.state}: {.data.message}{"\n"}'
pause

# --- 6. the incident report --------------------------------------------------------------------
chapter "6. The incident report"
run kubectl rollguard report "$auto" -n "$NS"
pause

# --- 7. the fix and the restore ----------------------------------------------------------------
chapter "7. The fix ships; the flags come back"
say "The team fixes the bug (the shop stops failing) and an SRE restores the flags."
run curl -sS -X POST "$SHOP/control?error_rate=0"
say ""
run kubectl rollguard restore "$GUARD" -n "$NS" --reason "fix for the completion validation bug deployed" --watch
say ""
run kubectl get configmap feature-flags -n "$NS" -o yaml | sed -n '/^data:/,/^kind:/p' | sed '$d'
wait_for 30 "the guard back to Monitoring" bash -c "[[ \$(kubectl get rg $GUARD -n $NS -o jsonpath='{.status.phase}') == Monitoring ]]"
run kubectl rollguard status -n "$NS"

# --- 8. effective, not just written --------------------------------------------------------------
chapter "8. Effective, not just written"
say "flagDisable ends when the ConfigMap changed; users are safe when the shop stops serving the"
say "new feature. The guard's health.propagation reads that from the shop's flag-evaluation counter"
say "(OpenFeature's OpenTelemetry names), verification waits for it, and the request records it as"
say "flagEffective. So far the shop watched the ConfigMap through the API. Most applications read"
say "flags from a ConfigMap mounted as a volume, which the kubelet updates late."
note "This control plane has no nodes: pod shop-0 is an object that mounts feature-flags, and a stand-in"
note "kubelet in the shop keeps the file ${KUBELET_DELAY}s behind the ConfigMap, or refreshes it at once when the pod changes."
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: shop-0, namespace: $NS}
spec:
  containers: [{name: shop, image: shop:demo}]
  volumes: [{name: flags, configMap: {name: feature-flags}}]
YAML
run curl -sS -X POST "$SHOP/control?flags_from=volume"
say ""
serving() { curl -sf "$SHOP/control" | grep -q "\"featureOn\":$1"; }
latest_request() { kubectl get rollbackrequests -n "$NS" --sort-by=.metadata.creationTimestamp -o name | tail -1 | cut -d/ -f2; }
wait_for 60 "the shop to serve the feature from the volume" serving true
rollback_and_time() { # REASON: a rollback by hand, then its flagDisable and flagEffective
	run kubectl rollguard rollback "$GUARD" -n "$NS" --reason "$1" --watch
	local name
	name=$(latest_request)
	say "  $name: flagDisable $(jp "rbr/$name" '{.status.durations.flagDisable}') s, flagEffective $(jp "rbr/$name" '{.status.durations.flagEffective}') s"
	grep '\[kubelet\]\|\[shop\] flag' "$demo_dir/shop.log" | tail -2 | sed 's/^/  /'
	last_rollback=$name
}
say "${B}Without refreshPods${R}: the ConfigMap changes at once, the file ${KUBELET_DELAY}s later."
rollback_and_time "propagation demo: mounted volume, refreshPods off"
slow=$last_rollback
run kubectl rollguard restore "$GUARD" -n "$NS" --reason "propagation demo: flags back on" --watch
wait_for 60 "the shop to serve the feature again" serving true
say ""
say "${B}With refreshPods${R}: after the write, rollguard annotates the pods that mount the ConfigMap,"
say "and the kubelet refreshes their files at once."
run kubectl patch rolloutguard "$GUARD" -n "$NS" --type merge -p '{"spec":{"flags":{"refreshPods":true}}}'
rollback_and_time "propagation demo: mounted volume, refreshPods on"
fast=$last_rollback
say ""
say "Side by side (seconds from each request's creation):"
printf '  %-40s %-12s %s\n' ROLLBACK flagDisable flagEffective
for row in "$auto:shop watches the API" "$slow:mounted volume" "$fast:mounted volume + refreshPods"; do
	printf '  %-40s %-12s %s\n' "${row#*:}" "$(jp "rbr/${row%%:*}" '{.status.durations.flagDisable}')" \
		"$(jp "rbr/${row%%:*}" '{.status.durations.flagEffective}')"
done
note "flagEffective is never early and late by at most the query's window, cut to two guard intervals"
note "(4s here), plus a scrape: a \"none\" counts once it still holds an interval later."
run kubectl rollguard restore "$GUARD" -n "$NS" --reason "propagation demo: flags back on" --watch
pause

# --- the end -------------------------------------------------------------------------------------
chapter "The end — ${OK}the story took $((SECONDS - started_at))s${R}"
say "Everything is still running, so explore:"
explore() { if [[ -n ${2:-} ]]; then printf '  %-62s # %s\n' "$1" "$2"; else printf '  %s\n' "$1"; fi; }
explore "source $cluster_env; export PATH=\$PWD/target/debug:\$PATH"
explore "kubectl get rolloutguards,rollbackrequests -n $NS"
explore "kubectl rollguard status -n $NS -o wide"
explore "kubectl rollguard rollback $GUARD -n $NS --reason 'try it' --immediate --watch"
explore "kubectl rollguard restore $GUARD -n $NS --watch"
explore "curl -X POST '$SHOP/control?error_rate=0.3'" "break it again (cooldown: 1 minute)"
explore "curl -s http://$HOOK_ADDR/hook" "the notifications received"
explore "curl -s http://$METRICS_ADDR/metrics | grep rollguard_" "the operator's metrics"
explore "$PROMETHEUS_URL" "Prometheus: {service=\"shop-demo\"}"
explore "less target/demo/operator.log target/demo/shop.log"
say "Stop the operator, the shop and the webhook receiver: ${B}make demo-down${R}"
say "(the local control plane stays up for tests; stop it with make cluster-down)"
