//! Drift: while rolled back, guarded flags turned back on by someone other than a restore.

use super::*;

/// While rolled back: which flags the last rollback turned off are on again, and who did it.
/// `requests`: the guard's requests, from the controller's cache (no API call).
pub(super) fn drift(
    guard: &RolloutGuard,
    requests: &[Arc<RollbackRequest>],
    status: &crate::api::RolloutGuardStatus,
    flags_config_map: Option<&ConfigMap>,
) -> Option<assess::Drift> {
    let last = status.last_rollback.as_ref()?;
    let changes = requests
        .iter()
        .find(|r| r.name_any() == last.name)
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
        requests
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
