//! The guard's rollback slot, held in a `coordination.k8s.io` Lease per guard
//! (`rollguard-slot-<guard>` in the guard's namespace): `holderIdentity` names the
//! RollbackRequest holding it, an annotation its uid. A core object costs the API server
//! about a quarter of a RolloutGuard status patch (BENCHMARKS.md), and the claim is on the
//! way to the flags write. The guard's `status.activeRollback` mirrors the holder, written
//! right after the claim, for people, `kubectl`, and the guard's evaluation.
//!
//! Taking the slot is one call when it is free (a create: exactly one of two racing
//! requests gets it); taking it from a known holder is a JSON patch whose `test` makes it
//! conditional on that holder. Freeing it deletes the Lease with its resourceVersion as
//! precondition, after a read that shows this request still holds it.

use crate::api::names::{GUARD_LABEL, REQUEST_UID_ANNOTATION, bounded, label_value};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Name prefix of the slot Leases (the chart's admission policy lets the operator write no
/// other Lease in a tenant's namespace).
pub const PREFIX: &str = "rollguard-slot-";

/// The slot Lease's name for `guard` (shortened with a hash past 253 characters).
pub fn name(guard: &str) -> String {
    bounded(&format!("{PREFIX}{guard}"), 253)
}

/// Who holds a slot: the request's name and uid, as the Lease says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub name: String,
    pub uid: String,
}

/// The holder a Lease names (none: freed, or written by someone else).
pub fn holder(lease: &Lease) -> Option<Holder> {
    let name = lease.spec.as_ref()?.holder_identity.clone()?;
    let uid = lease.annotations().get(REQUEST_UID_ANNOTATION)?.clone();
    (!name.is_empty()).then_some(Holder { name, uid })
}

