//! rollguard: a Kubernetes operator that guards a feature rollout and rolls it back fast
//! and safely. See SPEC.md for the contract; `api` holds the custom resources.

#![forbid(unsafe_code)]

pub mod api;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod egress;
pub mod fault;
pub mod flags;
pub mod guard;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod prometheus;
pub mod report;
pub mod rollback;
pub mod triggers;
pub mod trust;

/// Errors of the operator and its tools; each names the field or object and the value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("\"{0}\" is not a duration: use Go duration syntax such as 30s, 5m or 1h30m")]
    InvalidDuration(String),

    #[error("writing YAML: {0}")]
    Yaml(String),

    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),

    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("{0} has no namespace")]
    NoNamespace(&'static str),
}

impl Error {
    /// A short category for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidDuration(_) => "InvalidDuration",
            Error::Yaml(_) | Error::Json(_) => "Serialisation",
            Error::Kube(_) => "KubeApi",
            Error::NoNamespace(_) => "NoNamespace",
        }
    }
}

/// HTTP 409: an update whose resourceVersion is stale, or a create of a name that exists.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// kube (rustls with ring) and reqwest (rustls without a bundled provider) share one
/// crypto provider; install it once before the first TLS connection.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
