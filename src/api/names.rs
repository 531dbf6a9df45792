//! Every label, annotation and field manager rollguard writes or reads, in one place
//! (SPEC §1, §5): what users select on, what admission policies check, and how the operator
//! recognises its own writes.

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
/// Label on snapshot Secrets: `rollback` or `restore`, the action that took them.
pub const ACTION_LABEL: &str = "rollguard.dev/action";
/// Annotation on the flags ConfigMap: the uid of the request that last wrote it. Lets a
/// restarted operator see that its write already happened.
pub const LAST_CHANGE_ANNOTATION: &str = "rollguard.dev/last-change";
/// Annotation on a guard's rollback-slot Lease: the uid of the RollbackRequest holding it.
pub const REQUEST_UID_ANNOTATION: &str = "rollguard.dev/request-uid";
/// Annotation on pods refreshed after a change (`refreshPods`).
pub const FLAGS_REVISION_ANNOTATION: &str = "rollguard.dev/flags-revision";
/// The field manager of the operator's ConfigMap writes (drift detection leaves it out).
pub const FIELD_MANAGER: &str = "rollguard";
/// Field manager prefix of the in-app status ConfigMap (`rollguard-status`).
pub const NOTIFIER_FIELD_MANAGER: &str = "rollguard-notifier";

/// A label value (at most 63 characters), shortened with a hash when needed.
pub fn label_value(value: &str) -> String {
    bounded(value, 63)
}

/// `value` if it has at most `max` bytes, else shortened with a stable hash.
pub fn bounded(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_string();
    }
    // FNV-1a: stable across releases, unlike std's hasher.
    let hash = value.bytes().fold(0xcbf29ce484222325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let keep = &value[..max - 9];
    format!("{}-{:08x}", keep.trim_end_matches(['-', '.']), hash as u32)
}
