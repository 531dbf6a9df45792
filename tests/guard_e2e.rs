//! RolloutGuards end to end: the real Prometheus scrapes endpoints these tests serve on
//! loopback (registered through PROM_SD_DIR), the operator runs as its own process, and the
//! tests assert on guard status, RollbackRequests and Events.

mod common;

use axum::{Router, routing::get};
use common::gauges::Gauges as Metrics;
use common::{Env, unique_suffix, wait_until};
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams, Patch, PatchParams};
use rollguard::api::guard::GuardPhase;
use rollguard::api::request::RequestPhase;
use rollguard::api::{RollbackRequest, RolloutGuard};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn setup(test: &str) -> Option<Env> {
    let env = Env::start(test, &[]).await?;
    env.cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff, namespace: {}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\", b: \"true\"}}\n",
        env.ns
    ));
    Some(env)
}

impl Env {
    fn guard(&self, name: &str, spec: &str) {
        self.cluster.apply(&format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  interval: 1s\n  flags: {{configMapRef: {{name: ff}}, guarded: [a, b]}}\n{spec}\n",
            ns = self.ns
        ));
    }

    fn guards(&self) -> Api<RolloutGuard> {
        self.api()
    }

    async fn auto_requests(&self, guard: &str) -> Vec<RollbackRequest> {
        self.requests()
            .list(&ListParams::default().labels(&format!("rollguard.dev/guard={guard}")))
            .await
            .unwrap()
            .items
    }

    /// Waits until `check` holds for the guard's status; returns the guard.
    async fn guard_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&RolloutGuard) -> bool,
    ) -> RolloutGuard {
        let api = self.guards();
        let check = &check;
        wait_until(
            Duration::from_secs(30),
            &format!("guard {name}: {what}"),
            || {
                let api = api.clone();
                async move { api.get(name).await.ok().filter(|g| check(g)) }
            },
        )
        .await
    }

    async fn events(&self, name: &str, reason: &str) -> Vec<Event> {
        self.events_where(|e| {
            e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason)
        })
        .await
    }
}

fn phase(g: &RolloutGuard) -> Option<GuardPhase> {
    g.status.as_ref().and_then(|s| s.phase)
}

fn trigger_breaching(g: &RolloutGuard, trigger: &str) -> Option<bool> {
    g.status
        .as_ref()?
        .triggers
        .iter()
        .find(|t| t.name == trigger && t.last_error.is_none() && t.value.is_some())
        .map(|t| t.breaching)
}

