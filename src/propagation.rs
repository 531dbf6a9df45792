//! The propagation check (SPEC §6, `spec.health.propagation`): when did the applications stop
//! serving the on-variant of the flags a rollback turned off? Pure: the query for a moment of
//! verification and the judgement of its answer; the reconciler asks Prometheus.
//!
//! The query reads the applications' flag-evaluation telemetry (OpenTelemetry feature-flag
//! semantic conventions, exported by OpenFeature SDK hooks: evaluations by `feature_flag.key`
//! and `feature_flag.result.variant`, in Prometheus `feature_flag_key` and
//! `feature_flag_result_variant`). `$FLAGS` in its strings stands for the flags the request
//! changed, as a regex alternation. The substitution is made in the parsed query, not in its
//! text, so the names are escaped for the regex and, when the query is rendered again, for
//! the PromQL string they sit in, whatever quotes the user wrote.
//!
//! A rate keeps counting evaluations for its whole range after they stopped: `[30s]` reads
//! "serving" up to 30 s after the last one. So every range is shortened to the shortest that
//! holds two samples (two guard intervals, [`crate::triggers::window::floor`]; never
//! lengthened): the answer says whether the on-variant was served in the last two intervals.
//!
//! An answer only covers what Prometheus has scraped: evaluations since the last scrape are
//! not in it yet. So a "none" is believed once it still holds one guard interval later (an
//! interval no shorter than the scrape interval: by then a scrape has shown anything served
//! before the first "none"), and the moment of the first "none" of that run is when the flags
//! became effective: never before the last instance stopped serving the on-variant, late by at
//! most the window plus one scrape interval and one verification poll.

use crate::triggers::Series;
use crate::triggers::window;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr};
use std::time::Duration;

/// What `$FLAGS` stands for.
pub const FLAGS: &str = "$FLAGS";

/// What validation expands `$FLAGS` to: one name with every character a flag name may have
/// that a regex or a PromQL string treats specially.
const PLACEHOLDER: &str = "placeholder.flag-name_1";

/// The flags as a regex alternation, each name escaped (`a\.b|c`).
pub fn alternation(flags: &[String]) -> String {
    flags
        .iter()
        .map(|f| regex::escape(f))
        .collect::<Vec<_>>()
        .join("|")
}

/// `query` with `$FLAGS` in its label matchers and strings replaced by the alternation of
/// `flags`. A `$FLAGS` in an `=`/`!=` matcher is refused: an alternation only means "any of
/// these" to `=~`/`!~`.
pub fn expand(query: &str, flags: &[String]) -> Result<Expr, String> {
    let mut expr = parser::parse(query).map_err(|e| e.trim().to_string())?;
    let flags = alternation(flags);
    let mut problem = None;
    window::visit_mut(&mut expr, &mut |e| {
        let matchers = match e {
            Expr::VectorSelector(vs) => &mut vs.matchers,
            Expr::MatrixSelector(ms) => &mut ms.vs.matchers,
            Expr::StringLiteral(s) => {
                s.val = s.val.replace(FLAGS, &flags);
                return;
            }
            _ => return,
        };
        let all = matchers
            .matchers
            .iter_mut()
            .chain(matchers.or_matchers.iter_mut().flatten());
        for m in all {
            if let Err(e) = substitute(m, &flags) {
                problem.get_or_insert(e);
            }
        }
    });
    match problem {
        Some(problem) => Err(problem),
        None => Ok(expr),
    }
}

fn substitute(m: &mut Matcher, flags: &str) -> Result<(), String> {
    if !m.value.contains(FLAGS) {
        return Ok(());
    }
    if matches!(m.op, MatchOp::Equal | MatchOp::NotEqual) {
        return Err(format!(
            "{FLAGS} is a regex alternation; match it with =~ or !~ (found {m})"
        ));
    }
    m.value = m.value.replace(FLAGS, flags);
    Ok(())
}

