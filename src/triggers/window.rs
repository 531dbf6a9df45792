//! How a rollback trigger is judged after the flags changed (SPEC §2 step 5, *Verify*).
//!
//! A trigger such as `rate(errors[5m])` keeps counting the errors from before the rollback
//! for five minutes after they stopped, longer than `health.timeout` allows: verification on
//! the trigger's own query could not pass. So verification asks the same question about the
//! time since the flags changed: every range in the query (range selectors and subqueries)
//! is shortened to that time, never below a floor that lets a range hold two samples, never
//! beyond its own length. Until the time since the change reaches the floor (or the range,
//! if shorter), the trigger is not judged yet. A range moved in time (`offset`, `@`) looks at
//! another moment than "now", not at the time since the change, and is left as it is.

use promql_parser::parser::{self, Expr};
use std::time::Duration;

/// What verification does with one trigger query at a moment after the flags changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Judge the trigger on this query (the trigger's own when it has no range).
    Query(String),
    /// Too early: the query's ranges would still reach back before the change.
    WaitFor(Duration),
}

/// The shortest range verification asks for: two guard intervals (a range must hold two
/// samples, and a guard's interval is no shorter than the scrape interval).
pub fn floor(interval: Duration) -> Duration {
    2 * interval
}

/// How long after the flags change verification can first judge `query` (zero for a query
/// without ranges); None if it does not parse.
pub fn judged_after(query: &str, floor: Duration) -> Option<Duration> {
    match verification_query(query, Duration::ZERO, floor).ok()? {
        Verification::Query(_) => Some(Duration::ZERO),
        Verification::WaitFor(wait) => Some(wait),
    }
}

/// The query that judges `query` `since` after the flags changed (see the module docs).
/// `floor`: the shortest range worth asking for (two samples: at least two scrape intervals).
pub fn verification_query(
    query: &str,
    since: Duration,
    floor: Duration,
) -> Result<Verification, String> {
    let mut expr = parser::parse(query)?;
    let Some(longest) = longest_range(&expr) else {
        return Ok(Verification::Query(query.to_string()));
    };
    let ready_at = floor.min(longest);
    if since < ready_at {
        return Ok(Verification::WaitFor(ready_at - since));
    }
    // Whole seconds: the time since the change, rounded down, at least the floor.
    let window = Duration::from_secs(since.as_secs()).max(floor);
    shorten(&mut expr, window);
    Ok(Verification::Query(expr.to_string()))
}

fn longest_range(expr: &Expr) -> Option<Duration> {
    let mut longest = None;
    visit(expr, &mut |e| {
        let range = match e {
            Expr::MatrixSelector(m) if !moved(&m.vs.offset, &m.vs.at) => Some(m.range),
            Expr::Subquery(s) if !moved(&s.offset, &s.at) => Some(s.range),
            _ => None,
        };
        longest = longest.max(range);
    });
    longest
}

fn moved<O, A>(offset: &Option<O>, at: &Option<A>) -> bool {
    offset.is_some() || at.is_some()
}

fn visit(expr: &Expr, f: &mut impl FnMut(&Expr)) {
    f(expr);
    for child in children(expr) {
        visit(child, f);
    }
}

/// Calls `f` on `expr` and on every expression inside it, depth first.
pub fn visit_mut(expr: &mut Expr, f: &mut impl FnMut(&mut Expr)) {
    f(expr);
    let children: Vec<&mut Expr> = match expr {
        Expr::Aggregate(a) => [Some(&mut *a.expr), a.param.as_deref_mut()]
            .into_iter()
            .flatten()
            .collect(),
        Expr::Unary(u) => vec![&mut *u.expr],
        Expr::Binary(b) => vec![&mut *b.lhs, &mut *b.rhs],
        Expr::Paren(p) => vec![&mut *p.expr],
        Expr::Subquery(s) => vec![&mut *s.expr],
        Expr::Call(c) => c.args.args.iter_mut().map(|a| &mut **a).collect(),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => Vec::new(),
    };
    for child in children {
        visit_mut(child, f);
    }
}

fn children(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::Aggregate(a) => [Some(&*a.expr), a.param.as_deref()]
            .into_iter()
            .flatten()
            .collect(),
        Expr::Unary(u) => vec![&*u.expr],
        Expr::Binary(b) => vec![&*b.lhs, &*b.rhs],
        Expr::Paren(p) => vec![&*p.expr],
        Expr::Subquery(s) => vec![&*s.expr],
        Expr::Call(c) => c.args.args.iter().map(|a| &**a).collect(),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => Vec::new(),
    }
}

