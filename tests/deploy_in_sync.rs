//! `deploy/rollguard.yaml` must be the chart rendered with its default values
//! (`deploy/render.sh`, run by `make deploy`), so plain-manifest users get what Helm users
//! get. Needs helm (tests/cluster/build-tools.sh helm); without it the test says so and
//! returns, except under `CI=true`, where that is a failure.

mod common;

use std::process::Command;

#[test]
fn deploy_manifests_are_the_chart_rendered_with_default_values() {
    let Some(helm) = common::helm() else { return };
    let out = Command::new(common::repo().join("deploy/render.sh"))
        .env("HELM", &helm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/render.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let committed =
        std::fs::read_to_string(common::repo().join("deploy/rollguard.yaml")).unwrap_or_default();
    if committed != rendered {
        let first = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(rendered.lines().count()));
        panic!(
            "deploy/rollguard.yaml is out of date with charts/rollguard (first difference at line {}); run `make deploy` and commit the result",
            first + 1
        );
    }
    // The CRDs in it are the ones the Rust types define.
    let crds = rollguard::crd::render().unwrap();
    assert!(
        rendered.contains(crds.trim_start_matches("---\n").trim_end()),
        "deploy/rollguard.yaml holds other CRDs than `rollguard crd` prints; run `make crds`"
    );
}