#[tokio::test]
async fn a_short_breach_does_not_fire_and_a_sustained_one_fires_exactly_one_rollback_that_completes()
 {
    let Some(env) = setup("sustained_breach").await else {
        return;
    };
    let m = Metrics::serve(&env.cluster).await;
    m.set("errors", 0.001);
    m.scraped(&env.cluster, "errors", 0.001).await;
    env.guard("g", &format!("  triggers: [{{name: error-rate, query: \"{}\", above: 0.01, for: 5s}}]\n  rollback: {{cooldown: 1h}}", m.query("errors")));
    env.guard_until("g", "Monitoring", |g| {
        phase(g) == Some(GuardPhase::Monitoring)
    })
    .await;

    // A two-second breach: Breaching, then back, and no rollback.
    m.set("errors", 0.5);
    let breaching = env
        .guard_until("g", "Breaching", |g| {
            phase(g) == Some(GuardPhase::Breaching)
        })
        .await;
    let conditions = breaching.status.unwrap().conditions;
    let status_of = |t: &str| rollguard::conditions::get(&conditions, t).map(|c| c.status.clone());
    assert_eq!(
        (status_of("TriggersBreaching"), status_of("Healthy")),
        (Some("True".into()), Some("False".into()))
    );
    assert_eq!(env.events("g", "TriggerBreaching").await.len(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    m.set("errors", 0.001);
    env.guard_until("g", "Monitoring again", |g| {
        phase(g) == Some(GuardPhase::Monitoring)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        env.auto_requests("g").await.is_empty(),
        "a breach shorter than `for` fired"
    );

    // A sustained breach fires once.
    m.set("errors", 0.5);
    let requests = wait_until(
        Duration::from_secs(30),
        "an automatic RollbackRequest",
        || {
            let env = &env;
            async move { Some(env.auto_requests("g").await).filter(|r| !r.is_empty()) }
        },
    )
    .await;
    let request = &requests[0];
    let name = request.metadata.name.clone().unwrap();
    assert!(
        name.starts_with("g-auto-") && name.len() == "g-auto-20261127-101500".len(),
        "{name}"
    );
    assert_eq!(request.spec.requested_by, "system:rollguard");
    assert_eq!(
        kube::ResourceExt::annotations(request)
            .get("rollguard.dev/triggered-by")
            .map(String::as_str),
        Some(r#"{"trigger":"error-rate","value":0.5}"#),
        "triggeredBy travels with the request itself"
    );
    assert_eq!(
        request.metadata.owner_references.as_ref().unwrap()[0].name,
        "g"
    );
    // The fix is in: errors drop, so verification (triggers without `for`) can pass.
    m.set("errors", 0.001);
    let api: Api<RollbackRequest> = Api::namespaced(env.cluster.client.clone(), &env.ns);
    let done = common::finished(&api, &name).await;
    assert_eq!(
        done.status.as_ref().and_then(|s| s.phase),
        Some(RequestPhase::Succeeded),
        "the automatic rollback must succeed"
    );
    let triggered = done.status.unwrap().triggered_by.unwrap();
    assert_eq!(
        (triggered.trigger.as_str(), triggered.value),
        ("error-rate", Some(0.5))
    );
    let data = Api::<ConfigMap>::namespaced(env.cluster.client.clone(), &env.ns)
        .get("ff")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!((data["a"].as_str(), data["b"].as_str()), ("false", "false"));
    env.guard_until("g", "RolledBack with its condition", |g| {
        phase(g) == Some(GuardPhase::RolledBack)
            && g.status
                .as_ref()
                .is_some_and(|s| rollguard::conditions::is_true(&s.conditions, "RolledBack"))
    })
    .await;

    // Still exactly one request a few intervals later (even with the breach back: rolled back).
    m.set("errors", 0.5);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(env.auto_requests("g").await.len(), 1);
    assert!(!env.events("g", "TriggerFiring").await.is_empty());
    assert!(!env.events("g", "RollbackCreated").await.is_empty());
}

#[tokio::test]
async fn each_comparison_breaches_when_and_only_when_it_should() {
    let Some(env) = setup("comparisons").await else {
        return;
    };
    let m = Metrics::serve(&env.cluster).await;
    for (series, v) in [
        ("a1", 0.2),
        ("a2", 0.9),
        ("low", 3.5),
        ("high", 4.5),
        ("now", 1.2),
        ("base", 1.0),
        ("tput", 50.0),
        ("tbase", 100.0),
    ] {
        m.set(series, v);
    }
    m.scraped(&env.cluster, "tbase", 100.0).await;
    let all = format!(
        "rollguard_test_value{{test=\\\"{}\\\",series=~\\\"a.\\\"}}",
        m.id
    );
    // Every trigger only alerts here: this test is about breaching, not rolling back.
    let triggers = [
        format!("{{name: multi, query: \"{all}\", above: 0.5, action: alert}}"),
        format!("{{name: multi-quiet, query: \"{all}\", above: 0.95, action: alert}}"),
        format!(
            "{{name: below, query: \"{}\", below: 4.0, action: alert}}",
            m.query("low")
        ),
        format!(
            "{{name: below-quiet, query: \"{}\", below: 4.0, action: alert}}",
            m.query("high")
        ),
        format!(
            "{{name: increase, query: \"{}\", increaseAbove: 0.1, baseline: {{query: \"{}\"}}, action: alert}}",
            m.query("now"),
            m.query("base")
        ),
        format!(
            "{{name: increase-quiet, query: \"{}\", increaseAbove: 0.5, baseline: {{query: \"{}\"}}, action: alert}}",
            m.query("now"),
            m.query("base")
        ),
        format!(
            "{{name: decrease, query: \"{}\", decreaseBelow: 0.3, baseline: {{query: \"{}\"}}, action: alert}}",
            m.query("tput"),
            m.query("tbase")
        ),
        format!(
            "{{name: nodata-breach, query: \"{}\", above: 1, noData: breach, action: alert}}",
            m.query("absent")
        ),
        format!(
            "{{name: nodata-ignore, query: \"{}\", above: 1, noData: ignore, action: alert}}",
            m.query("absent")
        ),
    ];
    env.guard("g", &format!("  triggers: [{}]", triggers.join(", ")));
    let guard = env
        .guard_until("g", "every trigger evaluated", |g| {
            g.status
                .as_ref()
                .is_some_and(|s| s.triggers.len() == 9 && s.last_evaluation_time.is_some())
        })
        .await;
    let status = guard.status.unwrap();
    let breaching: BTreeMap<&str, bool> = status
        .triggers
        .iter()
        .map(|t| (t.name.as_str(), t.breaching))
        .collect();
    let expected = BTreeMap::from([
        ("multi", true),
        ("multi-quiet", false),
        ("below", true),
        ("below-quiet", false),
        ("increase", true),
        ("increase-quiet", false),
        ("decrease", true),
        ("nodata-breach", true),
        ("nodata-ignore", false),
    ]);
    assert_eq!(breaching, expected, "{:#?}", status.triggers);
    let multi = status.triggers.iter().find(|t| t.name == "multi").unwrap();
    assert_eq!(
        (multi.value, multi.labels.get("series").map(String::as_str)),
        (Some(0.9), Some("a2")),
        "the worst series is shown"
    );
    let increase = status
        .triggers
        .iter()
        .find(|t| t.name == "increase")
        .unwrap();
    assert_eq!(increase.baseline, Some(1.0));
    // action: alert fires Events, never requests.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(env.auto_requests("g").await.is_empty());
    assert!(!env.events("g", "TriggerFiring").await.is_empty());
    assert!(trigger_breaching(&env.guards().get("g").await.unwrap(), "multi") == Some(true));
}

#[tokio::test]
async fn prometheus_down_slow_or_failing_never_rolls_back_and_the_guard_recovers() {
    let Some(env) = setup("prometheus_errors").await else {
        return;
    };
    // An address that refuses connections, one that accepts and never answers, and a query
    // that parses but fails inside Prometheus. Each would breach at once if errors counted
    // (noData: breach, for: 0s).
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let trigger = |query: &str| {
        format!("  triggers: [{{name: t, query: \"{query}\", above: 1, for: 0s, noData: breach}}]")
    };
    env.guard(
        "down",
        &format!(
            "{}\n  prometheus: {{address: \"http://{closed}\"}}",
            trigger("vector(0)")
        ),
    );
    env.guard(
        "slow",
        &format!(
            "{}\n  prometheus: {{address: \"http://{silent_addr}\", timeout: 500ms}}",
            trigger("vector(0)")
        ),
    );
    env.guard(
        "failing",
        &trigger("label_replace(vector(1), \\\"dst\\\", \\\"$1\\\", \\\"src\\\", \\\"[\\\")"),
    );
    for name in ["down", "slow", "failing"] {
        let g = env
            .guard_until(name, "Degraded", |g| phase(g) == Some(GuardPhase::Degraded))
            .await;
        let status = g.status.unwrap();
        let reachable =
            rollguard::conditions::get(&status.conditions, "PrometheusReachable").unwrap();
        assert_eq!(reachable.status, "False", "{name}");
        assert!(status.triggers[0].last_error.is_some(), "{name}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["down", "slow", "failing"] {
        assert!(
            env.auto_requests(name).await.is_empty(),
            "{name}: an error fired a rollback"
        );
        assert_eq!(
            env.events(name, "PrometheusUnreachable").await.len(),
            1,
            "{name}: one Event per transition"
        );
    }
    // Prometheus back (the guard now points at the real one): Monitoring again.
    let patch =
        serde_json::json!({"spec": {"prometheus": {"address": env.cluster.prometheus_url}}});
    env.guards()
        .patch("down", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    env.guard_until("down", "Monitoring", |g| {
        phase(g) == Some(GuardPhase::Monitoring)
    })
    .await;
    assert!(env.auto_requests("down").await.is_empty());
}

#[tokio::test]
async fn suspend_manual_mode_alert_action_and_cooldown_each_prevent_the_automatic_request() {
    let Some(env) = setup("no_automatic").await else {
        return;
    };
    let breach = "  triggers: [{name: t, query: \"vector(5)\", above: 1, for: 0s}]";
    env.guard("suspended", &format!("{breach}\n  suspend: true"));
    env.guard("manual", &format!("{breach}\n  rollback: {{mode: manual}}"));
    env.guard(
        "alert",
        "  triggers: [{name: t, query: \"vector(5)\", above: 1, for: 0s, action: alert}]",
    );
    // Cooldown: the guard's history says a rollback failed a moment ago.
    env.guard(
        "cooling",
        &format!("{breach}\n  suspend: true\n  rollback: {{cooldown: 1h}}"),
    );
    let cooling = env
        .guard_until("cooling", "Suspended", |g| {
            phase(g) == Some(GuardPhase::Suspended)
        })
        .await;
    let history = serde_json::json!({"status": {"lastRollback": {"name": "earlier", "outcome": "Failed",
        "time": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}}});
    env.guards()
        .patch_status("cooling", &PatchParams::default(), &Patch::Merge(&history))
        .await
        .unwrap();
    let resume = serde_json::json!({"spec": {"suspend": false}});
    env.guards()
        .patch("cooling", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .unwrap();
    assert_eq!(cooling.metadata.name.as_deref(), Some("cooling"));

    env.guard_until("suspended", "Suspended", |g| {
        phase(g) == Some(GuardPhase::Suspended)
    })
    .await;
    for name in ["manual", "alert", "cooling"] {
        env.guard_until(name, "Breaching", |g| {
            phase(g) == Some(GuardPhase::Breaching)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["suspended", "manual", "alert", "cooling"] {
        assert!(
            env.auto_requests(name).await.is_empty(),
            "{name} created a RollbackRequest"
        );
    }
    for name in ["manual", "alert", "cooling"] {
        assert_eq!(
            env.events(name, "TriggerFiring").await.len(),
            1,
            "{name}: TriggerFiring once"
        );
    }
    // Control: the same trigger on a plain guard does roll back.
    env.guard("control", breach);
    wait_until(
        Duration::from_secs(20),
        "the control guard to roll back",
        || {
            let env = &env;
            async move { Some(env.auto_requests("control").await).filter(|r| !r.is_empty()) }
        },
    )
    .await;
}

#[tokio::test]
async fn invalid_promql_or_a_missing_config_map_makes_the_guard_invalid_with_the_field_named() {
    let Some(env) = setup("invalid_guard").await else {
        return;
    };
    env.guard(
        "bad-query",
        "  triggers: [{name: errors, query: \"sum(rate(rollguard_test_never_exported_total[5m]\", above: 1}]",
    );
    env.cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: no-cm, namespace: {}}}\nspec:\n  flags: {{configMapRef: {{name: nowhere}}, guarded: [a]}}\n",
        env.ns
    ));
    env.guard(
        "absent-flag",
        "  triggers: []\n  flags: {configMapRef: {name: ff}, guarded: [a, zzz]}",
    );
    let cases = [
        (
            "bad-query",
            "spec.triggers[errors].query does not parse as PromQL",
        ),
        (
            "no-cm",
            "spec.flags.configMapRef.name: ConfigMap \"nowhere\" does not exist",
        ),
        (
            "absent-flag",
            "spec.flags.guarded: flag \"zzz\" is not in ConfigMap \"ff\"",
        ),
    ];
    for (name, message) in cases {
        let g = env
            .guard_until(name, "Invalid", |g| phase(g) == Some(GuardPhase::Invalid))
            .await;
        let ready = rollguard::conditions::get(&g.status.unwrap().conditions, "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready.status, "False");
        assert!(ready.message.contains(message), "{name}: {}", ready.message);
        // The Event follows the status write; once, however many evaluations come after.
        wait_until(Duration::from_secs(10), "the InvalidSpec Event", || async {
            (!env.events(name, "InvalidSpec").await.is_empty()).then_some(())
        })
        .await;
        let operator = env.operator.as_ref().unwrap();
        let since = operator.evaluations(&env.ns, name).await;
        operator.evaluated(&env.ns, name, since, 2).await;
        assert_eq!(env.events(name, "InvalidSpec").await.len(), 1, "{name}");
    }
    // A rollback of an invalid guard fails, and the guard is Invalid again afterwards
    // (the finished request set its phase back; the guard is judged again).
    env.cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: try, namespace: {}}}\nspec: {{guardRef: {{name: no-cm}}, requestedBy: ops}}\n",
        env.ns
    ));
    let requests: Api<RollbackRequest> = Api::namespaced(env.cluster.client.clone(), &env.ns);
    let tried = common::finished(&requests, "try").await;
    assert_eq!(tried.status.unwrap().phase, Some(RequestPhase::Failed));
    env.guard_until("no-cm", "Invalid after the failed request", |g| {
        g.status.as_ref().is_some_and(|s| {
            s.phase == Some(GuardPhase::Invalid)
                && s.last_rollback.as_ref().is_some_and(|l| l.name == "try")
        })
    })
    .await;
    // Fixing the spec makes it valid again.
    let fix = serde_json::json!({"spec": {"triggers": [{"name": "errors", "query": "sum(rate(rollguard_test_never_exported_total[5m]))", "above": 1}]}});
    env.guards()
        .patch("bad-query", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap();
    env.guard_until("bad-query", "Monitoring", |g| {
        phase(g) == Some(GuardPhase::Monitoring)
    })
    .await;

    // A valid guard whose flag disappears from the ConfigMap later (the spec unchanged)
    // says so at once, rather than when a rollback fails; putting it back heals it.
    let config_maps = env.config_maps();
    let remove = serde_json::json!({"data": {"a": null}});
    config_maps
        .patch("ff", &PatchParams::default(), &Patch::Merge(&remove))
        .await
        .unwrap();
    let g = env
        .guard_until("bad-query", "Invalid once flag a is gone", |g| {
            phase(g) == Some(GuardPhase::Invalid)
        })
        .await;
    let ready = rollguard::conditions::get(&g.status.unwrap().conditions, "Ready")
        .unwrap()
        .clone();
    assert!(
        ready
            .message
            .contains("flag \"a\" is not in ConfigMap \"ff\""),
        "{}",
        ready.message
    );
    let restore = serde_json::json!({"data": {"a": "true"}});
    config_maps
        .patch("ff", &PatchParams::default(), &Patch::Merge(&restore))
        .await
        .unwrap();
    env.guard_until("bad-query", "Monitoring again", |g| {
        phase(g) == Some(GuardPhase::Monitoring)
    })
    .await;
}

#[tokio::test]
async fn restarting_the_operator_mid_window_neither_restarts_the_window_nor_fires_early() {
    let Some(mut env) = setup("restart_window").await else {
        return;
    };
    let m = Metrics::serve(&env.cluster).await;
    m.set("errors", 0.5);
    m.scraped(&env.cluster, "errors", 0.5).await;
    env.guard(
        "g",
        &format!(
            "  triggers: [{{name: error-rate, query: \"{}\", above: 0.01, for: 10s}}]",
            m.query("errors")
        ),
    );
    let since = |g: &RolloutGuard| g.status.as_ref()?.triggers.first()?.breaching_since.clone();
    let guard = env
        .guard_until("g", "breaching", |g| since(g).is_some())
        .await;
    let started = since(&guard).unwrap().0;

    // Kill the operator 3 s into the window; keep it down for 3 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.operator.take().unwrap().kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(env.auto_requests("g").await.is_empty());
    env.operator = Some(env.cluster.start_operator(&env.ns, &[]));

    // The new process continues the persisted window: same start, no early firing.
    let before_due = started
        .checked_add(jiff::SignedDuration::from_secs(9))
        .unwrap();
    while jiff::Timestamp::now() < before_due {
        assert!(
            env.auto_requests("g").await.is_empty(),
            "fired before the 10s window had passed"
        );
        let g = env.guards().get("g").await.unwrap();
        if let Some(s) = since(&g) {
            assert_eq!(s.0, started, "the restart reset the window");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let requests = wait_until(
        Duration::from_secs(15),
        "the rollback after the window",
        || {
            let env = &env;
            async move { Some(env.auto_requests("g").await).filter(|r| !r.is_empty()) }
        },
    )
    .await;
    let created = requests[0].metadata.creation_timestamp.clone().unwrap().0;
    let waited = created.duration_since(started).as_secs_f64();
    // creationTimestamp has 1 s resolution; `for` + interval + 2 s is the target.
    assert!(
        (9.0..=13.0).contains(&waited),
        "fired {waited}s after the breach began"
    );
    assert_eq!(requests.len(), 1);
}

#[tokio::test]
async fn a_flag_turned_back_on_after_a_rollback_is_reported_as_drift_with_its_manager() {
    let Some(env) = setup("drift").await else {
        return;
    };
    env.guard("g", "  triggers: []");
    env.guard_until("g", "Monitoring", |g| {
        phase(g) == Some(GuardPhase::Monitoring)
    })
    .await;
    env.cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: incident, namespace: {}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, mode: immediate}}\n",
        env.ns
    ));
    env.guard_until("g", "RolledBack", |g| {
        g.status.as_ref().is_some_and(|s| {
            rollguard::conditions::status_of(&s.conditions, "FlagsDrifted") == Some("False")
        })
    })
    .await;

    // A GitOps tool puts flag `a` back.
    let config_maps: Api<ConfigMap> = Api::namespaced(env.cluster.client.clone(), &env.ns);
    let params = PatchParams {
        field_manager: Some("gitops-bot".into()),
        ..Default::default()
    };
    config_maps
        .patch(
            "ff",
            &params,
            &Patch::Merge(serde_json::json!({"data": {"a": "true"}})),
        )
        .await
        .unwrap();
    let guard = env
        .guard_until("g", "FlagsDrifted", |g| {
            g.status
                .as_ref()
                .is_some_and(|s| rollguard::conditions::is_true(&s.conditions, "FlagsDrifted"))
        })
        .await;
    let drifted = rollguard::conditions::get(&guard.status.unwrap().conditions, "FlagsDrifted")
        .unwrap()
        .clone();
    assert!(
        drifted
            .message
            .contains("flag(s) a turned back on by gitops-bot since rollback incident"),
        "{}",
        drifted.message
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = env.events("g", "FlagsDrifted").await;
    assert_eq!(events.len(), 1, "one Warning Event per drift");
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
}

/// A counting HTTP proxy on loopback in front of the real Prometheus: (arrival ms, path).
async fn counting_proxy(upstream: &str) -> (String, Arc<Mutex<Vec<(u128, String)>>>) {
    let seen: Arc<Mutex<Vec<(u128, String)>>> = Arc::default();
    let client = reqwest::Client::new();
    let upstream = upstream.to_string();
    let log = seen.clone();
    let app = Router::new().fallback(move |req: axum::extract::Request| {
        let (client, upstream, log) = (client.clone(), upstream.clone(), log.clone());
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let form = req.uri().query().map(str::to_string).unwrap_or_default();
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap();
            let query = if body.is_empty() {
                form
            } else {
                String::from_utf8_lossy(&body).into_owned()
            };
            log.lock().unwrap().push((now, query.clone()));
            let response = client
                .post(format!(
                    "{upstream}{}",
                    path.split('?').next().unwrap_or_default()
                ))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(query)
                .send()
                .await
                .unwrap();
            let status = axum::http::StatusCode::from_u16(response.status().as_u16()).unwrap();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            (
                status,
                [("content-type", content_type)],
                response.bytes().await.unwrap(),
            )
        }
    });
    let url = format!("http://{}", common::serve(app).await);
    (url, seen)
}

#[tokio::test]
async fn identical_queries_of_two_hundred_guards_reach_prometheus_once_per_interval() {
    let Some(env) = setup("shared_queries").await else {
        return;
    };
    let (proxy, seen) = counting_proxy(&env.cluster.prometheus_url).await;
    // 200 guards × 5 triggers over 40 distinct queries.
    let mut manifest = String::new();
    for g in 0..200 {
        let triggers: Vec<String> = (0..5)
            .map(|t| {
                format!(
                    "{{name: t{t}, query: \"vector({})\", above: 1000}}",
                    (g * 5 + t) % 40
                )
            })
            .collect();
        manifest.push_str(&format!(
            "---\napiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: g{g}, namespace: {ns}}}\nspec:\n  interval: 2s\n  prometheus: {{address: \"{proxy}\"}}\n  flags: {{configMapRef: {{name: ff}}, guarded: [a]}}\n  triggers: [{}]\n",
            triggers.join(", "),
            ns = env.ns
        ));
    }
    env.cluster.apply(&manifest);
    env.guard_until("g199", "evaluated", |g| {
        phase(g) == Some(GuardPhase::Monitoring)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let end = start + 10_000;
    let window: Vec<(u128, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t >= start && *t < end)
        .cloned()
        .collect();
    let mut per_interval: BTreeMap<u128, BTreeMap<String, usize>> = BTreeMap::new();
    for (t, q) in &window {
        *per_interval
            .entry(t / 2000)
            .or_default()
            .entry(q.clone())
            .or_default() += 1;
    }
    // Whole 2 s intervals inside the window: each distinct query is asked at most once.
    let full: Vec<_> = per_interval
        .iter()
        .filter(|(b, _)| **b * 2000 >= start && (**b + 1) * 2000 <= end)
        .collect();
    assert!(!full.is_empty());
    for (bucket, queries) in &full {
        let repeated: Vec<_> = queries.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "interval {bucket}: queries asked more than once: {repeated:?}"
        );
        assert!(
            queries.len() <= 40,
            "interval {bucket}: {} distinct queries",
            queries.len()
        );
    }
    let total: usize = full.iter().map(|(_, q)| q.values().sum::<usize>()).sum();
    let average = total as f64 / full.len() as f64;
    assert!(
        average >= 30.0,
        "every distinct query is evaluated each interval (about 40), got {average:.1}"
    );
    println!(
        "Prometheus received {average:.1} queries per 2 s interval for 200 guards × 5 triggers (40 distinct)"
    );
}

#[tokio::test]
async fn prometheus_credentials_come_from_the_auth_secret() {
    let Some(env) = setup("prometheus_auth").await else {
        return;
    };
    // A stand-in Prometheus API on loopback that records the Authorization header.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let app = Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let log = log.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("<none>")
                .to_string();
            log.lock().unwrap().push(auth);
            (
                [("content-type", "application/json")],
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            )
        }
    });
    let address = format!("http://{}", common::serve(app).await);
    env.cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: bearer, namespace: {ns}, labels: {{rollguard.dev/credentials: \"true\"}}}}\nstringData: {{token: s3cret}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: basic, namespace: {ns}, labels: {{rollguard.dev/credentials: \"true\"}}}}\nstringData: {{username: grafana, password: pa55}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: half, namespace: {ns}, labels: {{rollguard.dev/credentials: \"true\"}}}}\nstringData: {{username: grafana}}\n",
        ns = env.ns
    ));
    let trigger = "  triggers: [{name: t, query: \"up\", above: 1}]";
    env.guard(
        "b",
        &format!(
            "{trigger}\n  prometheus: {{address: \"{address}\", authSecretRef: {{name: bearer}}}}"
        ),
    );
    env.guard(
        "c",
        &format!(
            "{trigger}\n  prometheus: {{address: \"{address}/\", authSecretRef: {{name: basic}}}}"
        ),
    );
    // A Secret without usable credentials: said, not queried without them.
    env.guard(
        "d",
        &format!(
            "{trigger}\n  prometheus: {{address: \"{address}\", authSecretRef: {{name: half}}}}"
        ),
    );
    for name in ["b", "c"] {
        env.guard_until(name, "Monitoring", |g| {
            phase(g) == Some(GuardPhase::Monitoring)
        })
        .await;
    }
    let d = env
        .guard_until("d", "Degraded", |g| phase(g) == Some(GuardPhase::Degraded))
        .await;
    let reachable =
        rollguard::conditions::get(&d.status.unwrap().conditions, "PrometheusReachable")
            .unwrap()
            .clone();
    assert!(
        reachable.message.contains("spec.prometheus.authSecretRef.name: Secret \"half\" has neither a key \"token\" nor both \"username\" and \"password\""),
        "{}",
        reachable.message
    );
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&"Bearer s3cret".to_string()), "{seen:?}");
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("grafana:pa55")
    );
    assert!(seen.contains(&basic), "{seen:?}");
    assert!(
        !seen.contains(&"<none>".to_string()),
        "a query went out without credentials: {seen:?}"
    );
}

