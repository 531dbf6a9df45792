//! `crds/` must hold exactly what `rollguard crd` prints, so what users apply is what the
//! Rust types define.

#[test]
fn crds_directory_and_chart_match_rollguard_crd_output() {
    let expected = rollguard::crd::render().unwrap();
    for file in [
        "crds/rollguard.dev.yaml",
        "charts/rollguard/crds/rollguard.dev.yaml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == expected,
            "{file} is out of date with the Rust types; run `make crds` and commit the result"
        );
    }
}

#[test]
fn rollguard_crd_binary_prints_the_same_yaml() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollguard"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        rollguard::crd::render().unwrap()
    );
}
