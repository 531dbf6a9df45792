//! GitOps health as the real clients compute it, on live objects of every phase: the
//! operator drives guards and requests into each phase on the real kube-apiserver, the test
//! reads them back with `kubectl get -o json`, and asks
//! - sigs.k8s.io/cli-utils' `kstatus/status.Compute` (what Flux's health checks read), built by
//!   `tests/cluster/build-tools.sh kstatus` as `$TOOLS_BIN/kstatus`, and
//! - the README's Argo CD health script, run by a real Lua interpreter (`lua5.4`),
//!
//! for their verdicts. With `CI=true` a missing tool is a failure, never a skip.

mod common;

use common::{Cluster, wait_until};
use kube::api::{Api, Patch, PatchParams};
use rollguard::api::guard::GuardPhase;
use rollguard::api::request::RequestPhase;
use rollguard::api::{RollbackRequest, RolloutGuard};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A tool the test needs, or None (with a message) outside CI; under `CI=true` a panic.
fn tool(path: Option<PathBuf>, what: &str, how: &str) -> Option<PathBuf> {
    if let Some(path) = path.filter(|p| p.is_file()) {
        return Some(path);
    }
    let msg = format!("no {what}: {how}");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

fn kstatus_tool() -> Option<PathBuf> {
    let path = PathBuf::from(common::receivers::tools_var("TOOLS_BIN")).join("kstatus");
    tool(
        Some(path.clone()),
        &format!("kstatus program at {}", path.display()),
        "run `tests/cluster/build-tools.sh kstatus` (make test and make tools do)",
    )
}

fn lua() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("lua5.4"))
            .find(|p| p.is_file())
    });
    tool(
        found,
        "lua5.4 on PATH",
        "apt-get install lua5.4 (make test and .ci/run do)",
    )
}

/// The README's Argo CD health script (the ```lua block of the GitOps section).
fn argo_cd_script() -> String {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let start = readme
        .find("```lua\n-- argocd-cm: resource.customizations.health.rollguard.dev_RolloutGuard")
        .expect("README: the Argo CD health script")
        + "```lua\n".len();
    let len = readme[start..].find("```").unwrap();
    readme[start..start + len].to_string()
}

/// `value` as a Lua table constructor, as Argo CD hands an object to a health script (JSON
/// null is nil, arrays are sequences).
fn lua_literal(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || b" -_.:/,;()=@".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("\\{b:03}"));
                }
            }
            out.push('"');
            out
        }
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_literal(&k.clone().into()), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// What the two clients say about one live object.
#[derive(Debug)]
struct Verdicts {
    kstatus: String,
    kstatus_message: String,
    argo_cd: String,
    argo_cd_message: String,
}

fn verdicts(
    cluster: &Cluster,
    kstatus: &PathBuf,
    lua: &PathBuf,
    ns: &str,
    kind: &str,
    name: &str,
) -> (serde_json::Value, Verdicts) {
    let (ok, json, err) = cluster.kubectl(&["get", "-n", ns, kind, name, "-o", "json"]);
    assert!(ok, "kubectl get {kind} {name}: {err}");
    let object: serde_json::Value = serde_json::from_str(&json).unwrap();

    let mut child = Command::new(kstatus)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kstatus");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kstatus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let program = format!(
        "obj = {}\nlocal health = assert(load([==[\n{}\n]==]))\nlocal hs = health()\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua_literal(&object),
        argo_cd_script()
    );
    let mut child = Command::new(lua)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lua5.4");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(program.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "lua5.4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (argo_cd, argo_cd_message) = text.split_once('\n').unwrap_or((&text, ""));
    (
        object,
        Verdicts {
            kstatus: line["status"].as_str().unwrap().to_string(),
            kstatus_message: line["message"].as_str().unwrap_or_default().to_string(),
            argo_cd: argo_cd.to_string(),
            argo_cd_message: argo_cd_message.to_string(),
        },
    )
}

