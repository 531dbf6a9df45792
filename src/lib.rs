//! rollguard: a Kubernetes operator that guards a feature rollout and rolls it back fast
//! and safely. See SPEC.md for the contract; `api` holds the custom resources.

#![forbid(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod egress;
pub mod fault;
pub mod flags;
pub mod guard;
pub mod health;
pub mod kstatus;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod opted_in;
pub mod prometheus;
pub mod propagation;
pub mod report;
pub mod requests;
pub mod rollback;
pub mod shared;
pub mod slo;
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

impl Error {
    /// The reason of the Warning Event a failed reconcile leaves on its object: what kind of
    /// failure it was, so `kubectl describe` says "Forbidden" rather than "failed". None for
    /// a conflict, which only means "decide again on a fresh read".
    pub fn event_reason(&self) -> Option<&'static str> {
        Some(match self {
            Error::Kube(kube::Error::Api(s)) => match s.code {
                409 => return None,
                401 => "ReconcileUnauthorized",
                403 => "ReconcileForbidden",
                404 => "ReconcileNotFound",
                422 | 400 => "ReconcileInvalid",
                429 => "ReconcileThrottled",
                500.. => "ReconcileApiServerError",
                _ => "ReconcileApiError",
            },
            Error::Kube(_) => "ReconcileApiUnreachable",
            Error::InvalidDuration(_) => "ReconcileInvalidDuration",
            Error::Yaml(_) | Error::Json(_) => "ReconcileSerialisation",
            Error::NoNamespace(_) => "ReconcileNoNamespace",
        })
    }
}

/// Leaves a Warning Event on `object` for a reconcile that failed (see
/// [`Error::event_reason`]), without holding up the controller: error policies are not async.
pub fn report_reconcile_error<K>(
    recorder: &kube::runtime::events::Recorder,
    object: &K,
    error: &Error,
    retry_in: std::time::Duration,
) where
    K: kube::Resource<DynamicType = ()>,
{
    let Some(reason) = error.event_reason() else {
        return;
    };
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: reason.into(),
        note: Some(
            format!(
                "reconcile failed, retrying in {}s: {error}",
                retry_in.as_secs()
            )
            .chars()
            .take(1000)
            .collect(),
        ),
        action: "Reconcile".into(),
        secondary: None,
    };
    let recorder = recorder.clone();
    let regarding = object.object_ref(&());
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &regarding).await {
            tracing::warn!(error = %e, reason, "could not publish the reconcile error's Event");
        }
    });
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