/// Why `query` cannot serve as `spec.health.propagation.query`, naming the field: it does
/// not parse, uses `$FLAGS` where an alternation means nothing, or does not parse once
/// `$FLAGS` is expanded.
pub fn validate(query: &str) -> Result<(), String> {
    let field = "spec.health.propagation.query";
    let rendered = at(query, &[PLACEHOLDER.to_string()], Duration::from_secs(2))
        .map_err(|e| format!("{field}: {e}"))?;
    parser::parse(&rendered).map(|_| ()).map_err(|e| {
        format!(
            "{field}: with {FLAGS} expanded it does not parse as PromQL ({rendered}): {}",
            e.trim()
        )
    })
}

/// The query verification sends: `$FLAGS` expanded to `flags`, every range (and subquery
/// range) not moved in time at most `window`.
pub fn at(query: &str, flags: &[String], window: Duration) -> Result<String, String> {
    let mut expr = expand(query, flags)?;
    window::shorten(&mut expr, window);
    Ok(expr.to_string())
}

/// What one answer of the propagation query says.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// Empty, or every series 0: no instance served the on-variant within the window.
    Effective,
    /// Some instance still serves it; the largest value (NaN or a negative value, which
    /// prove nothing, count as serving: the check fails closed).
    Serving(f64),
}

/// What an answer means for verification, given `since`: the first answer of the current run
/// of answers that said "none" (kept between polls).
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Still serving, or "none" not yet confirmed: wait, remembering when "none" began.
    Wait { since: Option<jiff::Timestamp> },
    /// "None" since this moment, and still "none" `confirm_after` later.
    Effective(jiff::Timestamp),
}

/// `reading` at `at` (None: the query failed, which proves nothing), after a run of "none"
/// that began at `since`.
pub fn settle(
    since: Option<jiff::Timestamp>,
    reading: Option<&Reading>,
    at: jiff::Timestamp,
    confirm_after: Duration,
) -> Verdict {
    if reading != Some(&Reading::Effective) {
        return Verdict::Wait { since: None };
    }
    let since = since.filter(|s| *s <= at).unwrap_or(at);
    if at.duration_since(since).unsigned_abs() >= confirm_after {
        Verdict::Effective(since)
    } else {
        Verdict::Wait { since: Some(since) }
    }
}