/// The Lease that says `holder` holds `guard`'s slot, owned by the guard (deleted with it).
pub fn build(guard: &crate::api::RolloutGuard, holder: &Holder) -> Lease {
    let guard_name = guard.name_any();
    Lease {
        metadata: ObjectMeta {
            name: Some(name(&guard_name)),
            namespace: guard.namespace(),
            labels: Some(BTreeMap::from([(
                GUARD_LABEL.to_string(),
                label_value(&guard_name),
            )])),
            annotations: Some(BTreeMap::from([(
                REQUEST_UID_ANNOTATION.to_string(),
                holder.uid.clone(),
            )])),
            owner_references: guard.uid().map(|uid| {
                vec![OwnerReference {
                    api_version: crate::api::RolloutGuard::api_version(&()).into_owned(),
                    kind: crate::api::RolloutGuard::kind(&()).into_owned(),
                    name: guard_name.clone(),
                    uid,
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.name.clone()),
            ..Default::default()
        }),
    }
}

/// The JSON patch that hands the slot from `from` (a holder's name, or "" for a freed
/// Lease) to `to`; the API server refuses it (422) if the Lease names anyone else.
pub fn handover(from: &str, to: &Holder) -> serde_json::Value {
    let annotation = REQUEST_UID_ANNOTATION.replace('~', "~0").replace('/', "~1");
    serde_json::json!([
        {"op": "test", "path": "/spec/holderIdentity", "value": from},
        {"op": "replace", "path": "/spec/holderIdentity", "value": to.name},
        {"op": "add", "path": format!("/metadata/annotations/{annotation}"), "value": to.uid},
    ])
}

/// What an attempt to take the slot found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// This request holds it now (or held it already).
    Mine,
    /// The Lease, read just now, names another holder (None: it names none, or is gone).
    Other(Option<Holder>),
}

/// Whether a Lease's holder may be replaced by a request that found the slot free on the
/// guard: the holder's request is gone (`found`: None, or created again under the same
/// name with another uid) or finished (its release, interrupted, did not delete the Lease).
/// `found`: the holder's request as the API server or the cache has it, (uid, finished).
pub fn may_take(holder: &Holder, found: Option<(&str, bool)>) -> bool {
    match found {
        None => true,
        Some((uid, finished)) => uid != holder.uid || finished,
    }
}

/// Creates the Lease for `me`; if it exists, reads who holds it.
pub async fn create(
    leases: &Api<Lease>,
    guard: &crate::api::RolloutGuard,
    me: &Holder,
) -> Result<Taken, kube::Error> {
    match leases
        .create(&PostParams::default(), &build(guard, me))
        .await
    {
        Ok(_) => Ok(Taken::Mine),
        Err(kube::Error::Api(e)) if e.code == 409 => holds(leases, &guard.name_any(), me).await,
        Err(e) => Err(e),
    }
}

/// Hands the slot from `from` to `me` (`from`: the holder the caller decided to take it
/// from, or "" for a freed Lease). If the Lease is gone, creates it.
pub async fn take_from(
    leases: &Api<Lease>,
    guard: &crate::api::RolloutGuard,
    from: &str,
    me: &Holder,
) -> Result<Taken, kube::Error> {
    let patch =
        Patch::<()>::Json(serde_json::from_value(handover(from, me)).expect("a JSON patch"));
    match leases
        .patch(&name(&guard.name_any()), &PatchParams::default(), &patch)
        .await
    {
        Ok(_) => Ok(Taken::Mine),
        Err(kube::Error::Api(e)) if e.code == 404 => create(leases, guard, me).await,
        // The test failed: someone else holds it now.
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409 => {
            holds(leases, &guard.name_any(), me).await
        }
        Err(e) => Err(e),
    }
}

/// Takes a slot whose Lease names no holder rollguard wrote (emptied, or made by hand):
/// deletes it, its resourceVersion as precondition, and creates it for `me`.
pub async fn take_unheld(
    leases: &Api<Lease>,
    guard: &crate::api::RolloutGuard,
    me: &Holder,
) -> Result<Taken, kube::Error> {
    if let Some(lease) = read(leases, &guard.name_any()).await? {
        if let Some(held) = holder(&lease) {
            return Ok(found_taken(Some(held), me));
        }
        delete_as_read(leases, &lease).await?;
    }
    create(leases, guard, me).await
}

/// Deletes `lease` unless it changed since it was read (gone already is fine).
async fn delete_as_read(leases: &Api<Lease>, lease: &Lease) -> Result<(), kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: lease.uid(),
            resource_version: lease.resource_version(),
        }),
        ..Default::default()
    };
    match leases.delete(&lease.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Who holds `guard`'s slot now, as its Lease says, seen from `me`.
async fn holds(leases: &Api<Lease>, guard: &str, me: &Holder) -> Result<Taken, kube::Error> {
    let found = read(leases, guard).await?;
    Ok(found_taken(found.and_then(|l| holder(&l)), me))
}

fn found_taken(found: Option<Holder>, me: &Holder) -> Taken {
    match found {
        Some(h) if h == *me => Taken::Mine,
        other => Taken::Other(other),
    }
}

/// The slot Lease of `guard`, if any.
pub async fn read(leases: &Api<Lease>, guard: &str) -> Result<Option<Lease>, kube::Error> {
    leases.get_opt(&name(guard)).await
}

/// Frees the slot if `me` holds it: deletes the Lease, its resourceVersion as read as
/// precondition (a handover in between makes the delete fail, and the new holder keeps it).
pub async fn free(leases: &Api<Lease>, guard: &str, me: &Holder) -> Result<(), kube::Error> {
    let Some(lease) = read(leases, guard).await? else {
        return Ok(());
    };
    if holder(&lease).as_ref() != Some(me) {
        return Ok(());
    }
    delete_as_read(leases, &lease).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> crate::api::RolloutGuard {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
            "metadata": {"name": "checkout", "namespace": "shop", "uid": "g-1"},
            "spec": {"flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]}}
        }))
        .unwrap()
    }

    fn me() -> Holder {
        Holder {
            name: "incident-42".into(),
            uid: "r-1".into(),
        }
    }

    #[test]
    fn the_lease_names_its_holder_and_belongs_to_the_guard() {
        let lease = build(&guard(), &me());
        assert_eq!(lease.name_any(), "rollguard-slot-checkout");
        assert_eq!(lease.namespace().as_deref(), Some("shop"));
        assert_eq!(holder(&lease), Some(me()));
        let owner = &lease.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("RolloutGuard", "g-1")
        );
        assert_eq!(lease.labels()[GUARD_LABEL], "checkout");
    }

    #[test]
    fn a_freed_or_foreign_lease_names_no_holder() {
        let mut lease = build(&guard(), &me());
        lease.spec.as_mut().unwrap().holder_identity = Some(String::new());
        assert_eq!(holder(&lease), None);
        let mut foreign = build(&guard(), &me());
        foreign.metadata.annotations = None;
        assert_eq!(holder(&foreign), None, "no uid: not written by rollguard");
    }

    #[test]
    fn long_guard_names_give_a_valid_lease_name() {
        let long = "g".repeat(253);
        let n = name(&long);
        assert!(n.len() <= 253 && n.starts_with(PREFIX), "{n}");
        assert_ne!(n, name(&"g".repeat(252)));
    }

    #[test]
    fn a_handover_is_conditional_on_the_holder_it_takes_from() {
        let patch = handover("graceful-1", &me());
        assert_eq!(patch[0]["op"], "test");
        assert_eq!(patch[0]["path"], "/spec/holderIdentity");
        assert_eq!(patch[0]["value"], "graceful-1");
        assert_eq!(patch[1]["value"], "incident-42");
        assert_eq!(
            patch[2]["path"],
            "/metadata/annotations/rollguard.dev~1request-uid"
        );
        assert_eq!(patch[2]["value"], "r-1");
    }

    #[test]
    fn only_a_gone_or_finished_holder_is_replaced() {
        let held = me();
        assert!(may_take(&held, None), "gone");
        assert!(
            may_take(&held, Some(("r-0", false))),
            "created again: another request"
        );
        assert!(may_take(&held, Some(("r-1", true))), "finished, not freed");
        assert!(!may_take(&held, Some(("r-1", false))), "in flight");
    }

    #[test]
    fn a_lease_found_holding_this_request_is_its_own() {
        assert_eq!(found_taken(Some(me()), &me()), Taken::Mine);
        let other = Holder {
            name: "incident-42".into(),
            uid: "r-0".into(),
        };
        assert_eq!(
            found_taken(Some(other.clone()), &me()),
            Taken::Other(Some(other)),
            "same name, another request (deleted and created again)"
        );
        assert_eq!(found_taken(None, &me()), Taken::Other(None));
    }
}
