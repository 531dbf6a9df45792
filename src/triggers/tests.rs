use super::*;

fn trigger(comparison: &str, threshold: f64, no_data: &str) -> Trigger {
    let mut t = serde_json::json!({"name": "t", "query": "q", "noData": no_data});
    t[comparison] = threshold.into();
    if comparison == "increaseAbove" || comparison == "decreaseBelow" {
        t["baseline"] = serde_json::json!({"query": "b"});
    }
    serde_json::from_value(t).unwrap()
}

fn labelled(pod: &str, value: f64) -> Series {
    Series {
        labels: BTreeMap::from([("pod".to_string(), pod.to_string())]),
        value,
    }
}

#[test]
fn above_and_below_breach_strictly_past_the_threshold() {
    let above = trigger("above", 0.01, "ignore");
    assert!(!evaluate(&above, &[Series::new(0.01)], &[]).breaching);
    assert!(evaluate(&above, &[Series::new(0.0100001)], &[]).breaching);
    let below = trigger("below", 4.0, "ignore");
    assert!(!evaluate(&below, &[Series::new(4.0)], &[]).breaching);
    assert!(evaluate(&below, &[Series::new(3.9)], &[]).breaching);
}

#[test]
fn any_breaching_series_breaches_and_the_worst_is_shown() {
    let above = trigger("above", 0.01, "ignore");
    let r = evaluate(
        &above,
        &[
            labelled("a", 0.001),
            labelled("b", 0.05),
            labelled("c", 0.02),
        ],
        &[],
    );
    assert!(r.breaching);
    assert_eq!((r.value, r.labels["pod"].as_str()), (Some(0.05), "b"));
    let below = trigger("below", 4.0, "ignore");
    let r = evaluate(&below, &[labelled("a", 4.5), labelled("b", 3.1)], &[]);
    assert_eq!((r.breaching, r.value), (true, Some(3.1)));
}

#[test]
fn relative_comparisons_use_the_baseline() {
    let inc = trigger("increaseAbove", 0.05, "ignore");
    let r = evaluate(&inc, &[Series::new(1.06)], &[Series::new(1.0)]);
    assert!(r.breaching && r.baseline == Some(1.0));
    assert!(!evaluate(&inc, &[Series::new(1.04)], &[Series::new(1.0)]).breaching);
    let dec = trigger("decreaseBelow", 0.3, "ignore");
    assert!(evaluate(&dec, &[Series::new(60.0)], &[Series::new(100.0)]).breaching);
    assert!(!evaluate(&dec, &[Series::new(80.0)], &[Series::new(100.0)]).breaching);
}

#[test]
fn relative_comparisons_match_series_by_labels() {
    let inc = trigger("increaseAbove", 0.5, "ignore");
    let r = evaluate(
        &inc,
        &[labelled("a", 2.0), labelled("b", 2.0)],
        &[labelled("a", 1.9), labelled("b", 1.0)],
    );
    assert!(r.breaching);
    assert_eq!(r.labels["pod"], "b");
}

#[test]
fn a_zero_missing_or_nan_baseline_is_no_data_not_a_division_by_zero() {
    for baseline in [vec![Series::new(0.0)], vec![], vec![Series::new(f64::NAN)]] {
        let r = evaluate(
            &trigger("increaseAbove", 0.05, "ignore"),
            &[Series::new(5.0)],
            &baseline,
        );
        assert!(r.no_data && !r.breaching, "{baseline:?}");
        let r = evaluate(
            &trigger("increaseAbove", 0.05, "breach"),
            &[Series::new(5.0)],
            &baseline,
        );
        assert!(r.no_data && r.breaching);
    }
}

#[test]
fn no_data_follows_the_policy() {
    assert!(!evaluate(&trigger("above", 1.0, "ignore"), &[], &[]).breaching);
    let r = evaluate(&trigger("above", 1.0, "breach"), &[], &[]);
    assert!(r.breaching && r.no_data && r.value.is_none());
}

#[test]
fn nan_is_no_data_and_infinities_compare_as_numbers() {
    let above = trigger("above", 1.0, "ignore");
    assert!(evaluate(&above, &[Series::new(f64::NAN)], &[]).no_data);
    let r = evaluate(&above, &[Series::new(f64::NAN), Series::new(0.5)], &[]);
    assert_eq!((r.no_data, r.value), (false, Some(0.5)));
    assert!(evaluate(&above, &[Series::new(f64::INFINITY)], &[]).breaching);
    assert!(!evaluate(&above, &[Series::new(f64::NEG_INFINITY)], &[]).breaching);
    assert!(
        evaluate(
            &trigger("below", 1.0, "ignore"),
            &[Series::new(f64::NEG_INFINITY)],
            &[]
        )
        .breaching
    );
}
