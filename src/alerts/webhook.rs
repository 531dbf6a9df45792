//! Alertmanager's webhook payload, version 4 (its `webhook_config` receiver), read and
//! judged purely: anything that does not parse, or is not version "4", is refused whole.

use super::Alert;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The payload version this intake understands.
pub const VERSION: &str = "4";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    version: String,
    alerts: Vec<PayloadAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayloadAlert {
    status: String,
    labels: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

/// One alert of a post: firing (with when Alertmanager says it ends, if it says) or resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    pub alert: Alert,
    pub firing: bool,
    pub ends_at: Option<jiff::Timestamp>,
}

/// The alerts of a webhook post, or why it is refused (the whole post: nothing of a
/// malformed post is taken).
pub fn parse(body: &[u8]) -> Result<Vec<Pushed>, String> {
    let payload: Payload = serde_json::from_slice(body)
        .map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    if payload.version != VERSION {
        return Err(format!(
            "payload version {:?} is not supported: Alertmanager webhook payloads of version \"{VERSION}\" are",
            payload.version
        ));
    }
    payload
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let firing = match a.status.as_str() {
                "firing" => true,
                "resolved" => false,
                other => {
                    return Err(format!(
                        "alerts[{i}].status {other:?} is neither \"firing\" nor \"resolved\""
                    ));
                }
            };
            if a.fingerprint.is_empty() || a.fingerprint.len() > 64 {
                return Err(format!(
                    "alerts[{i}].fingerprint {:?} is not an Alertmanager fingerprint",
                    a.fingerprint
                ));
            }
            a.starts_at.parse::<jiff::Timestamp>().map_err(|e| {
                format!(
                    "alerts[{i}].startsAt {:?} is not an RFC 3339 time: {e}",
                    a.starts_at
                )
            })?;
            // Alertmanager sends the zero time (year 1) for an end it does not know.
            let ends_at = match a.ends_at.as_deref() {
                None | Some("") => None,
                Some(text) => Some(text.parse::<jiff::Timestamp>().map_err(|e| {
                    format!("alerts[{i}].endsAt {text:?} is not an RFC 3339 time: {e}")
                })?),
            }
            .filter(|t| t.as_second() > 0);
            Ok(Pushed {
                alert: Alert {
                    labels: a.labels,
                    fingerprint: a.fingerprint,
                    starts_at: a.starts_at,
                    generator_url: a.generator_url,
                },
                firing,
                ends_at,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload as Alertmanager v0.35 sends it (its webhook notifier's documented example).
    const SAMPLE: &str = r#"{
      "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "truncatedAlerts": 0,
      "status": "firing", "receiver": "rollguard",
      "groupLabels": {"alertname": "HighErrorRate"},
      "commonLabels": {"alertname": "HighErrorRate", "namespace": "shop"},
      "commonAnnotations": {}, "externalURL": "http://am:9093",
      "alerts": [
        {"status": "firing", "labels": {"alertname": "HighErrorRate", "namespace": "shop"},
         "annotations": {"summary": "errors"}, "startsAt": "2026-12-07T12:00:00.123Z",
         "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph?g0.expr=x",
         "fingerprint": "a1b2c3d4e5f60718"},
        {"status": "resolved", "labels": {"alertname": "Other", "namespace": "shop"},
         "annotations": {}, "startsAt": "2026-12-07T11:00:00Z",
         "endsAt": "2026-12-07T11:30:00Z", "generatorURL": "", "fingerprint": "ffff000011112222"}
      ]
    }"#;

    #[test]
    fn a_version_4_payload_gives_its_alerts_with_unknown_ends_as_none() {
        let alerts = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(alerts.len(), 2);
        assert!(alerts[0].firing);
        assert_eq!(alerts[0].ends_at, None);
        assert_eq!(alerts[0].alert.fingerprint, "a1b2c3d4e5f60718");
        assert_eq!(alerts[0].alert.labels["alertname"], "HighErrorRate");
        assert_eq!(alerts[0].alert.generator_url, "http://prom/graph?g0.expr=x");
        assert!(!alerts[1].firing);
        assert_eq!(
            alerts[1].ends_at,
            Some("2026-12-07T11:30:00Z".parse().unwrap())
        );
    }

    #[test]
    fn other_versions_and_malformed_payloads_are_refused_whole_with_the_reason() {
        let v3 = SAMPLE.replace(r#""version": "4""#, r#""version": "3""#);
        assert!(parse(v3.as_bytes()).unwrap_err().contains("version \"3\""));
        assert!(
            parse(b"not json")
                .unwrap_err()
                .contains("not an Alertmanager webhook payload")
        );
        assert!(parse(br#"{"version": "4"}"#).is_err(), "alerts is required");
        let status = SAMPLE.replacen(
            r#""status": "firing", "labels""#,
            r#""status": "pending", "labels""#,
            1,
        );
        assert!(
            parse(status.as_bytes())
                .unwrap_err()
                .contains("alerts[0].status \"pending\"")
        );
        let no_fingerprint = SAMPLE.replace(
            r#""fingerprint": "a1b2c3d4e5f60718""#,
            r#""fingerprint": """#,
        );
        assert!(
            parse(no_fingerprint.as_bytes())
                .unwrap_err()
                .contains("alerts[0].fingerprint")
        );
        let bad_time = SAMPLE.replace("2026-12-07T12:00:00.123Z", "yesterday");
        assert!(
            parse(bad_time.as_bytes())
                .unwrap_err()
                .contains("alerts[0].startsAt \"yesterday\"")
        );
        let labels = SAMPLE.replace(
            r#""labels": {"alertname": "HighErrorRate", "namespace": "shop"}"#,
            r#""labels": {"alertname": "HighErrorRate", "namespace": 7}"#,
        );
        assert!(
            parse(labels.as_bytes()).is_err(),
            "label values are strings"
        );
    }
}
