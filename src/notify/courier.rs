//! Sends one notice through one channel, with bounded retries (backon). The imperative
//! shell of [`super`]: it reads the receiver's Secret, renders with the pure functions and
//! talks HTTP, SMTP or the API server.

use super::{DELIVERY_HEADER, EVENT_HEADER, IN_APP_CONFIG_MAP, Notice};
use crate::api::guard::{Notifier, NotifierType};
use crate::egress::{Egress, EgressError};
use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Field manager of the in-app status ConfigMap.
pub use crate::api::names::NOTIFIER_FIELD_MANAGER as FIELD_MANAGER;

/// How hard a delivery tries.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included).
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Each attempt's bound (HTTP request, SMTP session).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

/// Why one attempt failed, and whether another could succeed.
#[derive(Clone, Debug)]
pub struct Failure {
    pub message: String,
    pub retryable: bool,
}

impl Failure {
    fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
    fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }
}

/// What a delivery came to.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub attempts: u32,
    pub result: Result<(), String>,
    pub finished: jiff::Timestamp,
}

#[derive(Clone)]
pub struct Courier {
    pub client: Client,
    pub egress: Egress,
    pub retry: RetryPolicy,
}

impl Courier {
    pub fn new(client: Client, egress: Egress, retry: RetryPolicy) -> Self {
        Self {
            client,
            egress,
            retry,
        }
    }

