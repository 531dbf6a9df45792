//! The one place that talks to Prometheus: instant queries with a per-guard address,
//! timeout and credentials. Everything it returns is data or a [`QueryError`]; callers
//! treat errors as "unknown", never as a breach.

use crate::triggers::Series;
use prometheus_http_query::Client;
use std::time::Duration;

/// Credentials from a guard's `prometheus.authSecretRef`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Auth {
    Bearer(String),
    Basic { username: String, password: String },
}

impl Auth {
    /// Credentials from a guard's `prometheus.authSecretRef` Secret: key `token` (bearer),
    /// or `username` and `password` (basic).
    pub fn from_secret(secret: &k8s_openapi::api::core::v1::Secret) -> Option<Auth> {
        let data = secret.data.as_ref()?;
        let get = |k: &str| {
            data.get(k)
                .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
        };
        match (get("token"), get("username"), get("password")) {
            (Some(token), _, _) => Some(Auth::Bearer(token)),
            (None, Some(username), Some(password)) => Some(Auth::Basic { username, password }),
            _ => None,
        }
    }
}

/// Where and how a guard's queries go: `spec.prometheus` with the operator's default address.
#[derive(Clone, Debug)]
pub struct Target {
    pub address: String,
    pub timeout: Duration,
    pub auth: Option<Auth>,
}

impl Target {
    /// The guard's target, or why it has none (a message naming the field).
    pub async fn of(
        guard: &crate::api::RolloutGuard,
        default_address: Option<&str>,
        secrets: &kube::Api<k8s_openapi::api::core::v1::Secret>,
    ) -> Result<Result<Target, String>, kube::Error> {
        let spec = guard.spec.prometheus.as_ref();
        let Some(address) = spec
            .and_then(|p| p.address.clone())
            .or_else(|| default_address.map(String::from))
        else {
            return Ok(Err("no Prometheus address: set spec.prometheus.address or the operator's --prometheus-url".into()));
        };
        let timeout = spec
            .and_then(|p| p.timeout.to_std().ok())
            .unwrap_or(Duration::from_secs(5));
        let auth = match spec.and_then(|p| p.auth_secret_ref.as_ref()) {
            Some(secret_ref) => match secrets.get_opt(&secret_ref.name).await? {
                Some(secret) => match Auth::from_secret(&secret) {
                    Some(auth) => Some(auth),
                    // Querying without the credentials someone asked for would only fail
                    // later with a less helpful 401.
                    None => {
                        return Ok(Err(format!(
                            "spec.prometheus.authSecretRef.name: Secret {:?} has neither a key \"token\" nor both \"username\" and \"password\"",
                            secret_ref.name
                        )));
                    }
                },
                None => {
                    return Ok(Err(format!(
                        "spec.prometheus.authSecretRef.name: Secret {:?} does not exist",
                        secret_ref.name
                    )));
                }
            },
            None => None,
        };
        Ok(Ok(Target {
            address,
            timeout,
            auth,
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("Prometheus at {address} did not answer within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("Prometheus at {address} rejected the query: {message}")]
    Rejected { address: String, message: String },
    #[error("Prometheus at {address} is unreachable: {message}")]
    Unreachable { address: String, message: String },
    #[error(
        "Prometheus at {address} returned a {kind} where an instant vector or scalar was expected"
    )]
    UnexpectedResult { address: String, kind: &'static str },
}

/// A pool of HTTP connections shared by every query.
#[derive(Clone)]
pub struct Prometheus {
    http: reqwest::Client,
}

impl Default for Prometheus {
    fn default() -> Self {
        Self::new()
    }
}

impl Prometheus {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .build()
                .expect("an HTTP client with default settings builds"),
        }
    }

    /// Evaluates `query` as an instant query at `address`.
    pub async fn instant(
        &self,
        address: &str,
        query: &str,
        timeout: Duration,
        auth: Option<&Auth>,
    ) -> Result<Vec<Series>, QueryError> {
        let client =
            Client::from(self.http.clone(), address).map_err(|e| QueryError::Unreachable {
                address: address.to_string(),
                message: e.to_string(),
            })?;
        let mut request = client.query(query).timeout(timeout.as_millis() as i64);
        match auth {
            Some(Auth::Bearer(token)) => {
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    header_value(&format!("Bearer {token}")),
                );
            }
            Some(Auth::Basic { username, password }) => {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    header_value(&format!("Basic {encoded}")),
                );
            }
            None => {}
        }
        let result = match tokio::time::timeout(timeout, request.get()).await {
            Err(_) => {
                return Err(QueryError::Timeout {
                    address: address.to_string(),
                    timeout,
                });
            }
            Ok(Err(prometheus_http_query::Error::Prometheus(e))) => {
                return Err(QueryError::Rejected {
                    address: address.to_string(),
                    message: e.to_string(),
                });
            }
            Ok(Err(e)) => {
                return Err(QueryError::Unreachable {
                    address: address.to_string(),
                    message: e.to_string(),
                });
            }
            Ok(Ok(result)) => result,
        };
        let data = result.data();
        if let Some(vector) = data.as_vector() {
            Ok(vector
                .iter()
                .map(|v| Series {
                    labels: v
                        .metric()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    value: v.sample().value(),
                })
                .collect())
        } else if let Some(scalar) = data.as_scalar() {
            Ok(vec![Series::new(scalar.value())])
        } else {
            Err(QueryError::UnexpectedResult {
                address: address.to_string(),
                kind: "range vector",
            })
        }
    }
}