/// The SPEC's own kind of trigger, a rate over five minutes, stays high for minutes after the
/// errors stop. Verification judges it on the time since the flags changed, so the rollback
/// verifies once the errors have stopped, well inside `health.timeout` (20 s here).
#[tokio::test]
async fn a_windowed_trigger_verifies_once_the_errors_stop_after_the_flags_change() {
    let Some(env) = setup("windowed_verification").await else {
        return;
    };
    let m = Metrics::serve(&env.cluster).await;
    // An error counter rising by 500 a second while flag `a` is on.
    let (counter, config_maps) = (m.clone(), env.config_maps());
    tokio::spawn(async move {
        let mut total = 0.0;
        loop {
            let on = config_maps
                .get("ff")
                .await
                .ok()
                .and_then(|cm| cm.data)
                .is_some_and(|d| d.get("a").map(String::as_str) == Some("true"));
            if on {
                total += 100.0;
            }
            counter.set("errs", total);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let rate = format!("rate({}[5m])", m.query("errs"));
    // `for: 1h`: the guard itself never fires; the rollback below is asked for by hand.
    env.guard(
        "g",
        &format!(
            "  triggers: [{{name: errors, query: \"{rate}\", above: 1, for: 1h}}]\n  health: {{timeout: 20s}}"
        ),
    );
    env.guard_until("g", "the trigger breaching", |g| {
        trigger_breaching(g, "errors") == Some(true)
    })
    .await;
    env.cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: rb, namespace: {}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, reason: errors, mode: immediate}}\n",
        env.ns
    ));
    let done = common::finished(&env.requests(), "rb").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:#?}");
    // The trigger's own query still breaches: without the shortened window this could not pass.
    // Counted by the operator: an evaluation that changes no judgement writes no status.
    let operator = env.operator.as_ref().unwrap();
    let since = operator.evaluations(&env.ns, "g").await;
    operator.evaluated(&env.ns, "g", since, 2).await;
    let guard = env.guards().get("g").await.unwrap();
    assert_eq!(
        trigger_breaching(&guard, "errors"),
        Some(true),
        "the 5m rate must still be high after the rollback for this test to mean anything"
    );
}

