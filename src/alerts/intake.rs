//! Push mode: `rollguard run --webhook-addr` serves `POST /v1/alertmanager`, Alertmanager's
//! webhook (payload version 4). A post is judged in this order, and a refused one changes
//! nothing: bearer token (compared in constant time; missing or wrong → 401), size
//! (`--webhook-max-body-bytes` → 413), payload (→ 400), leadership (only the leader, once its
//! caches have synced, takes alerts; others answer 503 so Alertmanager retries, and reaches
//! the leader through the Service). Each alert is then routed ([`super::route`]) into the
//! [`Store`] and wakes the guards it reached at once.

use super::store::Store;
use super::webhook;
use super::{GuardView, NAMESPACE_LABEL, Route};
use crate::api::RolloutGuard;
use crate::metrics::Metrics;
use axum::http::{HeaderMap, StatusCode, header};
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub const PATH: &str = "/v1/alertmanager";
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// The webhook flags of `rollguard run`.
#[derive(Clone, Debug, clap::Args)]
pub struct WebhookArgs {
    /// Serve Alertmanager's webhook (`POST /v1/alertmanager`) on this address; needs
    /// --webhook-token-file.
    #[arg(long, env = "ROLLGUARD_WEBHOOK_ADDR", requires = "webhook_token_file")]
    pub webhook_addr: Option<std::net::SocketAddr>,
    /// File holding the bearer token Alertmanager must send (read on every post, so a
    /// rotated Secret takes effect without a restart).
    #[arg(long, env = "ROLLGUARD_WEBHOOK_TOKEN_FILE")]
    pub webhook_token_file: Option<PathBuf>,
    /// Largest webhook body accepted, in bytes.
    #[arg(long, env = "ROLLGUARD_WEBHOOK_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_max_body_bytes: u64,
    /// How often Alertmanager sends a firing alert again at least (its route's
    /// repeat_interval plus group_interval): a pushed alert not sent again within it stops
    /// firing, and after a start a trigger that was breaching waits this long for the
    /// alerts before it reads "resolved".
    #[arg(long, env = "ROLLGUARD_ALERT_RESEND_WINDOW", default_value = "10m", value_parser = crate::controller::go_duration)]
    pub alert_resend_window: std::time::Duration,
}

/// The guards of one watched scope, and how to wake them.
struct Scope {
    guards: Cache<RolloutGuard>,
    wake: tokio::sync::mpsc::UnboundedSender<ObjectRef<RolloutGuard>>,
}

pub struct Intake {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    token_file: PathBuf,
    max_body_bytes: u64,
    scopes: Mutex<Vec<Scope>>,
}

/// What a post came to.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: StatusCode,
    outcome: &'static str,
    message: String,
}

impl Intake {
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        token_file: PathBuf,
        max_body_bytes: u64,
    ) -> Self {
        Self {
            store,
            metrics,
            token_file,
            max_body_bytes,
            scopes: Mutex::default(),
        }
    }

    /// The token, or why there is none (a start fails on it; a post gets 503).
    pub fn token(&self) -> Result<String, String> {
        let text = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("--webhook-token-file {}: {e}", self.token_file.display()))?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(format!(
                "--webhook-token-file {}: the file is empty",
                self.token_file.display()
            ));
        }
        Ok(token)
    }

    /// The guards of a scope the leader serves, and the channel that evaluates them now.
    pub fn serve_scope(
        &self,
        guards: Cache<RolloutGuard>,
        wake: tokio::sync::mpsc::UnboundedSender<ObjectRef<RolloutGuard>>,
    ) {
        self.scopes
            .lock()
            .expect("scopes lock")
            .push(Scope { guards, wake });
    }

    async fn receive(&self, headers: &HeaderMap, body: axum::body::Body) -> Answer {
        let refuse = |status, outcome, message: String| Answer {
            status,
            outcome,
            message,
        };
        let token = match self.token() {
            Ok(token) => token,
            Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, "noToken", e),
        };
        if !authorized(headers, &token) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token".into(),
            );
        }
        let body = match read_capped(headers, body, self.max_body_bytes).await {
            Ok(body) => body,
            Err(answer) => return answer,
        };
        let alerts = match webhook::parse(&body) {
            Ok(alerts) => alerts,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, "malformed", e),
        };
        if !self.metrics.caches_synced() {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "notLeader",
                "this replica does not lead (or has not synced its caches yet); Alertmanager retries".into(),
            );
        }
        let scopes = self.scopes.lock().expect("scopes lock");
        let views: Vec<GuardView> = scopes
            .iter()
            .flat_map(|s| s.guards.state())
            .map(|g| GuardView::of(&g))
            .collect();
        let now = jiff::Timestamp::now();
        let (mut routed, mut unrouted, mut ignored) = (0, 0, 0);
        let mut woken: Vec<(String, String)> = Vec::new();
        for pushed in &alerts {
            let labels = &pushed.alert.labels;
            match super::route(labels, &views) {
                Route::Guards(guards) => {
                    routed += 1;
                    self.store.apply(pushed, &labels[NAMESPACE_LABEL], now);
                    woken.extend(guards);
                }
                Route::NoNamespace => {
                    unrouted += 1;
                    tracing::warn!(fingerprint = %pushed.alert.fingerprint, ?labels, "pushed alert has no namespace label: it reaches no guard");
                }
                Route::NoGuard => {
                    ignored += 1;
                    tracing::warn!(fingerprint = %pushed.alert.fingerprint, ?labels, "pushed alert ignored: no guard of its namespace has an alert trigger that matches it (and takes pushed alerts)");
                }
            }
        }
        for (outcome, n) in [
            ("routed", routed),
            ("unrouted", unrouted),
            ("ignored", ignored),
        ] {
            self.metrics
                .alerts_received
                .get_or_create(&crate::metrics::OutcomeLabels {
                    outcome: outcome.into(),
                })
                .inc_by(n);
        }
        woken.sort();
        woken.dedup();
        for (namespace, name) in woken {
            let reference = ObjectRef::new(&name).within(&namespace);
            for scope in scopes.iter().filter(|s| s.guards.get(&reference).is_some()) {
                let _ = scope.wake.send(reference.clone());
            }
        }
        Answer {
            status: StatusCode::OK,
            outcome: "accepted",
            message: format!(
                "{routed} routed, {unrouted} without a namespace label, {ignored} ignored"
            ),
        }
    }
}