/// The Argo CD health status that means what kstatus' status means.
fn argo_cd_for(kstatus: &str) -> &'static str {
    match kstatus {
        "Current" => "Healthy",
        "InProgress" => "Progressing",
        "Failed" => "Degraded",
        other => panic!("unexpected kstatus {other}"),
    }
}

fn apply_in(cluster: &Cluster, ns: &str, kind: &str, name: &str, spec: &str) {
    cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n"
    ));
}

fn flags(cluster: &Cluster, ns: &str) {
    cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\"}}\n"
    ));
}

/// A loopback endpoint that answers POSTs after `delay`, and 503 to GETs (a failing health check).
async fn endpoint(delay: Duration) -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move || async move {
            tokio::time::sleep(delay).await;
            axum::http::StatusCode::OK
        })
        .get(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE }),
    );
    format!("http://{}/", common::serve(app).await)
}

async fn guard_phase(api: &Api<RolloutGuard>, name: &str, phase: GuardPhase) {
    wait_until(
        Duration::from_secs(30),
        &format!("guard {name} {phase:?}"),
        || async {
            let g = api.get(name).await.ok()?;
            let status = g.status?;
            (status.phase == Some(phase) && status.observed_generation == g.metadata.generation)
                .then_some(())
        },
    )
    .await
}

async fn request_phase(api: &Api<RollbackRequest>, name: &str, phase: RequestPhase) {
    wait_until(
        Duration::from_secs(30),
        &format!("request {name} {phase:?}"),
        || async {
            let r = api.get(name).await.ok()?;
            (r.status?.phase == Some(phase)).then_some(())
        },
    )
    .await
}

