//! Notifications end to end: the operator runs as its own process against the real
//! kube-apiserver and delivers to real HTTP and SMTP servers these tests run on loopback.

mod common;

use common::receivers::{
    Behaviour, Form, HttpReceiver, LibraryReceiver, Received, library_verify, smtp_server,
};
use common::{Env, wait_until};
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams};
use rollguard::api::RollbackRequest;
use rollguard::api::guard::NotifyEvent;
use rollguard::api::request::{DeliveryState, NotificationRecord, RequestPhase};
use std::time::Duration;

/// A raw signing key (its 36 UTF-8 bytes are the HMAC key); the library takes it as bytes.
const RAW_KEY: &str = "rollguard-e2e-raw-signing-key-012345";
/// A Standard Webhooks key: `whsec_` and the base64 of 32 bytes (sha256 of "rollguard e2e key 1").
const WHSEC_KEY: &str = "whsec_kUnq167pPQtnkQdOP557DIR/FBAWiJHiiV6nXhmyUqk=";

/// The Standard Webhooks reference library accepts the delivery with `key` (skipped, with a
/// message, when its venv is missing outside CI).
fn library_accepts(key: &str, form: Form, delivery: &Received) {
    if let Some(verdict) = library_verify(key, form, &delivery.headers, &delivery.body) {
        verdict.unwrap_or_else(|why| {
            panic!(
                "standardwebhooks refused a delivery: {why}\n{:?}",
                delivery.headers
            )
        });
    }
}

/// Short retries so failures show within seconds.
const FAST_RETRIES: &[(&str, &str)] = &[
    ("ROLLGUARD_NOTIFY_ATTEMPTS", "4"),
    ("ROLLGUARD_NOTIFY_ATTEMPT_TIMEOUT", "1s"),
];

async fn setup(test: &str) -> Option<Env> {
    let env = Env::start(test, FAST_RETRIES).await?;
    env.cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff, namespace: {}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{a: \"true\", b: \"true\"}}\n",
        env.ns
    ));
    Some(env)
}
impl Env {
    fn secret(&self, name: &str, data: &[(&str, &str)]) {
        let data: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        self.cluster.apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {}, labels: {{rollguard.dev/credentials: \"true\"}}}}\nstringData: {}\n",
            self.ns,
            serde_json::Value::Object(data)
        ));
    }

    /// A guard of flags `a` and `b` with the given `notify` list (YAML flow) and extra spec.
    fn guard(&self, notify: &str, extra: &str) {
        self.cluster.apply(&format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: g, namespace: {ns}}}\nspec:\n  flags: {{configMapRef: {{name: ff}}, guarded: [a, b]}}\n  notify: {notify}\n{extra}\n",
            ns = self.ns
        ));
    }

    fn request(&self, name: &str) {
        self.cluster.apply(&format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{guardRef: {{name: g}}, requestedBy: alice, reason: checkout errors after phase 4}}\n",
            ns = self.ns
        ));
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        self.events_where(|e| e.reason.as_deref() == Some(reason))
            .await
    }
}

fn record<'a>(
    r: &'a RollbackRequest,
    receiver: &str,
    event: NotifyEvent,
) -> &'a NotificationRecord {
    r.status
        .as_ref()
        .unwrap()
        .notifications
        .iter()
        .find(|n| n.receiver == receiver && n.event == event)
        .unwrap_or_else(|| panic!("no {event:?} record for {receiver}: {:#?}", r.status))
}

fn events_of(received: &[common::receivers::Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| r.header("X-Rollguard-Event").to_string())
        .collect()
}

