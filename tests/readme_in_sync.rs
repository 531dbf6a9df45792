//! README.md's CRD field reference is the one the schema generates: run
//! `make readme-reference` after changing a field, a default or a doc comment.

use rollguard::crd::reference::{BEGIN_MARKER, END_MARKER, markdown, splice};

#[test]
fn readme_crd_reference_matches_the_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("read README.md");
    let regenerated = splice(&readme, &markdown())
        .unwrap_or_else(|| panic!("README.md has no {BEGIN_MARKER} ... {END_MARKER} section"));
    if regenerated != readme {
        let old: Vec<&str> = readme.lines().collect();
        let new: Vec<&str> = regenerated.lines().collect();
        let first = old
            .iter()
            .zip(&new)
            .position(|(a, b)| a != b)
            .unwrap_or(old.len().min(new.len()));
        panic!(
            "README.md's CRD reference is stale: run `make readme-reference`.\n\
             first difference at line {}:\n  README:    {}\n  generated: {}",
            first + 1,
            old.get(first).unwrap_or(&"<end>"),
            new.get(first).unwrap_or(&"<end>"),
        );
    }
}