    /// Delivers `notice` to `notifier` (a receiver of a guard in `namespace`), retrying
    /// transient failures with exponential backoff.
    pub async fn deliver(&self, namespace: &str, notifier: &Notifier, notice: &Notice) -> Delivery {
        let attempts = Arc::new(AtomicU32::new(0));
        let counter = attempts.clone();
        let policy = self.retry;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.first_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.attempts.saturating_sub(1) as usize)
            .with_jitter();
        let result = (|| async {
            counter.fetch_add(1, Ordering::SeqCst);
            match tokio::time::timeout(
                policy.attempt_timeout,
                self.attempt(namespace, notifier, notice),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(Failure::transient(format!(
                    "no answer within {:?}",
                    policy.attempt_timeout
                ))),
            }
        })
        .retry(backoff)
        .when(|f: &Failure| f.retryable)
        .notify(|f: &Failure, after: Duration| {
            tracing::info!(receiver = %notifier.name, error = %f.message, ?after, "notification attempt failed; retrying");
        })
        .await
        .map_err(|f| f.message);
        Delivery {
            attempts: attempts.load(Ordering::SeqCst),
            result,
            finished: jiff::Timestamp::now(),
        }
    }

    async fn attempt(
        &self,
        namespace: &str,
        notifier: &Notifier,
        notice: &Notice,
    ) -> Result<(), Failure> {
        match notifier.type_ {
            NotifierType::Slack => {
                let secret = self.secret(namespace, notifier).await?;
                let url = key(&secret, notifier, "url")?;
                let body = serde_json::to_vec(&super::slack_payload(notice))
                    .expect("a Slack payload serialises");
                self.post(notifier, &url, body, Vec::new()).await
            }
            NotifierType::Webhook => {
                let secret = self.secret(namespace, notifier).await?;
                let url = key(&secret, notifier, "url")?;
                let signing_key = key(&secret, notifier, "signingKey")?;
                // A short or malformed key stays so until its owner edits the Secret. The
                // message says which key and how long, never the key.
                let keys = super::signature::parse_keys(&signing_key).map_err(|e| {
                    Failure::permanent(format!(
                        "spec.notify[{}].secretRef: Secret {:?} key \"signingKey\": {e}",
                        notifier.name,
                        secret.metadata.name.as_deref().unwrap_or_default()
                    ))
                })?;
                let body = super::webhook_body(notice);
                // Signed per attempt: a retry carries a fresh timestamp and the same id.
                let timestamp = jiff::Timestamp::now().as_second();
                let mut headers: Vec<(&str, String)> =
                    super::signature::headers(&keys, &notice.id, timestamp, &body).into();
                headers.push((DELIVERY_HEADER, notice.id.clone()));
                headers.push((EVENT_HEADER, super::event_word(notice.event).to_string()));
                self.post(notifier, &url, body, headers).await
            }
            NotifierType::Email => {
                let secret = self.secret(namespace, notifier).await?;
                let smtp_url = key(&secret, notifier, "smtpUrl")?;
                let from = key(&secret, notifier, "from")?;
                let to = key(&secret, notifier, "to")?;
                send_email(&smtp_url, &from, &to, notice, notifier).await
            }
            NotifierType::InApp => self.in_app(namespace, notice).await,
            NotifierType::PagerDuty => {
                let secret = self.secret(namespace, notifier).await?;
                let routing_key = key(&secret, notifier, "routingKey")?;
                let url = optional_key(&secret, "url")
                    .unwrap_or_else(|| super::pagerduty::DEFAULT_URL.to_string());
                let link = report_link(&secret, notifier, notice)?;
                let event = super::pagerduty::event(notice, &routing_key, link.as_ref())
                    .map_err(Failure::permanent)?;
                let body = serde_json::to_vec(&event).expect("a PagerDuty event serialises");
                self.post(notifier, &url, body, Vec::new()).await
            }
            NotifierType::Teams => {
                let secret = self.secret(namespace, notifier).await?;
                let url = key(&secret, notifier, "url")?;
                let link = report_link(&secret, notifier, notice)?;
                let body = serde_json::to_vec(&super::teams::message(notice, link.as_ref()))
                    .expect("a Teams message serialises");
                self.post(notifier, &url, body, Vec::new()).await
            }
        }
    }

    async fn secret(&self, namespace: &str, notifier: &Notifier) -> Result<Secret, Failure> {
        let Some(reference) = &notifier.secret_ref else {
            return Err(Failure::permanent(format!(
                "spec.notify[{}].secretRef: required for type {}",
                notifier.name,
                super::channel_word(notifier.type_)
            )));
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let field = format!("spec.notify[{}].secretRef.name", notifier.name);
        match crate::trust::read_credentials(&secrets, &reference.name, &field).await {
            Ok(Some(Ok(secret))) => Ok(secret),
            // Its owner must label it first: no retry can change that.
            Ok(Some(Err(message))) => Err(Failure::permanent(message)),
            // Someone may be creating it right now: worth another attempt.
            Ok(None) => Err(Failure::transient(format!(
                "spec.notify[{}].secretRef.name: Secret {:?} does not exist",
                notifier.name, reference.name
            ))),
            Err(e) => Err(Failure::transient(format!(
                "reading Secret {:?}: {e}",
                reference.name
            ))),
        }
    }

    /// POSTs to a receiver URL read from its Secret: the URL is the credential (a Slack
    /// webhook's path is), so it goes over plain http only to an allowed host, and errors
    /// name only its scheme, host and port.
    async fn post(
        &self,
        notifier: &Notifier,
        url: &str,
        body: Vec<u8>,
        headers: Vec<(&str, String)>,
    ) -> Result<(), Failure> {
        let shown = redact(url);
        let parsed = reqwest::Url::parse(url).map_err(|_| {
            Failure::permanent(format!(
                "spec.notify[{}].secretRef: key \"url\" is not a URL",
                notifier.name
            ))
        })?;
        let field = format!("spec.notify[{}].secretRef", notifier.name);
        self.egress
            .check_credentials(&parsed, &field, &shown)
            .map_err(|e| Failure::permanent(e.to_string()))?;
        let mut request = self
            .egress
            .client()
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = self.egress.send(request).await.map_err(|e| match e {
            // The admin's policy or the receiver's redirect will not change by retrying.
            EgressError::Denied { .. }
            | EgressError::DeniedName { .. }
            | EgressError::Redirect(_)
            | EgressError::Scheme(_)
            | EgressError::InvalidUrl(_) => Failure::permanent(format!("POST {shown}: {e}")),
            e => Failure::transient(format!("POST {shown}: {e}")),
        })?;
        let status = response.status();
        let _ = self.egress.read_capped(response).await;
        if status.is_success() {
            return Ok(());
        }
        let message = format!("POST {shown} answered {}", status.as_u16());
        // A client error other than "too many requests" or "timeout" will not get better.
        if status.is_client_error() && status.as_u16() != 429 && status.as_u16() != 408 {
            Err(Failure::permanent(message))
        } else {
            Err(Failure::transient(message))
        }
    }

    async fn in_app(&self, namespace: &str, notice: &Notice) -> Result<(), Failure> {
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let current = config_maps.get_opt(IN_APP_CONFIG_MAP).await.map_err(|e| {
            Failure::transient(format!("reading ConfigMap {IN_APP_CONFIG_MAP:?}: {e}"))
        })?;
        if let Some(data) = current.as_ref().and_then(|cm| cm.data.as_ref())
            && super::in_app_outdated(data, notice)
        {
            // A later moment of the guard is shown already; it stands.
            return Ok(());
        }
        let mut patch = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": IN_APP_CONFIG_MAP,
                "labels": { "app.kubernetes.io/managed-by": "rollguard" },
            },
            "data": super::in_app_data(notice),
        });
        // Applied on the version just read: a later moment written meanwhile is a conflict,
        // and the retry reads it.
        if let Some(version) = current
            .as_ref()
            .and_then(|cm| cm.metadata.resource_version.clone())
        {
            patch["metadata"]["resourceVersion"] = version.into();
        }
        config_maps
            .patch(
                IN_APP_CONFIG_MAP,
                &PatchParams::apply(&in_app_manager(&notice.guard)).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(|_| ())
            .map_err(|e| {
                Failure::transient(format!("writing ConfigMap {IN_APP_CONFIG_MAP:?}: {e}"))
            })
    }
}