#[tokio::test]
async fn every_channel_hears_started_and_completed_with_the_facts() {
    let Some(env) = setup("notify_channels").await else {
        return;
    };
    let slack = HttpReceiver::start(Behaviour::Accept).await;
    let webhook = HttpReceiver::start(Behaviour::Accept).await;
    let (smtp_url, mailbox) = smtp_server().await;
    env.secret("slack", &[("url", &slack.url)]);
    env.secret("hook", &[("url", &webhook.url), ("signingKey", RAW_KEY)]);
    env.secret(
        "mail",
        &[
            ("smtpUrl", &smtp_url),
            ("from", "rollguard@shop.example"),
            ("to", "oncall@shop.example, sre@shop.example"),
        ],
    );
    env.guard(
        "[{name: ops, type: slack, secretRef: {name: slack}, \"on\": [started, completed]}, \
           {name: audit, type: webhook, secretRef: {name: hook}}, \
           {name: oncall, type: email, secretRef: {name: mail}, \"on\": [started, completed]}, \
           {name: banner, type: inApp}]",
        "",
    );
    env.request("incident-1");
    let r = env.settled("incident-1").await;
    let status = r.status.clone().unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:#?}");

    // Every receiver: started and completed, each delivered on the first attempt.
    for receiver in ["ops", "audit", "oncall", "banner"] {
        for event in [NotifyEvent::Started, NotifyEvent::Completed] {
            let n = record(&r, receiver, event);
            assert_eq!(n.state, DeliveryState::Delivered, "{n:#?}");
            assert_eq!(n.attempts, 1, "{n:#?}");
        }
    }
    let notified = rollguard::conditions::get(&status.conditions, "Notified").unwrap();
    assert_eq!(
        (notified.status.as_str(), notified.reason.as_str()),
        ("True", "Delivered")
    );
    let durations = status.durations.clone().unwrap();
    let took = durations.notification.expect("durations.notification");
    assert!(took <= durations.total.unwrap() + 1.0, "{durations:?}");

    // Slack: text plus blocks naming guard, request, reason, requester, flags, outcome.
    let posts = slack.accepted();
    assert_eq!(posts.len(), 2, "one started, one completed");
    let started = posts[0].json();
    assert!(
        started["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Rollback started: {}/g", env.ns)),
        "{started}"
    );
    let completed = posts[1].json().to_string();
    for fact in [
        "*Request*\\nincident-1",
        "*Reason*\\ncheckout errors after phase 4",
        "*Requested by*\\nalice",
        "a: true → false",
        "b: true → false",
        "*Outcome*\\nSucceeded",
    ] {
        assert!(completed.contains(fact), "{fact:?} not in {completed}");
    }

    // Webhook: Standard Webhooks headers, verified by the reference library; body by the
    // schema.
    let hooks = webhook.received();
    assert_eq!(events_of(&hooks), ["started", "completed"]);
    assert!(hooks.iter().all(|h| h.answered == 200));
    for h in &hooks {
        library_accepts(RAW_KEY, Form::Bytes, h);
        assert_eq!(h.header("webhook-id"), h.json()["id"].as_str().unwrap());
        assert!(h.header("webhook-signature").starts_with("v1,"));
        assert_eq!(
            h.header("X-Rollguard-Signature"),
            "",
            "the old header is gone"
        );
    }
    let body = hooks[1].json();
    assert_eq!(body["apiVersion"], "rollguard.dev/v1alpha1");
    assert_eq!(body["kind"], "RollguardNotification");
    assert_eq!(body["event"], "completed");
    assert_eq!(body["namespace"], env.ns.as_str());
    assert_eq!(body["guard"], "g");
    assert_eq!(
        body["id"],
        format!("{}:completed", r.metadata.uid.clone().unwrap())
    );
    assert_eq!(
        hooks[1].header("X-Rollguard-Delivery"),
        body["id"].as_str().unwrap()
    );
    assert_eq!(body["request"]["name"], "incident-1");
    assert_eq!(body["request"]["requestedBy"], "alice");
    assert_eq!(body["request"]["reason"], "checkout errors after phase 4");
    assert_eq!(body["request"]["phase"], "Succeeded");
    assert_eq!(body["request"]["flagsChanged"].as_array().unwrap().len(), 2);
    assert!(
        body["request"]["durations"]["flagDisable"]
            .as_f64()
            .is_some()
    );
    assert!(
        body["request"]["snapshot"]
            .as_str()
            .unwrap()
            .starts_with("g-snap-")
    );

    // An altered body fails the library's check.
    let mut tampered = hooks[1].body.to_vec();
    let at = tampered.iter().position(|b| *b == b'S').unwrap();
    tampered[at] = b'F';
    if let Some(verdict) = library_verify(RAW_KEY, Form::Bytes, &hooks[1].headers, &tampered) {
        let refused = verdict.unwrap_err();
        assert!(refused.contains("No matching signature"), "{refused}");
    }

    // Email: both recipients, one mail per moment.
    let mails = mailbox.lock().unwrap().clone();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert_eq!(mails[0].from, "rollguard@shop.example");
    assert_eq!(mails[0].to, ["oncall@shop.example", "sre@shop.example"]);
    assert_eq!(
        mails[0].subject(),
        format!("[rollguard] Rollback started: {}/g", env.ns)
    );
    assert_eq!(
        mails[1].subject(),
        format!("[rollguard] Rollback completed: {}/g", env.ns)
    );
    assert!(
        mails[1].data.contains("Requested by: alice"),
        "{}",
        mails[1].data
    );

    // In-app: the status ConfigMap says rolled back, why and since when.
    let cms: Api<ConfigMap> = Api::namespaced(env.cluster.client.clone(), &env.ns);
    let data = cms.get("rollguard-status").await.unwrap().data.unwrap();
    assert_eq!(data["state"], "RolledBack");
    assert_eq!(data["guard"], "g");
    assert_eq!(data["request"], "incident-1");
    assert!(data["message"].contains("succeeded"), "{data:?}");
    assert!(data["since"].parse::<jiff::Timestamp>().is_ok(), "{data:?}");

    assert!(env.events("NotificationFailed").await.is_empty());
}

