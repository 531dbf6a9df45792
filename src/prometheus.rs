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
