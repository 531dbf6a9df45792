//! Golden files: rendered output checked against `tests/golden/<name>`, shared by the
//! report unit tests (`src/report_tests.rs`) and the plugin end-to-end test.
//!
//! Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test --features fault-injection --lib report` (and
//! `--test plugin_e2e` for the `e2e-*` files), then review the diff. Under `CI=true`
//! regeneration is refused, so CI always compares.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn update_requested() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Panics with a diff unless `actual` equals the golden file `name` (rewrites it instead
/// when `UPDATE_GOLDEN=1`).
pub fn check(name: &str, actual: &str) {
    if let Err(message) = compare(name, actual, update_requested()) {
        panic!("{message}");
    }
}

/// The comparison itself: Ok when equal (or rewritten), else a message naming the first
/// differing line.
pub fn compare(name: &str, actual: &str, update: bool) -> Result<(), String> {
    let file = path(name);
    if update {
        if std::env::var("CI").as_deref() == Ok("true") {
            return Err(format!(
                "UPDATE_GOLDEN is refused under CI=true ({name} was not rewritten)"
            ));
        }
        std::fs::write(&file, actual).map_err(|e| format!("writing {}: {e}", file.display()))?;
        eprintln!("updated golden file {}", file.display());
        return Ok(());
    }
    let expected = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "golden file {} unreadable ({e}); create it with UPDATE_GOLDEN=1",
            file.display()
        )
    })?;
    if expected == actual {
        return Ok(());
    }
    let (line, want, got) = expected
        .lines()
        .map(Some)
        .chain(std::iter::repeat(None))
        .zip(actual.lines().map(Some).chain(std::iter::repeat(None)))
        .enumerate()
        .take(expected.lines().count().max(actual.lines().count()) + 1)
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i + 1, a.unwrap_or("<end>"), b.unwrap_or("<end>")))
        .unwrap_or((0, "<trailing newline>", "<differs>"));
    Err(format!(
        "output differs from golden file {} at line {line}:\n  golden: {want:?}\n  actual: {got:?}\n\
         --- actual output ---\n{actual}--- end ---\n\
         If the change is intended, regenerate with UPDATE_GOLDEN=1 and review the diff.",
        file.display()
    ))
}

/// Replaces what differs between runs on a real control plane: timestamps
/// (`2026-11-27T10:15:00.041Z`, `2026-11-27 10:15:00.041Z`, `10:15:00.041`) become
/// `<time>`, ages (`3m20s ago`) `<age> ago`, measured seconds (`0.041s`, `0.0s`) `<secs>`,
/// `resourceVersion 355` `resourceVersion <rv>`, and runs of spaces after a line's
/// indentation one space (column widths follow the names, which the caller replaces too).
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if let Some(len) = timestamp_len(&chars[i..]) {
            out.push_str("<time>");
            i += len;
        } else if let Some(len) = age_len(&chars[i..]) {
            out.push_str("<age> ago");
            i += len;
        } else if let Some(len) = seconds_len(&chars[i..]) {
            out.push_str("<secs>");
            i += len;
        } else if let Some(len) = resource_version_len(&chars[i..]) {
            out.push_str("resourceVersion <rv>");
            i += len;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out.lines()
        .map(|l| {
            let body = l.trim_start_matches(' ');
            let words: Vec<&str> = body.split(' ').filter(|w| !w.is_empty()).collect();
            format!("{}{}\n", &l[..l.len() - body.len()], words.join(" "))
        })
        .collect()
}

fn digits(c: &[char], n: usize) -> bool {
    c.len() >= n && c[..n].iter().all(char::is_ascii_digit)
}

/// `HH:MM:SS` with optional `.fff` and `Z`.
fn clock_len(c: &[char]) -> Option<usize> {
    if !(digits(c, 2)
        && c.get(2) == Some(&':')
        && digits(&c[3..], 2)
        && c.get(5) == Some(&':')
        && digits(&c[6..], 2))
    {
        return None;
    }
    let mut n = 8;
    if c.get(n) == Some(&'.') && c.get(n + 1).is_some_and(char::is_ascii_digit) {
        n += 1;
        while c.get(n).is_some_and(char::is_ascii_digit) {
            n += 1;
        }
    }
    if c.get(n) == Some(&'Z') {
        n += 1;
    }
    Some(n)
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fff][Z]` or a bare clock time.
fn timestamp_len(c: &[char]) -> Option<usize> {
    let date = digits(c, 4)
        && c.get(4) == Some(&'-')
        && digits(&c[5..], 2)
        && c.get(7) == Some(&'-')
        && digits(&c[8..], 2)
        && matches!(c.get(10), Some('T' | ' '));
    if date && let Some(n) = clock_len(&c[11..]) {
        return Some(11 + n);
    }
    clock_len(c)
}

/// `45s ago`, `3m20s ago`, `2h5m ago`, `3d ago`.
fn age_len(c: &[char]) -> Option<usize> {
    let mut n = 0;
    let mut parts = 0;
    loop {
        let start = n;
        while c.get(n).is_some_and(char::is_ascii_digit) {
            n += 1;
        }
        if n == start || !matches!(c.get(n), Some('d' | 'h' | 'm' | 's')) {
            n = start;
            break;
        }
        n += 1;
        parts += 1;
    }
    let rest: String = c.get(n..n + 4)?.iter().collect();
    (parts > 0 && rest == " ago").then_some(n + 4)
}

/// `0.041s`, `0.0s`: digits, a point, digits, `s`.
fn seconds_len(c: &[char]) -> Option<usize> {
    let run = |from: usize| {
        (from..)
            .take_while(|&i| c.get(i).is_some_and(char::is_ascii_digit))
            .count()
    };
    let whole = run(0);
    if whole == 0 || c.get(whole) != Some(&'.') {
        return None;
    }
    let fraction = run(whole + 1);
    let end = whole + 1 + fraction;
    (fraction > 0 && c.get(end) == Some(&'s')).then_some(end + 1)
}

/// `resourceVersion 355`.
fn resource_version_len(c: &[char]) -> Option<usize> {
    const WORD: &str = "resourceVersion ";
    let n = WORD.len();
    if c.len() <= n || c[..n].iter().copied().ne(WORD.chars()) {
        return None;
    }
    let version = (n..)
        .take_while(|&i| c.get(i).is_some_and(char::is_ascii_digit))
        .count();
    (version > 0).then_some(n + version)
}