#[tokio::test]
async fn a_hanging_receiver_never_delays_the_flags_a_flaky_one_gets_one_delivery_and_a_dead_one_is_reported()
 {
    let Some(env) = setup("notify_failures").await else {
        return;
    };
    let hanging = HttpReceiver::start(Behaviour::Hang).await;
    let flaky = HttpReceiver::start(Behaviour::FailFirst(2)).await;
    let dead = HttpReceiver::start(Behaviour::Fail).await;
    env.secret(
        "hanging",
        &[("url", &hanging.url), ("signingKey", WHSEC_KEY)],
    );
    env.secret("flaky", &[("url", &flaky.url), ("signingKey", WHSEC_KEY)]);
    env.secret("dead", &[("url", &dead.url), ("signingKey", WHSEC_KEY)]);
    env.guard(
        "[{name: hanging, type: webhook, secretRef: {name: hanging}, \"on\": [started]}, \
           {name: flaky, type: webhook, secretRef: {name: flaky}, \"on\": [started]}, \
           {name: dead, type: webhook, secretRef: {name: dead}, \"on\": [started]}]",
        "",
    );
    env.request("incident-2");
    let r = env.settled("incident-2").await;
    let status = r.status.clone().unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:#?}");
    // The hanging receiver takes 4 × 1 s to give up; the flags went off long before.
    let flags_off = status.durations.as_ref().unwrap().flag_disable.unwrap();
    let hanging_record = record(&r, "hanging", NotifyEvent::Started);
    assert_eq!(hanging_record.state, DeliveryState::Failed);
    assert_eq!(hanging_record.attempts, 4);
    let given_up = hanging_record.time.as_ref().unwrap().0;
    let flags_at = status.flags_changed_at.as_ref().unwrap().0;
    assert!(
        flags_at < given_up && flags_off < 4.0,
        "flags off after {flags_off}s at {flags_at}, hanging receiver given up at {given_up}"
    );

    // Fails twice, then accepts: exactly one successful delivery, recorded after 3 attempts.
    let flaky_record = record(&r, "flaky", NotifyEvent::Started);
    assert_eq!(flaky_record.state, DeliveryState::Delivered);
    assert_eq!(flaky_record.attempts, 3);
    assert_eq!(flaky.accepted().len(), 1);
    assert_eq!(flaky.received().len(), 3);
    let ids: Vec<_> = flaky
        .received()
        .iter()
        .map(|d| d.header("webhook-id").to_string())
        .collect();
    assert!(
        !ids[0].is_empty() && ids.iter().all(|id| *id == ids[0]),
        "one webhook-id across retries: {ids:?}"
    );
    // Every attempt is signed afresh (its own timestamp), and each one verifies.
    for attempt in flaky.received() {
        assert_eq!(attempt.header("X-Rollguard-Delivery"), ids[0]);
        library_accepts(WHSEC_KEY, Form::Str, &attempt);
    }

    // Always fails: Failed record with the error, a Warning Event and a timeline line;
    // the rollback itself succeeded.
    let dead_record = record(&r, "dead", NotifyEvent::Started);
    assert_eq!(dead_record.state, DeliveryState::Failed);
    assert_eq!(dead_record.attempts, 4);
    assert!(
        dead_record.message.contains("answered 500"),
        "{dead_record:#?}"
    );
    assert_eq!(dead.received().len(), 4);
    let warnings = env.events("NotificationFailed").await;
    assert_eq!(warnings.len(), 2, "hanging and dead: {warnings:#?}");
    assert!(
        warnings
            .iter()
            .all(|e| e.type_.as_deref() == Some("Warning"))
    );
    assert!(
        warnings.iter().any(|e| e
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("\"dead\"")),
        "{warnings:#?}"
    );
    let failed_lines = status
        .timeline
        .iter()
        .filter(|t| t.step == "NotificationFailed")
        .count();
    assert_eq!(failed_lines, 2, "{:#?}", status.timeline);
    let notified = rollguard::conditions::get(&status.conditions, "Notified").unwrap();
    assert_eq!(notified.status, "False");
    assert_eq!(notified.reason, "NotificationFailed");
    // The flaky receiver's delivery is the first successful "started".
    assert!(status.durations.unwrap().notification.is_some());
    assert!(
        status.slo.unwrap().met,
        "a notification inside 10 s meets its SLO"
    );
}

