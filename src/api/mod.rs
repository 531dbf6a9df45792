//! The API contract: group `rollguard.dev`, version `v1alpha1` (SPEC §1).

pub mod guard;
pub mod human;
pub mod request;
pub mod schema;

pub use guard::{RolloutGuard, RolloutGuardSpec, RolloutGuardStatus};
pub use request::{RollbackRequest, RollbackRequestSpec, RollbackRequestStatus};

use kube::KubeSchema;
use schema::dns_subdomain;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "rollguard.dev";
/// Label on RollbackRequests and snapshot Secrets: the guard they belong to.
pub const GUARD_LABEL: &str = "rollguard.dev/guard";
/// Label on snapshot Secrets: the request that took them.
pub const REQUEST_LABEL: &str = "rollguard.dev/request";
/// Label by which a ConfigMap's owner allows rollguard to write it (SPEC §5). The operator
/// writes no other ConfigMap and watches only these.
pub const FLAGS_LABEL: &str = "rollguard.dev/flags";
/// Label by which a Secret's owner allows rollguard to read it for a guard (SPEC §5).
pub const CREDENTIALS_LABEL: &str = "rollguard.dev/credentials";
/// The one value of [`FLAGS_LABEL`] and [`CREDENTIALS_LABEL`] that opts in.
pub const OPT_IN: &str = "true";
/// Type of snapshot Secrets.
pub const SNAPSHOT_SECRET_TYPE: &str = "rollguard.dev/snapshot";
/// `requestedBy` of requests the operator creates itself.
pub const SYSTEM_REQUESTER: &str = "system:rollguard";
/// Annotation on an automatic RollbackRequest: its `triggeredBy` as JSON, written with the
/// request itself, so the record survives a crash before the status write that follows.
pub const TRIGGERED_BY_ANNOTATION: &str = "rollguard.dev/triggered-by";

/// A reference to an object in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LocalObjectReference {
    /// Name of the object, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = dns_subdomain("name"))]
    pub name: String,
}

/// Kinds a snapshot may include besides the flags ConfigMap.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SnapshotKind {
    ConfigMap,
    Secret,
}

/// A ConfigMap or Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ObjectReference {
    /// `ConfigMap` or `Secret`.
    pub kind: SnapshotKind,
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = dns_subdomain("name"))]
    pub name: String,
}