/// Whether the `Authorization` header is `Bearer <token>`, compared in constant time (over
/// digests, so neither the token's length nor its content leaks through timing).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let Some(sent) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (sent, expected) = (
        Sha256::digest(sent.trim().as_bytes()),
        Sha256::digest(token.as_bytes()),
    );
    sent.as_slice().ct_eq(expected.as_slice()).into()
}

/// The body, read up to `limit` bytes (413 past it: a declared length is refused unread).
async fn read_capped(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: u64,
) -> Result<Vec<u8>, Answer> {
    use futures::StreamExt;
    let too_large = || Answer {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        outcome: "tooLarge",
        message: format!("body larger than {limit} bytes (--webhook-max-body-bytes)"),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut read = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Answer {
            status: StatusCode::BAD_REQUEST,
            outcome: "malformed",
            message: format!("the body could not be read: {e}"),
        })?;
        if read.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read)
}

/// `POST /v1/alertmanager`.
pub fn router(intake: Arc<Intake>) -> axum::Router {
    use axum::extract::State;
    axum::Router::new()
        .route(
            PATH,
            axum::routing::post(
                |State(intake): State<Arc<Intake>>, headers: HeaderMap, body: axum::body::Body| async move {
                    let answer = intake.receive(&headers, body).await;
                    Metrics::count(&intake.metrics.alert_webhook_requests, answer.outcome);
                    if answer.status.is_success() {
                        tracing::info!(outcome = answer.outcome, "alert webhook: {}", answer.message);
                    } else {
                        tracing::warn!(outcome = answer.outcome, status = answer.status.as_u16(), "alert webhook refused: {}", answer.message);
                    }
                    (answer.status, answer.message)
                },
            ),
        )
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(intake)
}

/// Binds `addr` (a start fails when it cannot), then serves [`router`] on it until the
/// process ends.
pub async fn serve(
    addr: std::net::SocketAddr,
    intake: Arc<Intake>,
) -> anyhow::Result<impl Future<Output = ()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--webhook-addr {addr}: {e}"))?;
    tracing::info!(%addr, path = PATH, "serving the Alertmanager webhook");
    Ok(async move {
        if let Err(e) = axum::serve(listener, router(intake)).await {
            tracing::error!(error = %e, "the Alertmanager webhook stopped");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        assert!(authorized(&bearer("Bearer s3cret"), "s3cret"));
        assert!(!authorized(&bearer("Bearer s3cre"), "s3cret"));
        assert!(!authorized(&bearer("Bearer s3cret-and-more"), "s3cret"));
        assert!(!authorized(&bearer("Basic s3cret"), "s3cret"));
        assert!(!authorized(&bearer("s3cret"), "s3cret"));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }

    #[tokio::test]
    async fn bodies_past_the_limit_are_too_large_declared_or_streamed() {
        let mut declared = HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, "11".parse().unwrap());
        let answer = read_capped(&declared, axum::body::Body::from("x".repeat(11)), 10)
            .await
            .unwrap_err();
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        let answer = read_capped(
            &HeaderMap::new(),
            axum::body::Body::from("x".repeat(11)),
            10,
        )
        .await
        .unwrap_err();
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        let ok = read_capped(
            &HeaderMap::new(),
            axum::body::Body::from("x".repeat(10)),
            10,
        )
        .await
        .unwrap();
        assert_eq!(ok.len(), 10);
    }
}