#[tokio::test]
async fn an_operator_restart_between_started_and_completed_sends_neither_twice() {
    let Some(mut env) = setup("notify_restart").await else {
        return;
    };
    let webhook = HttpReceiver::start(Behaviour::Accept).await;
    env.secret("hook", &[("url", &webhook.url), ("signingKey", WHSEC_KEY)]);
    // Verification waits on an HTTP check the test turns healthy after the restart.
    let (health, healthy) = common::health_server().await;
    env.guard(
        "[{name: audit, type: webhook, secretRef: {name: hook}, \"on\": [started, completed]}]",
        &format!("  health: {{timeout: 2m, http: [{{url: \"{health}\"}}]}}"),
    );
    env.request("incident-3");
    let api = env.requests();
    wait_until(
        Duration::from_secs(15),
        "started to be recorded as delivered",
        || {
            let api = api.clone();
            async move {
                let r = api.get("incident-3").await.ok()?;
                let s = r.status.as_ref()?;
                (s.phase == Some(RequestPhase::Verifying)
                    && s.notifications.iter().any(|n| {
                        n.event == NotifyEvent::Started && n.state == DeliveryState::Delivered
                    }))
                .then_some(())
            }
        },
    )
    .await;
    env.operator.take().unwrap().kill();
    env.operator = Some(env.cluster.start_operator(&env.ns, FAST_RETRIES));
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = env.settled("incident-3").await;
    assert_eq!(
        r.status.as_ref().unwrap().phase,
        Some(RequestPhase::Succeeded)
    );
    assert_eq!(
        record(&r, "audit", NotifyEvent::Completed).state,
        DeliveryState::Delivered
    );
    // Give a duplicate the time it would need to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(events_of(&webhook.received()), ["started", "completed"]);
}

#[tokio::test]
async fn drift_after_a_rollback_is_sent_once_to_its_receivers() {
    let Some(env) = setup("notify_drift").await else {
        return;
    };
    let webhook = HttpReceiver::start(Behaviour::Accept).await;
    env.secret("hook", &[("url", &webhook.url), ("signingKey", WHSEC_KEY)]);
    env.guard(
        "[{name: audit, type: webhook, secretRef: {name: hook}, \"on\": [drift]}, {name: banner, type: inApp, \"on\": [drift]}]",
        "  interval: 1s",
    );
    env.request("incident-4");
    let r = common::finished(&env.requests(), "incident-4").await;
    assert_eq!(
        r.status.as_ref().unwrap().phase,
        Some(RequestPhase::Succeeded)
    );
    common::wait_until(Duration::from_secs(10), "guard g to be RolledBack", || {
        let api: Api<rollguard::api::RolloutGuard> =
            Api::namespaced(env.cluster.client.clone(), &env.ns);
        async move {
            let phase = api.get("g").await.ok()?.status?.phase?;
            (phase == rollguard::api::guard::GuardPhase::RolledBack).then_some(())
        }
    })
    .await;
    let (ok, _, err) = env.cluster.kubectl(&[
        "-n",
        &env.ns,
        "patch",
        "configmap",
        "ff",
        "--field-manager",
        "hotfix-script",
        "-p",
        r#"{"data":{"a":"true"}}"#,
    ]);
    assert!(ok, "{err}");
    let drift = wait_until(Duration::from_secs(15), "a drift notification", || {
        let webhook = webhook.clone();
        async move { webhook.accepted().into_iter().next() }
    })
    .await;
    library_accepts(WHSEC_KEY, Form::Str, &drift);
    let body = drift.json();
    assert_eq!(body["event"], "drift");
    assert_eq!(body["guard"], "g");
    assert!(body["request"].is_null());
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("hotfix-script"),
        "names the field manager: {message}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(env.cluster.client.clone(), &env.ns);
    let banner = wait_until(Duration::from_secs(10), "the in-app ConfigMap", || {
        let cms = cms.clone();
        async move { cms.get("rollguard-status").await.ok()?.data }
    })
    .await;
    assert_eq!(banner["state"], "Degraded");
    assert_eq!(banner["event"], "drift");
    // Evaluations go on every second; the drift is one transition, told once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(events_of(&webhook.received()), ["drift"]);
}

