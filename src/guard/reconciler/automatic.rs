//! Automatic rollbacks: the RollbackRequest a firing trigger creates (built by a pure
//! function), and the API server's word on whether one is in flight already.

use super::*;

/// A request of guard `guard` that is not finished, as the API server has it now.
pub(super) async fn in_flight_now(
    requests: &Api<RollbackRequest>,
    guard: &str,
) -> Result<Option<String>, Error> {
    Ok(requests
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|r| {
            r.spec.guard_ref.name == guard && !is_terminal(r.status.as_ref().and_then(|s| s.phase))
        })
        .map(|r| r.name_any()))
}

/// The RollbackRequest a firing trigger asks for (SPEC §2 "Automatic rollback"): named
/// `<guard>-auto-<yyyymmdd-hhmmss>`, `requestedBy: system:rollguard`, owned by the guard,
/// labelled with it, and carrying its `triggeredBy` in an annotation from its creation.
pub(super) fn request_for(
    guard: &RolloutGuard,
    auto: &assess::AutoRollback,
    now: jiff::Timestamp,
) -> Result<(RollbackRequest, TriggeredBy), Error> {
    let name = guard.name_any();
    let request_name = format!("{name}-auto-{}", now.strftime("%Y%m%d-%H%M%S"));
    let triggered_by = TriggeredBy {
        trigger: auto.trigger.clone(),
        value: auto.value,
        alert: auto.alert.clone(),
    };
    let request = RollbackRequest {
        metadata: ObjectMeta {
            name: Some(request_name),
            namespace: guard.namespace(),
            labels: Some(BTreeMap::from([(
                GUARD_LABEL.to_string(),
                crate::api::names::label_value(&name),
            )])),
            owner_references: guard.controller_owner_ref(&()).map(|o| vec![o]),
            annotations: Some(BTreeMap::from([(
                crate::api::TRIGGERED_BY_ANNOTATION.to_string(),
                serde_json::to_string(&triggered_by)?,
            )])),
            ..Default::default()
        },
        spec: RollbackRequestSpec {
            guard_ref: LocalObjectReference { name },
            action: RequestAction::Rollback,
            requested_by: SYSTEM_REQUESTER.into(),
            reason: match &auto.alert {
                Some(alert) => format!(
                    "trigger {:?} fired: alert {} (fingerprint {}) firing since {}",
                    auto.trigger, alert.name, alert.fingerprint, alert.starts_at
                ),
                None => format!(
                    "trigger {:?} fired (value {})",
                    auto.trigger,
                    auto.value.map_or("no data".into(), |v| v.to_string())
                ),
            },
            mode: RequestMode::Graceful,
            flags: Vec::new(),
            force_disable_all: false,
            snapshot_name: String::new(),
            dry_run: false,
        },
        status: None,
    };
    Ok((request, triggered_by))
}

/// Creates the automatic request and says so in an Event.
pub(super) async fn create(
    guard: &RolloutGuard,
    auto: &assess::AutoRollback,
    now: jiff::Timestamp,
    requests: &Api<RollbackRequest>,
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) -> Result<(), Error> {
    let (request, _) = request_for(guard, auto, now)?;
    let request_name = request.name_any();
    match requests.create(&PostParams::default(), &request).await {
        Ok(_) => {}
        // Created in this same second before (e.g. just before a restart): it stands.
        Err(e) if crate::is_conflict(&e) => {}
        Err(e) => return Err(e.into()),
    }
    // The request's status is its reconciler's alone to write: it records `triggeredBy` from
    // the annotation at its first status write.
    // The request exists whatever becomes of this evaluation's status write: said now.
    publish(
        recorder,
        reference,
        EventType::Normal,
        "RollbackCreated",
        format!(
            "trigger {:?} fired: created RollbackRequest {request_name:?}",
            auto.trigger
        ),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_automatic_request_is_named_owned_labelled_and_carries_its_trigger() {
        let guard: RolloutGuard = serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
            "metadata": {"name": "phase4", "namespace": "shop", "uid": "u-1"},
            "spec": {"flags": {"configMapRef": {"name": "ff"}, "guarded": ["a"]}}
        }))
        .unwrap();
        let auto = assess::AutoRollback {
            trigger: "errors".into(),
            value: Some(0.023),
            alert: None,
        };
        let now = jiff::Timestamp::from_second(1_795_774_500).unwrap();
        let (request, triggered_by) = request_for(&guard, &auto, now).unwrap();
        assert_eq!(
            request.name_any(),
            format!("phase4-auto-{}", now.strftime("%Y%m%d-%H%M%S"))
        );
        assert_eq!(request.namespace().as_deref(), Some("shop"));
        assert_eq!(request.spec.requested_by, "system:rollguard");
        assert_eq!(request.labels()["rollguard.dev/guard"], "phase4");
        assert_eq!(request.owner_references()[0].uid, "u-1");
        let annotation: TriggeredBy =
            serde_json::from_str(&request.annotations()[crate::api::TRIGGERED_BY_ANNOTATION])
                .unwrap();
        assert_eq!(annotation, triggered_by);
        assert_eq!(triggered_by.value, Some(0.023));
        assert!(
            request.spec.reason.contains("errors"),
            "{}",
            request.spec.reason
        );
    }
}