pub fn judge(answer: &[Series]) -> Reading {
    let serving: Vec<f64> = answer
        .iter()
        .map(|s| s.value)
        .filter(|v| *v != 0.0)
        .collect();
    if serving.is_empty() {
        return Reading::Effective;
    }
    Reading::Serving(
        serving
            .iter()
            .copied()
            .reduce(|a, b| if b.is_nan() || b > a { b } else { a })
            .unwrap_or(f64::NAN),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    const SPEC_QUERY: &str = r#"sum(rate(feature_flag_evaluations_total{feature_flag_key=~"$FLAGS",feature_flag_result_variant!="off"}[30s]))"#;

    #[test]
    fn flags_expand_to_an_escaped_alternation_that_prometheus_reads_back() {
        assert_eq!(alternation(&flags(&["a", "b.c", "d+e"])), r"a|b\.c|d\+e");
        let q = at(
            SPEC_QUERY,
            &flags(&["new.checkout", "beta"]),
            Duration::from_secs(2),
        )
        .unwrap();
        // The backslash is doubled inside the PromQL string, and the range shortened.
        assert!(
            q.contains(r#"feature_flag_key=~"new\\.checkout|beta""#),
            "{q}"
        );
        assert!(q.contains("[2s]"), "{q}");
        // Parsed again, the matcher's value is the regex itself, and it matches the names
        // (anchored, as Prometheus anchors label regexes) and nothing else.
        let Expr::Aggregate(a) = parser::parse(&q).unwrap() else {
            panic!("{q}")
        };
        let Expr::Call(c) = *a.expr else { panic!() };
        let Expr::MatrixSelector(m) = &*c.args.args[0] else {
            panic!()
        };
        let key =
            m.vs.matchers
                .matchers
                .iter()
                .find(|m| m.name == "feature_flag_key")
                .unwrap();
        let re = regex::Regex::new(&format!("^(?:{})$", key.value)).unwrap();
        assert!(re.is_match("new.checkout") && re.is_match("beta"));
        assert!(!re.is_match("newXcheckout") && !re.is_match("beta2"));
    }

    #[test]
    fn raw_strings_and_string_arguments_expand_too() {
        let q = at(
            r#"count(label_replace(x{k=~`$FLAGS`}, "f", "$1", "k", "($FLAGS)")) > 0"#,
            &flags(&["a.b"]),
            Duration::from_secs(2),
        )
        .unwrap();
        assert!(q.contains(r#"k=~"a\\.b""#), "{q}");
        assert!(q.contains(r#""(a\\.b)""#), "{q}");
        assert!(!q.contains(FLAGS), "{q}");
    }

    #[test]
    fn ranges_shrink_to_the_window_and_never_grow() {
        let q = at(
            "sum(rate(x[30s])) + sum(increase(y[1s])) + max_over_time(z[1m:1s])",
            &[],
            Duration::from_secs(4),
        )
        .unwrap();
        assert_eq!(
            parser::parse(&q).unwrap(),
            parser::parse("sum(rate(x[4s])) + sum(increase(y[1s])) + max_over_time(z[4s:1s])")
                .unwrap()
        );
    }

    #[test]
    fn validation_names_the_field_and_what_is_wrong() {
        assert_eq!(validate(SPEC_QUERY), Ok(()));
        assert_eq!(validate("sum(feature_flag_on)"), Ok(()));
        let unparsable = validate("sum(rate(x{k=~\"$FLAGS\"}[30s])").unwrap_err();
        assert!(
            unparsable.starts_with("spec.health.propagation.query: "),
            "{unparsable}"
        );
        let outside = validate("sum(rate($FLAGS[30s]))").unwrap_err();
        assert!(
            outside.starts_with("spec.health.propagation.query: "),
            "{outside}"
        );
        let equal = validate(r#"sum(x{feature_flag_key="$FLAGS"})"#).unwrap_err();
        assert!(
            equal.contains("match it with =~ or !~") && equal.contains("feature_flag_key"),
            "{equal}"
        );
    }

    #[test]
    fn none_is_believed_once_it_still_holds_an_interval_later_and_dates_from_its_first_answer() {
        let t = |s: i64| jiff::Timestamp::from_second(1_800_000_000 + s).unwrap();
        let interval = Duration::from_secs(2);
        let none = Reading::Effective;
        let serving = Reading::Serving(3.0);
        // The first "none" starts the run; it is not believed yet.
        assert_eq!(
            settle(None, Some(&none), t(0), interval),
            Verdict::Wait { since: Some(t(0)) }
        );
        assert_eq!(
            settle(Some(t(0)), Some(&none), t(1), interval),
            Verdict::Wait { since: Some(t(0)) }
        );
        // An interval later, still "none": effective since the first one.
        assert_eq!(
            settle(Some(t(0)), Some(&none), t(2), interval),
            Verdict::Effective(t(0))
        );
        // A scrape that shows serving after all, or a failed query, ends the run.
        assert_eq!(
            settle(Some(t(0)), Some(&serving), t(1), interval),
            Verdict::Wait { since: None }
        );
        assert_eq!(
            settle(Some(t(0)), None, t(3), interval),
            Verdict::Wait { since: None }
        );
        // A remembered start in the future (a clock step) is not believed.
        assert_eq!(
            settle(Some(t(9)), Some(&none), t(3), interval),
            Verdict::Wait { since: Some(t(3)) }
        );
    }

    fn series(values: &[f64]) -> Vec<Series> {
        values.iter().map(|v| Series::new(*v)).collect()
    }

    #[test]
    fn effective_only_when_empty_or_every_series_is_zero() {
        assert_eq!(judge(&[]), Reading::Effective);
        assert_eq!(judge(&series(&[0.0, 0.0])), Reading::Effective);
        assert_eq!(judge(&series(&[0.0, 2.5, 1.0])), Reading::Serving(2.5));
        // What proves nothing does not pass.
        assert!(matches!(judge(&series(&[f64::NAN])), Reading::Serving(v) if v.is_nan()));
        assert_eq!(judge(&series(&[-1.0])), Reading::Serving(-1.0));
    }
}