#[tokio::test]
async fn a_firing_alert_trigger_is_told_once_with_its_value_and_threshold() {
    let Some(env) = setup("notify_firing").await else {
        return;
    };
    let webhook = HttpReceiver::start(Behaviour::Accept).await;
    let slack = HttpReceiver::start(Behaviour::Accept).await;
    env.secret("hook", &[("url", &webhook.url), ("signingKey", WHSEC_KEY)]);
    env.secret("slack", &[("url", &slack.url)]);
    // Real Prometheus evaluates the query every second; the breach lasts, the trigger fires once.
    env.guard(
        "[{name: audit, type: webhook, secretRef: {name: hook}, \"on\": [triggerFiring]}, \
           {name: ops, type: slack, secretRef: {name: slack}, \"on\": [triggerFiring]}]",
        "  interval: 1s\n  triggers: [{name: errors, query: \"vector(5)\", above: 1, for: 2s, action: alert}]",
    );
    let firing = wait_until(
        Duration::from_secs(20),
        "a triggerFiring notification",
        || {
            let webhook = webhook.clone();
            async move { webhook.accepted().into_iter().next() }
        },
    )
    .await;
    library_accepts(WHSEC_KEY, Form::Str, &firing);
    let body = firing.json();
    assert_eq!(body["event"], "triggerFiring");
    assert_eq!(body["trigger"]["name"], "errors");
    assert_eq!(body["trigger"]["value"], 5.0);
    assert_eq!(body["trigger"]["threshold"], 1.0);
    assert_eq!(body["trigger"]["action"], "alert");
    let text = wait_until(Duration::from_secs(10), "the Slack message", || {
        let slack = slack.clone();
        async move { slack.accepted().into_iter().next() }
    })
    .await
    .json()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.starts_with(&format!("Trigger firing: {}/g", env.ns)),
        "{text}"
    );
    // Evaluations go on every second while it keeps breaching: still one message each.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(events_of(&webhook.received()), ["triggerFiring"]);
    assert_eq!(slack.received().len(), 1);
    assert!(
        env.requests()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn a_restore_is_not_reported_as_drift() {
    let Some(env) = setup("notify_no_drift").await else {
        return;
    };
    let webhook = HttpReceiver::start(Behaviour::Accept).await;
    env.secret("hook", &[("url", &webhook.url), ("signingKey", WHSEC_KEY)]);
    env.guard(
        "[{name: audit, type: webhook, secretRef: {name: hook}, \"on\": [drift]}]",
        "  interval: 1s",
    );
    let guards: Api<rollguard::api::RolloutGuard> =
        Api::namespaced(env.cluster.client.clone(), &env.ns);
    let phase_is = |phase: rollguard::api::guard::GuardPhase| {
        let guards = guards.clone();
        move || {
            let guards = guards.clone();
            async move {
                let s = guards.get("g").await.ok()?.status?;
                (s.phase == Some(phase) && s.active_rollback.is_none()).then_some(())
            }
        }
    };
    env.request("incident-5");
    common::finished(&env.requests(), "incident-5").await;
    wait_until(
        Duration::from_secs(10),
        "guard g to be RolledBack",
        phase_is(rollguard::api::guard::GuardPhase::RolledBack),
    )
    .await;
    env.cluster.apply(&format!(
        "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: back, namespace: {}}}\nspec: {{guardRef: {{name: g}}, requestedBy: alice, action: restore}}\n",
        env.ns
    ));
    let restored = common::finished(&env.requests(), "back").await;
    assert_eq!(
        restored.status.unwrap().phase,
        Some(RequestPhase::Succeeded)
    );
    wait_until(
        Duration::from_secs(10),
        "guard g to be Monitoring",
        phase_is(rollguard::api::guard::GuardPhase::Monitoring),
    )
    .await;
    // Several evaluations later: the flags a restore turned back on are not drift.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        webhook.received().is_empty(),
        "{:?}",
        events_of(&webhook.received())
    );
    assert!(env.events("FlagsDrifted").await.is_empty());
}