/// Prometheus 3 names: a metric and a label whose names are outside the legacy charset, scraped
/// as such and quoted in PromQL (`{"shop.errors_total", "service.name"="checkout"}`). The
/// trigger reads them, and verification sends its shortened copy of the query — rendered back
/// to text by rollguard — which Prometheus must accept with the names still quoted.
#[tokio::test]
async fn a_trigger_on_utf8_metric_and_label_names_breaches_and_verifies() {
    let Some(env) = setup("utf8_names").await else {
        return;
    };
    let id = format!("u{}", unique_suffix());
    // An error counter rising by 500 a second while flag `a` is on.
    let total = Arc::new(Mutex::new(0.0_f64));
    let (counter, config_maps) = (total.clone(), env.config_maps());
    tokio::spawn(async move {
        loop {
            let on = config_maps
                .get("ff")
                .await
                .ok()
                .and_then(|cm| cm.data)
                .is_some_and(|d| d.get("a").map(String::as_str) == Some("true"));
            if on {
                *counter.lock().unwrap() += 100.0;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let served = total.clone();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let v = *served.lock().unwrap();
            async move { format!("{{\"shop.errors_total\",\"service.name\"=\"checkout\"}} {v}\n") }
        }),
    );
    let addr = common::serve(app).await;
    let targets = serde_json::json!([{"targets": [addr.to_string()], "labels": {"test": id}}]);
    std::fs::write(
        env.cluster.prom_sd_dir.join(format!("{id}.json")),
        targets.to_string(),
    )
    .unwrap();

    let query = format!(
        r#"sum by ("service.name") (rate({{"shop.errors_total", "service.name"="checkout", test="{id}"}}[5m]))"#
    );
    env.guard(
        "g",
        &format!(
            "  triggers: [{{name: errors, query: \"{}\", above: 1, for: 1h}}]\n  health: {{timeout: 20s}}",
            query.replace('"', "\\\"")
        ),
    );
    env.guard_until("g", "the trigger breaching on the UTF-8 series", |g| {
        trigger_breaching(g, "errors") == Some(true)
    })
    .await;
    env.cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: rb, namespace: {}}}\nspec: {{guardRef: {{name: g}}, requestedBy: ops, reason: errors, mode: immediate}}\n",
        env.ns
    ));
    let done = common::finished(&env.requests(), "rb").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:#?}");
}