fn header_value(s: &str) -> reqwest::header::HeaderValue {
    let mut value = reqwest::header::HeaderValue::from_str(s)
        .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

/// Identical queries (same address, query and credentials) of guards evaluated in the same
/// interval share one request to Prometheus: the first caller runs it, the others await
/// its result.
#[derive(Clone, Default)]
pub struct SharedQueries {
    inner:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<QueryKey, (u128, SharedResult)>>>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

type SharedResult =
    futures::future::Shared<futures::future::BoxFuture<'static, Result<Vec<Series>, String>>>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct QueryKey {
    address: String,
    query: String,
    auth: Option<Auth>,
    interval_ms: u128,
}

impl SharedQueries {
    /// Counts every query actually sent in `rollguard_prometheus_queries_total{outcome}`.
    pub fn with_metrics(metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        Self {
            metrics: Some(metrics),
            ..Default::default()
        }
    }

    /// The result of `query` for the current `interval` bucket, queried at most once per bucket.
    pub async fn instant(
        &self,
        prometheus: &Prometheus,
        address: &str,
        query: &str,
        timeout: Duration,
        auth: Option<&Auth>,
        interval: Duration,
    ) -> Result<Vec<Series>, String> {
        use futures::FutureExt;
        let interval_ms = interval.as_millis().max(1);
        let bucket = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            / interval_ms;
        let key = QueryKey {
            address: address.to_string(),
            query: query.to_string(),
            auth: auth.cloned(),
            interval_ms,
        };
        let shared = {
            let mut map = self.inner.lock().expect("query cache lock");
            match map.get(&key) {
                Some((b, shared)) if *b == bucket => shared.clone(),
                _ => {
                    let (prometheus, address, query, auth) = (
                        prometheus.clone(),
                        address.to_string(),
                        query.to_string(),
                        auth.cloned(),
                    );
                    let metrics = self.metrics.clone();
                    let fut = async move {
                        let result = prometheus
                            .instant(&address, &query, timeout, auth.as_ref())
                            .await
                            .map_err(|e| e.to_string());
                        if let Some(m) = metrics {
                            let outcome = if result.is_ok() { "success" } else { "error" };
                            m.prometheus_queries
                                .get_or_create(&crate::metrics::OutcomeLabels {
                                    outcome: outcome.into(),
                                })
                                .inc();
                        }
                        result
                    }
                    .boxed()
                    .shared();
                    map.retain(|_, (b, _)| *b + 1 >= bucket);
                    map.insert(key, (bucket, fut.clone()));
                    fut
                }
            }
        };
        shared.await
    }
}