#[tokio::test]
async fn the_standard_webhooks_library_verifies_every_delivery_also_with_only_the_second_key() {
    let Some(env) = setup("notify_standard_webhooks").await else {
        return;
    };
    use base64::Engine;
    let raw_as_whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(RAW_KEY)
    );
    // sha256 of "rollguard e2e wrong key": a valid key, but not one in the Secret.
    let wrong = "whsec_fltSQrrakLaX1x3jrv8K9uqobRjdUBdHEIjjMsoZoYk=";
    let Some(receiver) = LibraryReceiver::start(&[
        ("first", WHSEC_KEY, Form::Str),
        ("second", RAW_KEY, Form::Bytes),
        ("second-as-whsec", &raw_as_whsec, Form::Str),
        ("second-as-str", RAW_KEY, Form::Str),
        ("wrong", wrong, Form::Str),
    ]) else {
        return;
    };
    assert_eq!(
        receiver.version,
        common::receivers::tools_var("STANDARDWEBHOOKS_PYPI_VERSION"),
        "the pinned library"
    );
    // Key rotation: the old key (whsec_ form) and the new one (a raw key), both in the Secret.
    let both = format!("{WHSEC_KEY}, {RAW_KEY}");
    // 31 bytes: one too few.
    let short = "only-31-bytes-long-signing-key!";
    assert_eq!(short.len(), 31);
    env.secret(
        "hook-first",
        &[("url", &receiver.url("first")), ("signingKey", &both)],
    );
    env.secret(
        "hook-second",
        &[("url", &receiver.url("second")), ("signingKey", &both)],
    );
    env.secret(
        "hook-short",
        &[("url", &receiver.url("first")), ("signingKey", short)],
    );
    // `first` is answered as the library judges with the first key only, `second` with the
    // second key only: a delivery is Delivered only if the library accepted it.
    env.guard(
        "[{name: first, type: webhook, secretRef: {name: hook-first}, \"on\": [started, completed]}, \
           {name: second, type: webhook, secretRef: {name: hook-second}, \"on\": [started, completed]}, \
           {name: short, type: webhook, secretRef: {name: hook-short}, \"on\": [started]}]",
        "",
    );
    env.request("incident-6");
    let r = env.settled("incident-6").await;
    assert_eq!(
        r.status.as_ref().unwrap().phase,
        Some(RequestPhase::Succeeded)
    );
    for name in ["first", "second"] {
        for event in [NotifyEvent::Started, NotifyEvent::Completed] {
            let n = record(&r, name, event);
            assert_eq!(
                (n.state, n.attempts),
                (DeliveryState::Delivered, 1),
                "{n:#?}"
            );
        }
    }

    let got = receiver.received();
    let paths: Vec<_> = got.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths.len(),
        4,
        "two receivers × two moments, none signed with the short key: {paths:?}"
    );
    let now = jiff::Timestamp::now().as_second();
    for d in &got {
        assert_eq!(d.answered, 200, "{d:#?}");
        // Either key alone verifies, the raw one also in its whsec_ form.
        for verifier in ["first", "second", "second-as-whsec"] {
            assert!(d.accepted_by(verifier), "{verifier}: {:?}", d.verdicts);
        }
        // The library base64-decodes a secret string without whsec_, so a raw key given as a
        // string is another key (README: give it as bytes or in the whsec_ form).
        assert!(!d.accepted_by("second-as-str"), "{:?}", d.verdicts);
        assert!(
            d.verdicts["wrong"].contains("No matching signature found"),
            "{:?}",
            d.verdicts
        );
        let signatures: Vec<_> = d.header("webhook-signature").split(' ').collect();
        assert_eq!(signatures.len(), 2, "one per key: {signatures:?}");
        assert!(signatures.iter().all(|s| s.starts_with("v1,")));
        assert_eq!(d.header("webhook-id"), d.json()["id"].as_str().unwrap());
        assert_eq!(d.header("X-Rollguard-Delivery"), d.header("webhook-id"));
        let signed_at: i64 = d.header("webhook-timestamp").parse().unwrap();
        assert!((now - signed_at).abs() < 120, "{signed_at} vs {now}");
        for old in ["X-Rollguard-Signature", "X-Rollguard-Timestamp"] {
            assert_eq!(d.header(old), "", "{old} is gone");
        }
    }
    let uid = r.metadata.uid.clone().unwrap();
    let mut ids: Vec<_> = got.iter().map(|d| d.header("webhook-id")).collect();
    ids.sort();
    let (started, completed) = (format!("{uid}:started"), format!("{uid}:completed"));
    assert_eq!(ids, [&completed, &completed, &started, &started]);

    // The same delivery sent again verifies (the replay path works); with one body byte
    // changed the library refuses it, whichever key it holds.
    let genuine = got.iter().find(|d| d.path == "/first").unwrap();
    let send = |body: Vec<u8>| {
        let mut request = reqwest::Client::new()
            .post(receiver.url("first"))
            .header("content-type", "application/json")
            .body(body);
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            request = request.header(name, genuine.header(name));
        }
        request.send()
    };
    assert_eq!(send(genuine.body.clone()).await.unwrap().status(), 200);
    let mut tampered = genuine.body.clone();
    let at = tampered.iter().position(|b| *b == b'a').unwrap();
    tampered[at] = b'b';
    assert_eq!(send(tampered).await.unwrap().status(), 401);
    let refused = receiver.received().pop().unwrap();
    assert!(
        refused
            .verdicts
            .values()
            .all(|v| v.contains("No matching signature found")),
        "{:?}",
        refused.verdicts
    );

    // The short key: a permanent failure after one attempt, naming the field, the key and
    // the length, never the key itself.
    let n = record(&r, "short", NotifyEvent::Started);
    assert_eq!((n.state, n.attempts), (DeliveryState::Failed, 1), "{n:#?}");
    for part in ["spec.notify[short].secretRef", "signingKey", "31 bytes"] {
        assert!(n.message.contains(part), "{part:?} not in {:?}", n.message);
    }
    let warnings = env.events("NotificationFailed").await;
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let log = env.operator.as_ref().unwrap().log_text();
    let status = serde_json::to_string(&r.status).unwrap();
    let events = format!("{warnings:?}");
    for key in [short, RAW_KEY, &WHSEC_KEY["whsec_".len()..]] {
        for (what, text) in [("status", &status), ("Events", &events), ("log", &log)] {
            assert!(
                !text.contains(key),
                "a signing key in the operator's {what}"
            );
        }
    }
}

