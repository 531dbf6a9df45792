//! `deploy/rollguard.yaml` must be the chart rendered with its default values
//! (`deploy/render.sh`, run by `make deploy`), so plain-manifest users get what Helm users
//! get. Needs helm (tests/cluster/build-tools.sh helm); without it the test says so and
//! returns, except under `CI=true`, where that is a failure. The Dockerfile is checked against
//! the crate and the chart here too.

mod common;

use std::path::{Path, PathBuf};
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

/// No Docker engine runs on the machines this project is built on, so the image itself is not
/// built here. What can break silently is checked instead: the build stage's context holds
/// everything cargo needs (a new top-level path, a declared target whose file was not copied,
/// or a stale Cargo.lock would fail `docker build`), every binary lands in the runtime image,
/// and the image runs as non-root on the port the chart probes.
#[test]
fn dockerfile_build_context_and_runtime_image_match_the_crate_and_chart() {
    let dockerfile = std::fs::read_to_string(common::repo().join("Dockerfile")).unwrap();
    let mut stages: Vec<String> = Vec::new();
    for line in dockerfile.lines() {
        if line.starts_with("FROM ") {
            stages.push(String::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push_str(line);
            stage.push('\n');
        }
    }
    let [build, runtime] = stages.as_slice() else {
        panic!(
            "expected a build and a runtime stage, found {}",
            stages.len()
        )
    };

    // The build context, as the build stage's COPY lines lay it out.
    let context = tempdir("dockerfile-context");
    for line in build.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let (dest, sources) = words.split_last().unwrap();
        for source in sources {
            let from = common::repo().join(source);
            let to = if dest.ends_with('/') && from.is_file() {
                context.join(dest).join(from.file_name().unwrap())
            } else {
                context.join(dest)
            };
            copy_tree(&from, &to);
        }
    }
    let linux = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let metadata = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        // The image is Linux; other platforms' dependencies are never downloaded here.
        .args(["--filter-platform", &linux])
        .current_dir(&context)
        .output()
        .unwrap();
    assert!(
        metadata.status.success(),
        "cargo cannot read the Dockerfile's build context (is a path missing from its COPY lines, or is Cargo.lock stale?):\n{}",
        String::from_utf8_lossy(&metadata.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let root = metadata["resolve"]["root"].as_str().unwrap();
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == root)
        .unwrap();
    let targets = package["targets"].as_array().unwrap();
    std::fs::remove_dir_all(&context).unwrap();
    // `cargo metadata` quietly leaves out a declared target whose file is missing, where
    // `cargo build` refuses the manifest: the context must have every target the repository
    // has, but for tests and examples, which cargo only finds if they are there.
    let in_repo = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--offline",
            "--no-deps",
            "--format-version",
            "1",
        ])
        .current_dir(common::repo())
        .output()
        .unwrap();
    let in_repo: serde_json::Value = serde_json::from_slice(&in_repo.stdout).unwrap();
    let kinds = |t: &serde_json::Value| t["kind"].as_array().unwrap().clone();
    let key = |t: &serde_json::Value| format!("{} {:?}", t["name"], kinds(t));
    let in_context: Vec<String> = targets.iter().map(key).collect();
    for target in in_repo["packages"][0]["targets"].as_array().unwrap() {
        if kinds(target).iter().any(|k| k == "test" || k == "example") {
            continue;
        }
        assert!(
            in_context.contains(&key(target)),
            "the Dockerfile's build context lacks {}, the file of target {}",
            target["src_path"],
            key(target)
        );
    }
    let binaries: Vec<&str> = targets
        .iter()
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(binaries.contains(&"rollguard") && binaries.contains(&"kubectl-rollguard"));
    for binary in &binaries {
        assert!(
            runtime.contains(&format!("COPY --from=build /src/target/release/{binary} ")),
            "the runtime image lacks the binary {binary}"
        );
    }

    // Non-root, on the chart's metrics port.
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("USER is numeric");
    assert_ne!(uid, 0, "USER must not be root");
    let values =
        std::fs::read_to_string(common::repo().join("charts/rollguard/values.yaml")).unwrap();
    let port = values
        .lines()
        .find_map(|l| l.strip_prefix("metricsPort: "))
        .expect("values.yaml sets metricsPort");
    assert!(
        runtime.lines().any(|l| l == format!("EXPOSE {port}")),
        "the image should EXPOSE the chart's metricsPort {port}"
    );
}

fn tempdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}