#[tokio::test]
async fn kstatus_and_argo_cd_read_every_phase_of_live_objects() {
    let Some(cluster) = common::cluster("kstatus").await else {
        return;
    };
    let (Some(kstatus), Some(lua)) = (kstatus_tool(), lua()) else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("kstatus").await;
    // A second namespace with its own operator, held just before it writes the flags.
    let ns_write = cluster.namespace("kstatus-w").await;
    let operator = cluster.start_operator(
        &ns,
        &[
            ("ROLLGUARD_FAULT_POINT", "snapshot-created"),
            ("ROLLGUARD_FAULT_REQUEST", "snapshotting"),
        ],
    );
    let _write_operator = cluster.start_operator(
        &ns_write,
        &[
            ("ROLLGUARD_FAULT_PAUSE", "before-flags-write"),
            ("ROLLGUARD_FAULT_PAUSE_MS", "600000"),
            ("ROLLGUARD_FAULT_REQUEST", "disabling"),
        ],
    );
    let guards: Api<RolloutGuard> = Api::namespaced(cluster.client.clone(), &ns);
    let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns);
    let hanging = endpoint(Duration::from_secs(600)).await;
    let slow = endpoint(Duration::from_secs(3)).await;
    let unhealthy = endpoint(Duration::ZERO).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    flags(&cluster, &ns);
    flags(&cluster, &ns_write);

    let base = "  interval: 1s\n  flags: {configMapRef: {name: ff}, guarded: [a]}\n";
    let quiet = "  triggers: [{name: t, query: \"vector(0)\", above: 1}]\n";
    let guard = |name: &str, extra: &str| {
        apply_in(
            &cluster,
            &ns,
            "RolloutGuard",
            name,
            &format!("{base}{extra}"),
        )
    };
    guard("monitoring", quiet);
    guard(
        "breaching",
        "  triggers: [{name: t, query: \"vector(5)\", above: 1, for: 1h}]\n",
    );
    guard("suspended", &format!("{quiet}  suspend: true\n"));
    guard(
        "degraded",
        &format!("{quiet}  prometheus: {{address: \"http://{closed}\"}}\n"),
    );
    // Valid first, then an edit makes it invalid: no condition of the old spec may stay.
    guard("invalid", quiet);
    guard("rolledback", quiet);
    guard("g-snap", quiet);
    guard(
        "g-drain",
        &format!(
            "{quiet}  rollback: {{hooks: {{preRollback: [{{url: \"{hanging}\", timeout: 5m}}]}}}}\n"
        ),
    );
    guard(
        "g-verify",
        &format!(
            "{quiet}  health: {{timeout: 10m, http: [{{url: \"{unhealthy}\", expectStatus: 200}}]}}\n"
        ),
    );
    guard(
        "g-super",
        &format!(
            "{quiet}  rollback: {{hooks: {{preRollback: [{{url: \"{slow}\", timeout: 30s}}]}}}}\n"
        ),
    );
    apply_in(
        &cluster,
        &ns_write,
        "RolloutGuard",
        "g-write",
        // A drain hook: its recorded outcome carries DisablingFlags, the phase the request
        // is held in. (Without hooks the first status write comes after the flags write.)
        &format!(
            "{base}{quiet}  rollback: {{hooks: {{preRollback: [{{url: \"{unhealthy}\"}}]}}}}\n"
        ),
    );

    guard_phase(&guards, "invalid", GuardPhase::Monitoring).await;
    guards
        .patch(
            "invalid",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"flags": {"guarded": ["missing"]}}})),
        )
        .await
        .unwrap();

    let request = |ns: &str, name: &str, spec: &str| {
        apply_in(
            &cluster,
            ns,
            "RollbackRequest",
            name,
            &format!("  requestedBy: ops\n{spec}"),
        )
    };
    request(
        &ns,
        "succeeded",
        "  guardRef: {name: rolledback}\n  mode: immediate",
    );
    request(
        &ns,
        "snapshotting",
        "  guardRef: {name: g-snap}\n  mode: immediate",
    );
    request(&ns, "draining", "  guardRef: {name: g-drain}");
    request(
        &ns,
        "verifying",
        "  guardRef: {name: g-verify}\n  mode: immediate",
    );
    request(&ns, "superseded", "  guardRef: {name: g-super}");
    request(
        &ns,
        "failed",
        "  guardRef: {name: no-such-guard}\n  mode: immediate",
    );
    request(&ns_write, "disabling", "  guardRef: {name: g-write}");
    wait_until(
        Duration::from_secs(30),
        "the snapshot of request snapshotting",
        || async {
            operator
                .log_contains("FAULT-POINT snapshot-created snapshotting")
                .then_some(())
        },
    )
    .await;
    // Behind the one holding g-snap's slot.
    request(
        &ns,
        "pending",
        "  guardRef: {name: g-snap}\n  mode: immediate",
    );
    request_phase(&requests, "draining", RequestPhase::Draining).await;
    request(
        &ns,
        "emergency",
        "  guardRef: {name: g-super}\n  mode: immediate",
    );

    for (name, phase) in [
        ("monitoring", GuardPhase::Monitoring),
        ("breaching", GuardPhase::Breaching),
        ("suspended", GuardPhase::Suspended),
        ("degraded", GuardPhase::Degraded),
        ("invalid", GuardPhase::Invalid),
        ("rolledback", GuardPhase::RolledBack),
        ("g-verify", GuardPhase::RollingBack),
    ] {
        guard_phase(&guards, name, phase).await;
    }
    let write_requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), &ns_write);
    request_phase(&write_requests, "disabling", RequestPhase::DisablingFlags).await;
    for (name, phase) in [
        ("pending", RequestPhase::Pending),
        ("draining", RequestPhase::Draining),
        ("verifying", RequestPhase::Verifying),
        ("succeeded", RequestPhase::Succeeded),
        ("failed", RequestPhase::Failed),
        ("superseded", RequestPhase::Superseded),
    ] {
        request_phase(&requests, name, phase).await;
    }

    // Spec not yet observed: objects no operator has seen yet (a namespace without one), and
    // an edit of a guard after its operator is gone.
    let ns_none = cluster.namespace("kstatus-none").await;
    flags(&cluster, &ns_none);
    apply_in(
        &cluster,
        &ns_none,
        "RolloutGuard",
        "unobserved",
        &format!("{base}{quiet}"),
    );
    request(&ns_none, "unobserved", "  guardRef: {name: unobserved}");
    operator.kill();
    guards
        .patch(
            "monitoring",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"interval": "2s"}})),
        )
        .await
        .unwrap();

    let table = [
        (ns.as_str(), "rolloutguard", "breaching", "Current"),
        (&ns, "rolloutguard", "rolledback", "Current"),
        (&ns, "rolloutguard", "suspended", "Current"),
        (&ns, "rolloutguard", "g-verify", "Current"),
        (&ns, "rolloutguard", "degraded", "InProgress"),
        (&ns, "rolloutguard", "invalid", "Failed"),
        (&ns, "rolloutguard", "monitoring", "InProgress"),
        (&ns_none, "rolloutguard", "unobserved", "InProgress"),
        (&ns, "rollbackrequest", "pending", "InProgress"),
        // Held in its snapshot step: the operator records the snapshot with the step after
        // it, so the API still has the status the CRD defaults (observedGeneration 0).
        (&ns, "rollbackrequest", "snapshotting", "InProgress"),
        (&ns, "rollbackrequest", "draining", "InProgress"),
        (&ns_write, "rollbackrequest", "disabling", "InProgress"),
        (&ns, "rollbackrequest", "verifying", "InProgress"),
        (&ns, "rollbackrequest", "succeeded", "Current"),
        (&ns, "rollbackrequest", "failed", "Failed"),
        (&ns, "rollbackrequest", "superseded", "Current"),
        (&ns_none, "rollbackrequest", "unobserved", "InProgress"),
    ];
    // The control plane is shared: another checkout's tests may install their own CRDs (whose
    // status default may differ) at any time; read again when that happened meanwhile.
    let mut wrong = Vec::new();
    for attempt in 1..=5 {
        cluster.install_crds().await;
        wrong.clear();
        for (ns, kind, name, want) in table {
            let (object, v) = verdicts(&cluster, &kstatus, &lua, ns, kind, name);
            eprintln!("{kind}/{name} ({}): {v:?}", object["status"]["phase"]);
            if v.kstatus != want || v.argo_cd != argo_cd_for(want) {
                wrong.push(format!(
                    "{kind}/{name} (phase {}): want kstatus {want} / Argo CD {}, got {v:?}",
                    object["status"]["phase"],
                    argo_cd_for(want)
                ));
            }
            if name == "invalid" {
                // Both say why: the field and the problem.
                for message in [&v.kstatus_message, &v.argo_cd_message] {
                    if !message.contains("\"missing\"") {
                        wrong.push(format!(
                            "invalid: the message does not name the flag: {v:?}"
                        ));
                    }
                }
                // The edit left no condition of the old generation behind.
                let generation = &object["metadata"]["generation"];
                for c in object["status"]["conditions"].as_array().unwrap() {
                    if &c["observedGeneration"] != generation
                        || (c["type"] == "Healthy" && c["status"] == "True")
                    {
                        wrong.push(format!("invalid (generation {generation}): {c}"));
                    }
                }
            }
        }
        if our_crds_installed(&cluster).await {
            break;
        }
        eprintln!("attempt {attempt}: another checkout replaced the CRDs meanwhile; again");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Whether the installed CRDs still give `status` this checkout's default.
async fn our_crds_installed(cluster: &Cluster) -> bool {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let default = |crd: &CustomResourceDefinition| {
        serde_json::to_value(&crd.spec.versions[0].schema).unwrap()["openAPIV3Schema"]["properties"]
            ["status"]["default"]
            .clone()
    };
    for ours in rollguard::crd::definitions() {
        match crds.get(ours.metadata.name.as_deref().unwrap()).await {
            Ok(installed) if default(&installed) == default(&ours) => {}
            _ => return false,
        }
    }
    true
}
