//! The API contract: group `rollguard.dev`, version `v1alpha1` (SPEC §1).

pub mod guard;
pub mod human;
pub mod names;
pub mod request;
pub mod schema;

pub use guard::{RolloutGuard, RolloutGuardSpec, RolloutGuardStatus};
pub use names::*;
pub use request::{RollbackRequest, RollbackRequestSpec, RollbackRequestStatus};

use kube::KubeSchema;
use schema::dns_subdomain;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "rollguard.dev";
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
