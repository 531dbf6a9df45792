//! The one place that talks to Prometheus: instant queries with a per-guard address,
//! timeout and credentials. Everything it returns is data or a [`QueryError`]; callers
//! treat errors as "unknown", never as a breach.

use crate::egress::{Egress, EgressError, without_userinfo};
use crate::triggers::Series;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The field whose credentials a query carries (named in refusals).
pub const AUTH_FIELD: &str = "spec.prometheus.authSecretRef";

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

impl Auth {
    /// The credentials of Secret `name`, named by `field` of a guard, from what was read of
    /// it (None: it does not exist; Some(Err): its owner has not allowed rollguard to read
    /// it), or why there are none. Querying without the credentials someone asked for would
    /// only fail later with a less helpful 401.
    pub fn judge(
        read: Option<Result<k8s_openapi::api::core::v1::Secret, String>>,
        name: &str,
        field: &str,
    ) -> Result<Auth, String> {
        match read {
            Some(Err(message)) => Err(message),
            Some(Ok(secret)) => Auth::from_secret(&secret).ok_or_else(|| {
                format!(
                    "{field}: Secret {name:?} has neither a key \"token\" nor both \"username\" and \"password\""
                )
            }),
            None => Err(format!("{field}: Secret {name:?} does not exist")),
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
    /// The guard's target, or why it has none (a message naming the field); its credentials
    /// read by name from `secrets`.
    pub async fn of(
        guard: &crate::api::RolloutGuard,
        default_address: Option<&str>,
        secrets: &kube::Api<k8s_openapi::api::core::v1::Secret>,
        egress: &Egress,
    ) -> Result<Result<Target, String>, kube::Error> {
        let credentials = match auth_secret(guard) {
            Some(name) => {
                Some(crate::trust::read_credentials(secrets, name, AUTH_SECRET_FIELD).await?)
            }
            None => None,
        };
        Ok(Self::judge(guard, default_address, credentials, egress))
    }

    /// The guard's target from what was read of its `authSecretRef` Secret (None: it names
    /// none; Some(None): it does not exist; Some(Some(Err)): rollguard may not read it).
    pub fn judge(
        guard: &crate::api::RolloutGuard,
        default_address: Option<&str>,
        credentials: Option<Option<Result<k8s_openapi::api::core::v1::Secret, String>>>,
        egress: &Egress,
    ) -> Result<Target, String> {
        let spec = guard.spec.prometheus.as_ref();
        let Some(address) = spec
            .and_then(|p| p.address.clone())
            .or_else(|| default_address.map(String::from))
        else {
            return Err("no Prometheus address: set spec.prometheus.address or the operator's --prometheus-url".into());
        };
        // A query never outlives the guard's interval (SPEC §5).
        let timeout = spec
            .and_then(|p| p.timeout.to_std().ok())
            .unwrap_or(Duration::from_secs(5))
            .min(guard.spec.interval.to_std().unwrap_or(Duration::MAX));
        let auth = match (auth_secret(guard), credentials) {
            (Some(name), Some(read)) => match read {
                Some(Err(message)) => return Err(message),
                Some(Ok(secret)) => match Auth::from_secret(&secret) {
                    Some(auth) => Some(auth),
                    // Querying without the credentials someone asked for would only fail
                    // later with a less helpful 401.
                    None => {
                        return Err(format!(
                            "{AUTH_SECRET_FIELD}: Secret {name:?} has neither a key \"token\" nor both \"username\" and \"password\""
                        ));
                    }
                },
                None => {
                    return Err(format!(
                        "{AUTH_SECRET_FIELD}: Secret {name:?} does not exist"
                    ));
                }
            },
            // Named but not read: never query without the credentials asked for.
            (Some(name), None) => {
                return Err(format!("{AUTH_SECRET_FIELD}: Secret {name:?} was not read"));
            }
            (None, _) => None,
        };
        if auth.is_some()
            && let Ok(url) = reqwest::Url::parse(&address)
            && let Err(e) = egress.check_credentials(&url, AUTH_FIELD, &without_userinfo(&address))
        {
            return Err(e.to_string());
        }
        Ok(Target {
            address,
            timeout,
            auth,
        })
    }
}

/// The field that names a guard's Prometheus credentials, as messages name it.
pub const AUTH_SECRET_FIELD: &str = "spec.prometheus.authSecretRef.name";

/// The Secret a guard's `prometheus.authSecretRef` names.
pub fn auth_secret(guard: &crate::api::RolloutGuard) -> Option<&str> {
    guard
        .spec
        .prometheus
        .as_ref()
        .and_then(|p| p.auth_secret_ref.as_ref())
        .map(|r| r.name.as_str())
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
    /// The operator's egress policy refused the call or its answer (SPEC §5).
    #[error("Prometheus at {address}: {message}")]
    Refused { address: String, message: String },
}

/// A pool of HTTP connections shared by every query, bounded by the operator's egress
/// policy.
///
/// The instant query is sent here rather than through prometheus-http-query: that crate
/// reads the whole answer into memory (`Response::json`) before parsing it, so an answer
/// could not be capped while it streams.
#[derive(Clone, Default)]
pub struct Prometheus {
    egress: Egress,
}

impl Prometheus {
    pub fn new(egress: Egress) -> Self {
        Self { egress }
    }

    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    /// Evaluates `query` as an instant query at `address`.
    pub async fn instant(
        &self,
        address: &str,
        query: &str,
        timeout: Duration,
        auth: Option<&Auth>,
    ) -> Result<Vec<Series>, QueryError> {
        let shown = without_userinfo(address);
        let unreachable = |message: String| QueryError::Unreachable {
            address: shown.clone(),
            message,
        };
        let refused = |e: EgressError| match e {
            EgressError::Timeout => QueryError::Timeout {
                address: shown.clone(),
                timeout,
            },
            EgressError::Transport(message) => QueryError::Unreachable {
                address: shown.clone(),
                message,
            },
            e => QueryError::Refused {
                address: shown.clone(),
                message: e.to_string(),
            },
        };
        let url = query_url(address, query, timeout)
            .map_err(|e| unreachable(format!("not a URL: {e}")))?;
        let (status, body) = match authorized_get(
            &self.egress,
            url,
            auth,
            timeout,
            ["spec.prometheus.address", AUTH_FIELD],
            &shown,
        )
        .await
        {
            Err(None) => {
                return Err(QueryError::Timeout {
                    address: shown,
                    timeout,
                });
            }
            Err(Some(e)) => return Err(refused(e)),
            Ok(answer) => answer,
        };
        let answer = match serde_json::from_slice::<Answer>(&body) {
            Ok(answer) => answer,
            Err(_) if !status.is_success() => {
                return Err(unreachable(format!(
                    "answered {} without a Prometheus API answer",
                    status.as_u16()
                )));
            }
            Err(e) => return Err(unreachable(format!("could not read the answer: {e}"))),
        };
        series_of(answer).map_err(|e| match e {
            AnswerError::Rejected(message) => QueryError::Rejected {
                address: shown.clone(),
                message,
            },
            AnswerError::Unexpected(kind) => QueryError::UnexpectedResult {
                address: shown.clone(),
                kind,
            },
            AnswerError::Malformed(message) => unreachable(message),
        })
    }
}

/// A GET of `url` through the egress policy, with `auth` as its Authorization header, the
/// whole exchange bounded by `timeout`. `fields`: the address field and the auth field
/// named when the policy refuses credentials (userinfo in the address is one too: reqwest
/// sends it as basic auth). Err(None): the timeout passed.
pub(crate) async fn authorized_get(
    egress: &Egress,
    url: reqwest::Url,
    auth: Option<&Auth>,
    timeout: Duration,
    [address_field, auth_field]: [&str; 2],
    shown: &str,
) -> Result<(reqwest::StatusCode, Vec<u8>), Option<EgressError>> {
    if auth.is_some() {
        egress.check_credentials(&url, auth_field, shown)?;
    } else if !url.username().is_empty() || url.password().is_some() {
        egress.check_credentials(&url, address_field, shown)?;
    }
    let mut request = egress.client().get(url).timeout(timeout);
    match auth {
        Some(Auth::Bearer(token)) => {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                header_value(&format!("Bearer {token}")),
            );
        }
        Some(Auth::Basic { username, password }) => {
            use base64::Engine as _;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            request = request.header(
                reqwest::header::AUTHORIZATION,
                header_value(&format!("Basic {encoded}")),
            );
        }
        None => {}
    }
    let exchange = async {
        let response = egress.send(request).await?;
        let status = response.status();
        let body = egress.read_capped(response).await?;
        Ok::<_, EgressError>((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(None),
        Ok(result) => result.map_err(Some),
    }
}

/// `{address}/api/v1/query?query=…&timeout=…ms`.
fn query_url(address: &str, query: &str, timeout: Duration) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(address).map_err(|e| e.to_string())?;
    if url.cannot_be_a_base() {
        return Err("it cannot be a base URL".into());
    }
    let path = format!("{}/api/v1/query", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_fragment(None);
    url.query_pairs_mut()
        .clear()
        .append_pair("query", query)
        .append_pair("timeout", &format!("{}ms", timeout.as_millis()));
    Ok(url)
}

/// The Prometheus HTTP API's answer envelope (`/api/v1/query`).
#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<VectorSample>),
    Scalar(Sample),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// Absent for a native histogram sample (`histogram` instead).
    #[serde(default)]
    value: Option<Sample>,
}

/// `[<unix seconds>, "<value>"]`; the value is a string, "NaN" and "+Inf" included.
#[derive(Deserialize)]
struct Sample(#[allow(dead_code)] serde::de::IgnoredAny, String);

impl Sample {
    fn value(&self) -> Result<f64, AnswerError> {
        self.1.parse::<f64>().map_err(|_| {
            AnswerError::Malformed(format!("sample value {:?} is not a number", self.1))
        })
    }
}

#[derive(Debug, PartialEq)]
enum AnswerError {
    Rejected(String),
    Unexpected(&'static str),
    Malformed(String),
}

fn series_of(answer: Answer) -> Result<Vec<Series>, AnswerError> {
    if answer.status != "success" {
        return Err(AnswerError::Rejected(format!(
            "{}: {}",
            answer.error_type.as_deref().unwrap_or("error"),
            answer.error.as_deref().unwrap_or("no message")
        )));
    }
    match answer.data {
        Some(Data::Vector(samples)) => samples
            .into_iter()
            .map(|s| match s.value {
                Some(value) => Ok(Series {
                    labels: s.metric,
                    value: value.value()?,
                }),
                None => Err(AnswerError::Unexpected("native histogram")),
            })
            .collect(),
        Some(Data::Scalar(sample)) => Ok(vec![Series::new(sample.value()?)]),
        Some(Data::Matrix(_)) => Err(AnswerError::Unexpected("range vector")),
        Some(Data::String(_)) => Err(AnswerError::Unexpected("string")),
        None => Err(AnswerError::Malformed(
            "a successful answer without data".into(),
        )),
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
    reads: crate::shared::PerInterval<QueryKey, Result<Vec<Series>, String>>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct QueryKey {
    address: String,
    query: String,
    auth: Option<Auth>,
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
        let key = QueryKey {
            address: address.to_string(),
            query: query.to_string(),
            auth: auth.cloned(),
        };
        let (prometheus, metrics) = (prometheus.clone(), self.metrics.clone());
        let (address, query, auth) = (address.to_string(), query.to_string(), auth.cloned());
        self.reads
            .read(key, interval, async move {
                let result = prometheus
                    .instant(&address, &query, timeout, auth.as_ref())
                    .await
                    .map_err(|e| e.to_string());
                if let Some(m) = metrics {
                    let outcome = if result.is_ok() { "success" } else { "error" };
                    crate::metrics::Metrics::count(&m.prometheus_queries, outcome);
                }
                result
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Vec<Series>, AnswerError> {
        series_of(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn vectors_and_scalars_become_series_with_string_values_parsed() {
        let series = parse(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"job":"shop","code":"500"},"value":[1700000000.123,"0.25"]},
                {"metric":{},"value":[1700000000,"NaN"]},
                {"metric":{"x":"y"},"value":[1700000000,"+Inf"]},
                {"metric":{"x":"z"},"value":[1700000000,"-Inf"]}]}}"#,
        )
        .unwrap();
        assert_eq!(series.len(), 4);
        assert_eq!(series[0].value, 0.25);
        assert_eq!(series[0].labels["code"], "500");
        assert!(series[1].value.is_nan());
        assert_eq!(series[2].value, f64::INFINITY);
        assert_eq!(series[3].value, f64::NEG_INFINITY);
        assert_eq!(
            parse(
                r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}"#
            )
            .unwrap(),
            vec![Series::new(42.0)]
        );
        assert_eq!(
            parse(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#).unwrap(),
            vec![]
        );
    }

    #[test]
    fn errors_and_other_result_types_are_named() {
        assert_eq!(
            parse(r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#),
            Err(AnswerError::Rejected(
                "bad_data: parse error at char 5".into()
            ))
        );
        assert_eq!(
            parse(
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#
            ),
            Err(AnswerError::Unexpected("range vector"))
        );
        assert_eq!(
            parse(r#"{"status":"success","data":{"resultType":"string","result":[1,"hello"]}}"#),
            Err(AnswerError::Unexpected("string"))
        );
        assert!(matches!(
            parse(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"many"]}}"#),
            Err(AnswerError::Malformed(_))
        ));
    }

    #[test]
    fn the_query_url_keeps_the_base_path_and_sets_query_and_timeout() {
        let url = query_url(
            "http://prom:9090/prometheus/",
            "sum(up{job=\"a\"})",
            Duration::from_millis(1500),
        )
        .unwrap();
        assert_eq!(url.path(), "/prometheus/api/v1/query");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            vec![
                ("query".to_string(), "sum(up{job=\"a\"})".to_string()),
                ("timeout".to_string(), "1500ms".to_string())
            ]
        );
        assert!(query_url("not a url", "up", Duration::from_secs(1)).is_err());
    }
}