/// The field manager of one guard's in-app notices. Each guard applies its own key
/// (`<guard>.json`) and the namespace's latest-notice keys; with one manager for all guards,
/// a guard's apply would drop the key another guard applied before. Field managers are at
/// most 128 characters: a long guard name is shortened to a digest of it.
pub(crate) fn in_app_manager(guard: &str) -> String {
    let manager = format!("{FIELD_MANAGER}/{guard}");
    if manager.len() <= 128 {
        return manager;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(guard.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{FIELD_MANAGER}/{}-{hex}", &guard[..64])
}

/// The receiver's report link, from the optional Secret key `reportUrl`.
fn report_link(
    secret: &Secret,
    notifier: &Notifier,
    notice: &Notice,
) -> Result<Option<super::ReportLink>, Failure> {
    let Some(template) = optional_key(secret, "reportUrl") else {
        return Ok(None);
    };
    super::report_link(&template, notice).map_err(|e| {
        Failure::permanent(format!(
            "spec.notify[{}].secretRef: Secret {:?} {e}",
            notifier.name,
            secret.metadata.name.as_deref().unwrap_or_default()
        ))
    })
}

/// A Secret key as text, or which key is missing.
fn key(secret: &Secret, notifier: &Notifier, name: &str) -> Result<String, Failure> {
    optional_key(secret, name).ok_or_else(|| {
        Failure::permanent(format!(
            "spec.notify[{}].secretRef: Secret {:?} has no key {name:?}",
            notifier.name,
            secret.metadata.name.as_deref().unwrap_or_default()
        ))
    })
}

/// A Secret key as text; None when it is absent or empty.
fn optional_key(secret: &Secret, name: &str) -> Option<String> {
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(name))
        .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(name))
                .cloned()
        });
    value.filter(|v| !v.is_empty())
}

/// A URL without its path and query, which for Slack webhooks hold the credential.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<invalid URL>".into(),
    }
}

async fn send_email(
    smtp_url: &str,
    from: &str,
    to: &str,
    notice: &Notice,
    notifier: &Notifier,
) -> Result<(), Failure> {
    use lettre::message::header::ContentType;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let field = |key: &str, value: &str, e: &dyn std::fmt::Display| {
        Failure::permanent(format!(
            "spec.notify[{}].secretRef: key {key} {value:?}: {e}",
            notifier.name
        ))
    };
    let (subject, body) = super::email(notice);
    let mut message = Message::builder()
        .from(from.parse().map_err(|e| field("from", from, &e))?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    let recipients: Vec<&str> = to
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if recipients.is_empty() {
        return Err(field("to", to, &"no address"));
    }
    for address in recipients {
        message = message.to(address.parse().map_err(|e| field("to", address, &e))?);
    }
    let message = message
        .body(body)
        .map_err(|e| Failure::permanent(format!("composing the email: {e}")))?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
        .map_err(|e| field("smtpUrl", &redact(smtp_url), &e))?
        .timeout(Some(Duration::from_secs(10)))
        .build();
    transport.send(message).await.map(|_| ()).map_err(|e| {
        if e.is_permanent() {
            Failure::permanent(format!("SMTP {}: {e}", redact(smtp_url)))
        } else {
            Failure::transient(format!("SMTP {}: {e}", redact(smtp_url)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::in_app_manager;

    #[test]
    fn each_guard_applies_its_in_app_notices_as_its_own_field_manager() {
        assert_eq!(in_app_manager("checkout"), "rollguard-notifier/checkout");
        assert_ne!(in_app_manager("checkout"), in_app_manager("search"));
        let long = |last: char| format!("{}{last}", "g".repeat(252));
        let (a, b) = (in_app_manager(&long('a')), in_app_manager(&long('b')));
        assert!(a.len() <= 128 && b.len() <= 128, "{a} {b}");
        assert_ne!(a, b);
    }
}
