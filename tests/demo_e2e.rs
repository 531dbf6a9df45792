//! `make demo` runs straight through (`DEMO_NONINTERACTIVE=1`) and leaves behind, in the
//! cluster, the story it told: an automatic rollback that turned the guarded flags off
//! and told the webhook receiver, and a restore that brought them back; then, with the shop
//! reading a mounted file, a rollback whose flags took effect only with the kubelet's delay
//! and one with `refreshPods` that took effect at once. `make demo-down` then leaves none of
//! the demo's processes running.

mod common;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use rollguard::api::RollbackRequest;
use rollguard::api::request::{DeliveryState, RequestAction, RequestPhase};
use std::path::{Path, PathBuf};
use std::process::Command;

const NS: &str = "shop";
const GUARD: &str = "phase4";
const GUARDED: [&str; 6] = [
    "completion_validation_system",
    "completion_validation_ui",
    "advanced_completion_metrics",
    "byzantine_consensus_validation",
    "intelligent_completion_suggestions",
    "cross_session_completion_memory",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn demo_dir() -> PathBuf {
    repo().join("target/demo")
}

/// Runs a make target to its end (bounded), with its output in target/demo/<log>.
fn make(target: &str, log: &str) -> (bool, String) {
    std::fs::create_dir_all(demo_dir()).unwrap();
    let log = demo_dir().join(log);
    let file = std::fs::File::create(&log).unwrap();
    let status = Command::new("timeout")
        .args(["600", "make", "--no-print-directory", target])
        .current_dir(repo())
        .env("DEMO_NONINTERACTIVE", "1")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .expect("run make");
    (
        status.success(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

/// Whether `pid` is a live process (a zombie waiting for its reaper counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_string())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// Live processes whose command line runs one of the demo's programs.
fn demo_processes() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let ours = cmdline.contains("target/debug/examples/shop")
            || (cmdline.contains("target/debug/rollguard run") && cmdline.contains(" shop "));
        if ours && alive(pid) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

fn pids() -> Vec<(String, u32)> {
    ["operator", "shop"]
        .iter()
        .filter_map(|name| {
            let pid = std::fs::read_to_string(demo_dir().join(format!("{name}.pid"))).ok()?;
            Some((name.to_string(), pid.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn make_demo_rolls_back_notifies_restores_and_demo_down_stops_everything() {
    let Some(cluster) = common::cluster("demo_e2e").await else {
        return;
    };

    let (ok, out) = make("demo", "test-demo.log");
    let operator_log = std::fs::read_to_string(demo_dir().join("operator.log")).unwrap_or_default();
    let shop_log = std::fs::read_to_string(demo_dir().join("shop.log")).unwrap_or_default();
    let context = || {
        format!(
            "--- make demo ---\n{out}\n--- operator.log (tail) ---\n{}\n--- shop.log ---\n{shop_log}",
            operator_log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    if !ok {
        make("demo-down", "test-demo-down.log");
        panic!("make demo failed\n{}", context());
    }
    assert!(out.contains("The end"), "{}", context());

    // The processes are still running after the story, for people to explore.
    let started = pids();
    assert_eq!(started.len(), 2, "pid files: {started:?}\n{}", context());
    for (name, pid) in &started {
        assert!(
            alive(*pid),
            "{name} (pid {pid}) is not running after make demo"
        );
    }

    // From the cluster: the demo starts by deleting its previous requests, so every
    // request of the guard is from this run.
    let requests: Api<RollbackRequest> = Api::namespaced(cluster.client.clone(), NS);
    let mine: Vec<RollbackRequest> = requests
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| r.spec.guard_ref.name == GUARD)
        .collect();
    let name = |r: &RollbackRequest| r.metadata.name.clone().unwrap_or_default();

    // 1. The automatic rollback: created by the operator, fired by the error-rate trigger,
    //    every guarded flag turned off, and the webhook receiver told.
    let autos: Vec<&RollbackRequest> = mine
        .iter()
        .filter(|r| name(r).starts_with(&format!("{GUARD}-auto-")))
        .collect();
    assert_eq!(autos.len(), 1, "one automatic rollback\n{}", context());
    let auto = autos[0];
    let status = auto.status.clone().unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Succeeded), "{status:?}");
    assert_eq!(auto.spec.action, RequestAction::Rollback);
    assert_eq!(auto.spec.requested_by, "system:rollguard");
    assert_eq!(
        status.triggered_by.as_ref().map(|t| t.trigger.as_str()),
        Some("critical-error-rate")
    );
    let changed = status.flags_changed.clone().unwrap_or_default();
    for flag in GUARDED {
        assert!(
            changed
                .iter()
                .any(|c| c.name == flag && c.from == "true" && c.to == "false"),
            "{flag} not turned off by the automatic rollback: {changed:?}"
        );
    }
    assert!(
        !changed.iter().any(|c| c.name == "checkout_v2"),
        "an unguarded flag was changed: {changed:?}"
    );
    let auto_effective = status.durations.as_ref().and_then(|d| d.flag_effective);
    assert!(auto_effective.is_some(), "{:?}", status.durations);
    let notifications = status.notifications.clone();
    for event in ["started", "completed"] {
        assert!(
            notifications.iter().any(|n| n.receiver == "ops-webhook"
                && serde_json::to_value(n.event).unwrap() == event
                && n.state == DeliveryState::Delivered),
            "webhook '{event}' not Delivered: {notifications:?}"
        );
    }
    // ... and the receiver verified the signature of what it was sent.
    let auto_name = name(auto);
    assert!(
        shop_log
            .lines()
            .any(|l| l.contains("[webhook] signature OK")
                && l.contains("event=completed")
                && l.contains(&auto_name)),
        "the webhook receiver did not verify the 'completed' notification\n{shop_log}"
    );
    assert!(!shop_log.contains("REJECTED"), "{shop_log}");

    // 2. The restores: a person's requests that put every flag back on (after the automatic
    //    rollback and after each of chapter 8's).
    let mut restores: Vec<&RollbackRequest> = mine
        .iter()
        .filter(|r| r.spec.action == RequestAction::Restore)
        .collect();
    restores.sort_by_key(|r| (r.metadata.creation_timestamp.clone(), name(r)));
    assert_eq!(restores.len(), 3, "three restores\n{}", context());
    for r in &restores {
        let phase = r.status.as_ref().and_then(|s| s.phase);
        assert_eq!(phase, Some(RequestPhase::Succeeded), "{}", name(r));
    }
    let restore = restores[0].status.clone().unwrap();
    assert_eq!(restore.phase, Some(RequestPhase::Succeeded), "{restore:?}");
    assert_ne!(restores[0].spec.requested_by, "system:rollguard");
    let restored = restore.flags_changed.clone().unwrap_or_default();
    for flag in GUARDED {
        assert!(
            restored
                .iter()
                .any(|c| c.name == flag && c.from == "false" && c.to == "true"),
            "{flag} not restored: {restored:?}"
        );
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), NS);
    let data = config_maps
        .get("feature-flags")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    for flag in GUARDED.iter().chain(&["checkout_v2"]) {
        assert_eq!(
            data.get(*flag).map(String::as_str),
            Some("true"),
            "{flag}: {data:?}"
        );
    }

    // 3. Chapter 8: the shop reads a file the stand-in kubelet updates 20 s late. Without
    //    refreshPods the flags took effect that late after the ConfigMap changed; with it, at
    //    once, and the pod was refreshed.
    let mut by_hand: Vec<&RollbackRequest> = mine
        .iter()
        .filter(|r| {
            r.spec.action == RequestAction::Rollback
                && !name(r).starts_with(&format!("{GUARD}-auto-"))
        })
        .collect();
    by_hand.sort_by_key(|r| (r.metadata.creation_timestamp.clone(), name(r)));
    assert_eq!(by_hand.len(), 2, "two rollbacks by hand\n{}", context());
    let gap = |r: &RollbackRequest| {
        let d = r
            .status
            .as_ref()
            .and_then(|s| s.durations.clone())
            .unwrap_or_default();
        match (d.flag_disable, d.flag_effective) {
            (Some(disable), Some(effective)) => effective - disable,
            _ => panic!("{}: durations {d:?}\n{}", name(r), context()),
        }
    };
    const KUBELET_DELAY: f64 = 20.0;
    let (slow, fast) = (gap(by_hand[0]), gap(by_hand[1]));
    assert!(
        slow >= KUBELET_DELAY && fast < KUBELET_DELAY,
        "flagEffective - flagDisable: {slow} s without refreshPods, {fast} s with it\n{}",
        context()
    );
    let refreshed = by_hand[1]
        .status
        .iter()
        .flat_map(|s| &s.timeline)
        .any(|t| t.step == "PodsRefreshed" && t.message.starts_with("annotated 1 pod(s)"));
    assert!(refreshed, "{:?}", by_hand[1].status);

    // 4. make demo-down: nothing of ours keeps running, the scrape targets are gone.
    let sd_files: Vec<String> = std::fs::read_to_string(demo_dir().join("sd-files"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(!sd_files.is_empty());
    let (ok, out) = make("demo-down", "test-demo-down.log");
    assert!(ok, "make demo-down failed:\n{out}");
    for (name, pid) in &started {
        assert!(
            !alive(*pid),
            "{name} (pid {pid}) still running after make demo-down"
        );
    }
    let left = demo_processes();
    assert!(left.is_empty(), "still running: {left:?}");
    for file in sd_files {
        assert!(!Path::new(&file).exists(), "{file} left behind");
    }
    assert!(pids().is_empty(), "pid files left behind");
}