/// Every range in `expr` at most `window` (ranges moved in time are left alone).
pub fn shorten(expr: &mut Expr, window: Duration) {
    match expr {
        Expr::MatrixSelector(m) if !moved(&m.vs.offset, &m.vs.at) => m.range = m.range.min(window),
        Expr::MatrixSelector(_) => {}
        Expr::Subquery(s) => {
            if !moved(&s.offset, &s.at) {
                s.range = s.range.min(window);
            }
            shorten(&mut s.expr, window);
        }
        Expr::Aggregate(a) => {
            shorten(&mut a.expr, window);
            if let Some(param) = a.param.as_mut() {
                shorten(param, window);
            }
        }
        Expr::Unary(u) => shorten(&mut u.expr, window),
        Expr::Binary(b) => {
            shorten(&mut b.lhs, window);
            shorten(&mut b.rhs, window);
        }
        Expr::Paren(p) => shorten(&mut p.expr, window),
        Expr::Call(c) => c.args.args.iter_mut().for_each(|a| shorten(a, window)),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::Extension(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn query(q: &str, since: u64, floor: u64) -> Verification {
        verification_query(q, S(since), S(floor)).unwrap()
    }

    #[test]
    fn a_query_without_ranges_is_judged_as_it_is_at_once() {
        assert_eq!(
            query("sum(errors) / sum(requests)", 0, 30),
            Verification::Query("sum(errors) / sum(requests)".into())
        );
    }

    #[test]
    fn ranges_are_shortened_to_the_time_since_the_change() {
        let q = "sum(rate(http_requests_total{code=~\"5..\"}[5m])) / sum(rate(http_requests_total[5m]))";
        let Verification::Query(v) = query(q, 47, 30) else {
            panic!()
        };
        assert_eq!(
            parser::parse(&v).unwrap(),
            parser::parse(
                "sum(rate(http_requests_total{code=~\"5..\"}[47s])) / sum(rate(http_requests_total[47s]))"
            )
            .unwrap()
        );
    }

    #[test]
    fn too_early_means_wait_until_the_floor_or_the_range_if_shorter() {
        assert_eq!(query("rate(x[5m])", 10, 30), Verification::WaitFor(S(20)));
        assert_eq!(query("rate(x[20s])", 10, 30), Verification::WaitFor(S(10)));
        // A range shorter than the floor is asked for as it is once it has passed.
        let Verification::Query(v) = query("rate(x[20s])", 25, 30) else {
            panic!()
        };
        assert_eq!(
            parser::parse(&v).unwrap(),
            parser::parse("rate(x[20s])").unwrap()
        );
    }

    #[test]
    fn ranges_are_never_lengthened_and_subqueries_and_nested_calls_are_shortened_too() {
        let q = "histogram_quantile(0.95, sum by (le) (rate(b[5m]))) > max_over_time(rate(c[1m])[10m:15s]) + rate(d[40s])";
        let Verification::Query(v) = query(q, 90, 30) else {
            panic!()
        };
        assert_eq!(
            parser::parse(&v).unwrap(),
            parser::parse(
                "histogram_quantile(0.95, sum by (le) (rate(b[90s]))) > max_over_time(rate(c[1m])[90s:15s]) + rate(d[40s])"
            )
            .unwrap()
        );
    }

    #[test]
    fn ranges_moved_in_time_are_left_alone() {
        let q = "rate(x[5m]) / rate(x[5m] offset 1d)";
        let Verification::Query(v) = query(q, 60, 30) else {
            panic!()
        };
        assert_eq!(
            parser::parse(&v).unwrap(),
            parser::parse("rate(x[1m]) / rate(x[5m] offset 1d)").unwrap()
        );
        // Only moved ranges: nothing looks at the time since the change; judged at once.
        assert_eq!(
            query("rate(x[5m] offset 1d)", 0, 30),
            Verification::Query("rate(x[5m] offset 1d)".into())
        );
    }

    /// Prometheus 3 names: metric and label names outside the legacy charset are quoted. The
    /// shortened query is sent as text, so they must come out quoted again (tests/guard_e2e.rs
    /// sends such a query to Prometheus 3).
    #[test]
    fn utf8_metric_and_label_names_stay_quoted_in_the_shortened_query() {
        let q = r#"sum by ("service.name") (rate({"shop.errors.total", "service.name"="checkout"}[5m]))"#;
        let Verification::Query(v) = query(q, 40, 2) else {
            panic!()
        };
        assert!(
            v.contains(r#""service.name"="checkout""#) && v.contains(r#"by ("service.name")"#),
            "{v}"
        );
        assert!(v.contains("[40s]"), "{v}");
        assert!(
            v.contains(r#""shop.errors.total""#) && !v.contains("service.name="),
            "{v}"
        );
        // What it renders parses back to itself (matcher order aside, the same selector).
        assert_eq!(parser::parse(&v).unwrap().to_string(), v);
    }

    #[test]
    fn a_query_that_does_not_parse_is_an_error() {
        assert!(verification_query("rate(x[5m]", S(60), S(30)).is_err());
    }
}
