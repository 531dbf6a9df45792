//! The chart refuses to render more than one replica without leader election: every replica
//! would act on its own (two processes running one rollback, notifications sent twice).
//! Checked with the real helm (tests/cluster/build-tools.sh helm); without it the test says
//! so and returns, except under `CI=true`, where that is a failure.

mod common;

use std::process::Command;

/// `helm template` of the chart with `sets`: (success, stdout, stderr).
fn template(helm: &std::path::Path, sets: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(helm);
    cmd.args([
        "template",
        "rollguard",
        "charts/rollguard",
        "--namespace",
        "rollguard-system",
    ])
    .current_dir(common::repo());
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn several_replicas_without_leader_election_fail_to_render() {
    let Some(helm) = common::helm() else { return };
    for sets in [
        &["leaderElection.enabled=false"][..],
        &["leaderElection.enabled=false", "replicas=3"],
    ] {
        let (ok, out, err) = template(&helm, sets);
        assert!(!ok, "{sets:?} rendered:\n{out}");
        assert!(
            err.contains("leaderElection.enabled=false with replicas")
                && err.contains("every replica would act")
                && err.contains("set leaderElection.enabled=true or replicas=1"),
            "{sets:?}: the message does not say what is wrong and what to do:\n{err}"
        );
    }

    // One replica (or none) without leader election, and the defaults, render.
    for (sets, leader_elect) in [
        (&["leaderElection.enabled=false", "replicas=1"][..], "false"),
        (&["leaderElection.enabled=false", "replicas=0"], "false"),
        (&[], "true"),
        (&["replicas=3"], "true"),
    ] {
        let (ok, out, err) = template(&helm, sets);
        assert!(ok, "{sets:?} did not render:\n{err}");
        assert!(
            out.contains(&format!("- --leader-elect={leader_elect}")),
            "{sets:?}:\n{out}"
        );
    }
}
