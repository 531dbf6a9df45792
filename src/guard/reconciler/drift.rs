//! Drift: while rolled back, guarded flags turned back on by someone other than a restore.

use super::*;

/// While rolled back: which flags the last rollback turned off are on again, and who did it.
pub(super) fn drift(
    guard: &RolloutGuard,
    ctx: &Context,
    namespace: &str,
    status: &crate::api::RolloutGuardStatus,
    flags_config_map: Option<&ConfigMap>,
) -> Option<assess::Drift> {
    let last = status.last_rollback.as_ref()?;
    // From the controller's cache of requests: no API call per evaluation.
    let changes = ctx
        .requests
        .get(namespace, &last.name)
        .and_then(|r| r.status.clone())
        .and_then(|s| s.flags_changed)?;
    let flags = &guard.spec.flags;
    let cm = flags_config_map?;
    // Written last by a restore of this guard that has finished but not yet been recorded
    // on the guard: not drift.
    let last_change = cm
        .annotations()
        .get(crate::api::names::LAST_CHANGE_ANNOTATION);
    let by_restore = last_change.is_some_and(|uid| {
        ctx.requests
            .of_guard(namespace, &guard.name_any())
            .iter()
            .any(|r| r.uid().as_ref() == Some(uid) && r.spec.action == RequestAction::Restore)
    });
    if by_restore {
        return None;
    }
    let data = cm.data.clone().unwrap_or_default();
    let drifted = crate::flags::drifted(flags, &flags.config_map_ref.name, &data, &changes);
    if drifted.is_empty() {
        return Some(assess::Drift {
            flags: drifted,
            manager: None,
        });
    }
    let key = match flags.format {
        crate::api::guard::FlagFormat::Plain => drifted[0].clone(),
        crate::api::guard::FlagFormat::Flagd => flags.key.clone().unwrap_or_default(),
    };
    let manager = crate::flags::last_writer(cm, &key, crate::api::names::FIELD_MANAGER);
    Some(assess::Drift {
        flags: drifted,
        manager,
    })
}
