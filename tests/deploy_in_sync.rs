//! `deploy/rollguard.yaml` must be the chart rendered with its default values
//! (`deploy/render.sh`, run by `make deploy`), so plain-manifest users get what Helm users
//! get. Needs helm (tests/cluster/build-tools.sh helm); without it the test says so and
//! returns, except under `CI=true`, where that is a failure.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cached helm binary, or None (with a message) outside CI.
pub fn helm() -> Option<std::path::PathBuf> {
    let out = Command::new("bash")
        .arg("-c")
        .arg("source tests/cluster/versions.sh && echo \"$TOOLS_BIN/helm\"")
        .current_dir(repo())
        .output()
        .unwrap();
    let path = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "no helm at {}: run `tests/cluster/build-tools.sh helm` (make test does)",
        path.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

#[test]
fn deploy_manifests_are_the_chart_rendered_with_default_values() {
    let Some(helm) = helm() else { return };
    let out = Command::new(repo().join("deploy/render.sh"))
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
        std::fs::read_to_string(repo().join("deploy/rollguard.yaml")).unwrap_or_default();
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