/// Two guards of one namespace share the in-app ConfigMap: each guard's own key stays when
/// the other guard's rollback writes its notice (each guard's notices are applied by a
/// field manager of their own, so one guard's apply never drops the other's key).
#[tokio::test]
async fn in_app_notices_of_two_guards_in_one_namespace_both_stay() {
    let Some(env) = setup("notify_in_app_two_guards").await else {
        return;
    };
    for guard in ["checkout", "search"] {
        env.cluster.apply(&format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: {guard}, namespace: {ns}}}\nspec:\n  flags: {{configMapRef: {{name: ff}}, guarded: [{flag}]}}\n  notify: [{{name: banner, type: inApp}}]\n",
            ns = env.ns,
            flag = if guard == "checkout" { "a" } else { "b" },
        ));
        env.cluster.apply(&format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: {guard}-1, namespace: {ns}}}\nspec: {{guardRef: {{name: {guard}}}, requestedBy: alice, reason: errors}}\n",
            ns = env.ns
        ));
        let r = env.settled(&format!("{guard}-1")).await;
        assert_eq!(
            record(&r, "banner", NotifyEvent::Completed).state,
            DeliveryState::Delivered
        );
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(env.cluster.client.clone(), &env.ns);
    let data = config_maps
        .get("rollguard-status")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    for guard in ["checkout", "search"] {
        let notice: serde_json::Value = serde_json::from_str(
            data.get(&format!("{guard}.json"))
                .unwrap_or_else(|| panic!("{guard}.json is gone: {data:#?}")),
        )
        .unwrap();
        assert_eq!(notice["request"], format!("{guard}-1"), "{notice}");
        assert_eq!(notice["event"], "completed", "{notice}");
    }
    assert_eq!(data["guard"], "search", "the namespace's latest notice");
}
