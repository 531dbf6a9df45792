use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn alert(fingerprint: &str, starts_at: &str, pairs: &[(&str, &str)]) -> Alert {
    Alert {
        labels: labels(pairs),
        fingerprint: fingerprint.into(),
        starts_at: starts_at.into(),
        generator_url: format!("http://prom/graph?{fingerprint}"),
    }
}

#[test]
fn an_alert_matches_when_every_matcher_equals_its_label() {
    let matchers = labels(&[("alertname", "HighErrorRate"), ("service", "shop")]);
    assert!(matches(
        &matchers,
        &labels(&[
            ("alertname", "HighErrorRate"),
            ("service", "shop"),
            ("pod", "a")
        ])
    ));
    assert!(!matches(
        &matchers,
        &labels(&[("alertname", "HighErrorRate")])
    ));
    assert!(!matches(
        &matchers,
        &labels(&[("alertname", "HighErrorRate"), ("service", "shop2")])
    ));
    assert!(
        !matches(&BTreeMap::new(), &labels(&[("a", "b")])),
        "no matchers match nothing"
    );
}

#[test]
fn the_reading_counts_matching_alerts_and_shows_the_oldest() {
    let matchers = labels(&[("alertname", "HighErrorRate")]);
    let firing = [
        alert(
            "bb",
            "2026-12-07T12:05:00Z",
            &[("alertname", "HighErrorRate"), ("pod", "b")],
        ),
        alert(
            "aa",
            "2026-12-07T12:01:00Z",
            &[("alertname", "HighErrorRate"), ("pod", "a")],
        ),
        alert("cc", "2026-12-07T11:00:00Z", &[("alertname", "Other")]),
    ];
    let reading = reading(&matchers, &firing);
    assert_eq!(reading.value, Some(2.0));
    assert!(reading.breaching);
    assert!(!reading.no_data);
    let shown = reading.alert.unwrap();
    assert_eq!(shown.fingerprint, "aa");
    assert_eq!(shown.name, "HighErrorRate");
    assert_eq!(shown.starts_at, "2026-12-07T12:01:00Z");
    assert_eq!(shown.generator_url, "http://prom/graph?aa");
    assert_eq!(reading.labels["pod"], "a");

    let quiet = super::reading(&matchers, &firing[2..]);
    assert_eq!(quiet.value, Some(0.0));
    assert!(!quiet.breaching && quiet.alert.is_none() && quiet.labels.is_empty());
}

#[test]
fn after_a_start_a_trigger_that_was_breaching_waits_for_alertmanager_to_send_again() {
    let matchers = labels(&[("alertname", "HighErrorRate")]);
    let window = Duration::from_secs(600);
    let early = Duration::from_secs(30);
    let waiting = pushed_outcome(&matchers, &[], &[], true, early, window).unwrap_err();
    assert!(waiting.contains("--alert-resend-window"), "{waiting}");
    // Quiet before the start: nothing to wait for.
    assert!(
        !pushed_outcome(&matchers, &[], &[], false, early, window)
            .unwrap()
            .breaching
    );
    // The window has passed: no alert means resolved.
    assert!(
        !pushed_outcome(&matchers, &[], &[], true, window, window)
            .unwrap()
            .breaching
    );
    // Its resolution arrived: resolved, at once.
    let resolved = [alert(
        "aa",
        "2026-12-07T12:01:00Z",
        &[("alertname", "HighErrorRate")],
    )];
    let reading = pushed_outcome(&matchers, &[], &resolved, true, early, window).unwrap();
    assert!(!reading.breaching);
    // Sent again already: breaching.
    let firing = [alert(
        "aa",
        "2026-12-07T12:01:00Z",
        &[("alertname", "HighErrorRate")],
    )];
    assert!(
        pushed_outcome(&matchers, &firing, &[], true, early, window)
            .unwrap()
            .breaching
    );
}

fn guard(namespace: &str, name: &str, matchers: &[&[(&str, &str)]], pulls: bool) -> GuardView {
    GuardView {
        namespace: namespace.into(),
        name: name.into(),
        matchers: matchers.iter().map(|m| labels(m)).collect(),
        pulls,
    }
}

#[test]
fn a_pushed_alert_reaches_the_guards_of_its_namespace_whose_alert_trigger_matches() {
    let guards = [
        guard(
            "shop",
            "checkout",
            &[&[("alertname", "HighErrorRate")]],
            false,
        ),
        guard(
            "shop",
            "search",
            &[
                &[("alertname", "Slow")],
                &[("alertname", "HighErrorRate"), ("service", "shop")],
            ],
            false,
        ),
        guard("shop", "queries-only", &[], false),
        guard("shop", "pulls", &[&[("alertname", "HighErrorRate")]], true),
        guard(
            "other",
            "checkout",
            &[&[("alertname", "HighErrorRate")]],
            false,
        ),
    ];
    let alert = labels(&[
        ("alertname", "HighErrorRate"),
        ("namespace", "shop"),
        ("service", "shop"),
    ]);
    assert_eq!(
        route(&alert, &guards),
        Route::Guards(vec![
            ("shop".into(), "checkout".into()),
            ("shop".into(), "search".into())
        ])
    );
    let no_namespace = labels(&[("alertname", "HighErrorRate")]);
    assert_eq!(route(&no_namespace, &guards), Route::NoNamespace);
    let elsewhere = labels(&[("alertname", "HighErrorRate"), ("namespace", "nowhere")]);
    assert_eq!(route(&elsewhere, &guards), Route::NoGuard);
    let unmatched = labels(&[("alertname", "DiskFull"), ("namespace", "shop")]);
    assert_eq!(route(&unmatched, &guards), Route::NoGuard);
}
