//! Pull mode: a guard's `spec.alertmanager` is read with `GET /api/v2/alerts` (active alerts,
//! neither silenced nor inhibited) through the egress policy, under the same credential
//! rules as `spec.prometheus`. Identical reads (same address and credentials) of guards
//! evaluated in one interval share one request, as Prometheus queries do.

use super::Alert;
use crate::egress::{Egress, EgressError, without_userinfo};
use crate::prometheus::{Auth, authorized_get};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const AUTH_FIELD: &str = "spec.alertmanager.authSecretRef";

/// The field that names a guard's Alertmanager credentials, as messages name it.
pub const AUTH_SECRET_FIELD: &str = "spec.alertmanager.authSecretRef.name";

/// The Secret a guard's `alertmanager.authSecretRef` names.
pub fn auth_secret(guard: &crate::api::RolloutGuard) -> Option<&str> {
    guard
        .spec
        .alertmanager
        .as_ref()
        .and_then(|a| a.auth_secret_ref.as_ref())
        .map(|r| r.name.as_str())
}

/// Where and how a guard reads its Alertmanager.
#[derive(Clone, Debug)]
pub struct Source {
    pub address: String,
    pub timeout: Duration,
    pub auth: Option<Auth>,
}

impl Source {
    /// The guard's `spec.alertmanager` (None: it takes pushed alerts), or why it cannot be
    /// read (a message naming the field).
    pub fn of(
        guard: &crate::api::RolloutGuard,
        credentials: Option<Option<Result<k8s_openapi::api::core::v1::Secret, String>>>,
    ) -> Option<Result<Source, String>> {
        let spec = guard.spec.alertmanager.as_ref()?;
        // A read never outlives the guard's interval (SPEC §5).
        let timeout = spec
            .timeout
            .to_std()
            .unwrap_or(Duration::from_secs(5))
            .min(guard.spec.interval.to_std().unwrap_or(Duration::MAX));
        let auth = match (&spec.auth_secret_ref, credentials) {
            (Some(secret_ref), Some(read)) => {
                match Auth::judge(read, &secret_ref.name, AUTH_SECRET_FIELD) {
                    Ok(auth) => Some(auth),
                    Err(message) => return Some(Err(message)),
                }
            }
            // Named but not read: never read without the credentials asked for.
            (Some(secret_ref), None) => {
                return Some(Err(format!(
                    "{AUTH_SECRET_FIELD}: Secret {:?} was not read",
                    secret_ref.name
                )));
            }
            (None, _) => None,
        };
        Some(Ok(Source {
            address: spec.address.clone(),
            timeout,
            auth,
        }))
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ReadKey {
    address: String,
    auth: Option<Auth>,
}

/// Reads of Alertmanagers, shared per interval bucket.
#[derive(Clone, Default)]
pub struct Alertmanagers {
    egress: Egress,
    reads: crate::shared::PerInterval<ReadKey, Result<Vec<Alert>, String>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Alertmanagers {
    pub fn new(egress: Egress, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self {
            egress,
            reads: Default::default(),
            metrics: Some(metrics),
        }
    }

    /// The firing alerts of `source` for the current `interval` bucket.
    pub async fn firing(&self, source: &Source, interval: Duration) -> Result<Vec<Alert>, String> {
        let key = ReadKey {
            address: source.address.clone(),
            auth: source.auth.clone(),
        };
        let (egress, metrics, source) = (self.egress.clone(), self.metrics.clone(), source.clone());
        self.reads
            .read(key, interval, async move {
                let result = read(&egress, &source).await;
                if let Some(m) = metrics {
                    let outcome = if result.is_ok() { "success" } else { "error" };
                    crate::metrics::Metrics::count(&m.alertmanager_reads, outcome);
                }
                result
            })
            .await
    }
}

async fn read(egress: &Egress, source: &Source) -> Result<Vec<Alert>, String> {
    let shown = without_userinfo(&source.address);
    let failed = |message: String| format!("Alertmanager at {shown}: {message}");
    let url = alerts_url(&source.address).map_err(|e| failed(format!("not a URL: {e}")))?;
    let (status, body) = authorized_get(
        egress,
        url,
        source.auth.as_ref(),
        source.timeout,
        ["spec.alertmanager.address", AUTH_FIELD],
        &shown,
    )
    .await
    .map_err(|e| match e {
        None | Some(EgressError::Timeout) => {
            failed(format!("did not answer within {:?}", source.timeout))
        }
        Some(e) => failed(e.to_string()),
    })?;
    if !status.is_success() {
        return Err(failed(format!("answered {}", status.as_u16())));
    }
    firing_of(&body).map_err(failed)
}

/// `{address}/api/v2/alerts?active=true&silenced=false&inhibited=false&unprocessed=false`.
fn alerts_url(address: &str) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(address).map_err(|e| e.to_string())?;
    if url.cannot_be_a_base() {
        return Err("it cannot be a base URL".into());
    }
    let path = format!("{}/api/v2/alerts", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_fragment(None);
    url.query_pairs_mut()
        .clear()
        .append_pair("active", "true")
        .append_pair("silenced", "false")
        .append_pair("inhibited", "false")
        .append_pair("unprocessed", "false");
    Ok(url)
}

/// One of Alertmanager's `gettableAlerts`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Gettable {
    labels: BTreeMap<String, String>,
    fingerprint: String,
    starts_at: String,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    status: GettableStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableStatus {
    state: String,
    #[serde(default)]
    silenced_by: Vec<String>,
    #[serde(default)]
    inhibited_by: Vec<String>,
}

/// The firing alerts of an answer: active, neither silenced nor inhibited (the query asks
/// for those; judged again here so an answer that ignores the filter changes nothing).
fn firing_of(body: &[u8]) -> Result<Vec<Alert>, String> {
    let alerts: Vec<Gettable> = serde_json::from_slice(body)
        .map_err(|e| format!("not an Alertmanager /api/v2/alerts answer: {e}"))?;
    Ok(alerts
        .into_iter()
        .filter(|a| {
            a.status.state == "active"
                && a.status.silenced_by.is_empty()
                && a.status.inhibited_by.is_empty()
        })
        .map(|a| Alert {
            labels: a.labels,
            fingerprint: a.fingerprint,
            starts_at: a.starts_at,
            generator_url: a.generator_url,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_alerts_neither_silenced_nor_inhibited_are_firing() {
        let body = r#"[
          {"labels": {"alertname": "A"}, "annotations": {}, "fingerprint": "01", "receivers": [{"name": "x"}],
           "startsAt": "2026-12-07T12:00:00Z", "endsAt": "2026-12-07T12:04:00Z", "updatedAt": "2026-12-07T12:00:00Z",
           "generatorURL": "http://prom/graph", "status": {"state": "active", "silencedBy": [], "inhibitedBy": []}},
          {"labels": {"alertname": "B"}, "annotations": {}, "fingerprint": "02", "receivers": [],
           "startsAt": "2026-12-07T12:00:00Z", "endsAt": "2026-12-07T12:04:00Z", "updatedAt": "2026-12-07T12:00:00Z",
           "status": {"state": "suppressed", "silencedBy": ["s1"], "inhibitedBy": []}},
          {"labels": {"alertname": "C"}, "annotations": {}, "fingerprint": "03", "receivers": [],
           "startsAt": "2026-12-07T12:00:00Z", "endsAt": "2026-12-07T12:04:00Z", "updatedAt": "2026-12-07T12:00:00Z",
           "status": {"state": "active", "silencedBy": [], "inhibitedBy": ["i1"]}}
        ]"#;
        let firing = firing_of(body.as_bytes()).unwrap();
        assert_eq!(firing.len(), 1);
        assert_eq!(firing[0].labels["alertname"], "A");
        assert_eq!(firing[0].generator_url, "http://prom/graph");
        assert!(firing_of(b"{\"status\": \"error\"}").is_err());
    }

    #[test]
    fn the_url_keeps_the_base_path_and_asks_for_firing_alerts_only() {
        let url = alerts_url("http://am:9093/alertmanager/").unwrap();
        assert_eq!(url.path(), "/alertmanager/api/v2/alerts");
        assert_eq!(
            url.query(),
            Some("active=true&silenced=false&inhibited=false&unprocessed=false")
        );
        assert!(alerts_url("not a url").is_err());
    }
}
