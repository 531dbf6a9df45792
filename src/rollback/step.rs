//! The rollback state machine's one decision: given the request (its spec and the progress
//! recorded in its status) and what the reconciler observed, what is the next step?
//! Pure: every step's completion is in status, so after a crash the same inputs give the
//! step that was interrupted, never one already done (SPEC §2 "Rollback steps").

use crate::api::request::{
    HookOutcome, HookStage, RequestAction, RequestMode, RollbackRequestSpec, RollbackRequestStatus,
};
use crate::conditions::{self, is_true};

/// Condition types of a RollbackRequest (SPEC §1).
pub mod condition {
    pub const SNAPSHOT_TAKEN: &str = "SnapshotTaken";
    pub const FLAGS_DISABLED: &str = "FlagsDisabled";
    pub const NOTIFIED: &str = "Notified";
    pub const HEALTH_VERIFIED: &str = "HealthVerified";
    pub const COMPLETE: &str = "Complete";
    pub const FAILED: &str = "Failed";
}

/// Who holds the guard's one rollback slot, as the reconciler found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// This request holds it (guard `status.activeRollback` names it).
    Held,
    /// Nobody holds it, and no older request of the guard is waiting.
    Free,
    /// Another request holds it or is older in the queue.
    Behind(String),
    /// Another request holds it, but this one is an emergency (an immediate rollback) and
    /// that one is not: this one takes the slot, and that one ends `Superseded`.
    Takeover(String),
}

/// What the reconciler observed besides the request itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// false: the guard named by `spec.guardRef` does not exist.
    pub guard_exists: bool,
    pub slot: Slot,
    /// A restore not yet started: an emergency of the guard created no earlier than it (in
    /// flight or succeeded) — the later intent wins, so the restore never runs after it.
    pub overtaken_by: Option<String>,
    /// Pre/post hooks configured on the guard.
    pub pre_hooks: usize,
    pub post_hooks: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Terminal and released: nothing to do.
    Done,
    /// Terminal, but the guard still names this request: free the slot.
    Release,
    /// Fail before any side effect (bad input).
    Fail {
        reason: &'static str,
        message: String,
    },
    /// Pending behind another request of the same guard.
    Wait { behind: String },
    /// Take the guard's rollback slot (from `supersedes`, for an immediate rollback).
    Claim { supersedes: Option<String> },
    /// An immediate rollback took the slot while this request was under way: it ends here,
    /// its steps so far recorded, and the other request carries on.
    Superseded { by: Option<String> },
    /// Copy the flags ConfigMap and `snapshot.include` into the snapshot Secret.
    Snapshot,
    /// Record a hook call as under way, then call it. A call recorded as under way when the
    /// operator stopped is made again, with the same `Idempotency-Key` (hooks are called at
    /// least once: no step is skipped).
    CallHook { stage: HookStage, index: usize },
    /// dryRun: compute and record the change, touch nothing.
    DryRun,
    /// Write the flags (rollback: off; restore: back from the snapshot).
    WriteFlags,
    /// Wait for health within `health.timeout`.
    Verify,
    /// All done: record durations and the SLO outcome, phase Succeeded.
    Succeed,
}

/// A request of the guard as [`slot`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    pub name: String,
    pub created: Option<jiff::Timestamp>,
    /// An immediate rollback that changes flags ([`is_emergency`]).
    pub emergency: bool,
    /// Succeeded, Failed or Superseded.
    pub finished: bool,
    /// Failed.
    pub failed: bool,
    /// A restore (not a dry run).
    pub restore: bool,
    /// Accepted (`startedAt`).
    pub started: bool,
    /// An emergency's `status.overtook`.
    pub overtook: Vec<String>,
}

/// Who holds the guard's rollback slot, from this request's point of view. `accepted`: this
/// request has started (it held the slot); `active`: the guard's `activeRollback`;
/// `last_rollback`: the guard's last rollback; `queue`: the guard's requests as the cache has
/// them. Requests queue in creation order (names break ties); an emergency neither waits for
/// nor queues behind anything but another emergency, and takes the slot from a holder that
/// is not one.
pub fn slot(
    me: &Queued,
    accepted: bool,
    active: Option<&str>,
    last_rollback: Option<&str>,
    queue: &[Queued],
) -> Slot {
    if active == Some(me.name.as_str()) {
        return Slot::Held;
    }
    if accepted {
        // The slot is someone else's: an emergency took it. Name it, also when it has
        // finished already (then it is the guard's last rollback).
        return active
            .or(last_rollback)
            .map_or(Slot::Free, |by| Slot::Behind(by.to_string()));
    }
    let in_flight = |r: &&Queued| !r.finished;
    // The guard names a holder: it is the holder until it frees the slot — also when it has
    // finished (its release, which records the guard's last rollback, comes next) or is not
    // in the cache (the guard frees the slot of a deleted request).
    if let Some(other) = active {
        let holder = queue.iter().find(|r| r.name == other);
        return match holder {
            Some(h) if !h.finished && me.emergency && !h.emergency => {
                Slot::Takeover(other.to_string())
            }
            _ => Slot::Behind(other.to_string()),
        };
    }
    let key = |r: &Queued| (r.created, r.name.clone());
    let mine = key(me);
    queue
        .iter()
        .filter(in_flight)
        .filter(|r| r.name != me.name && key(r) < mine)
        .filter(|r| !me.emergency || r.emergency)
        .min_by_key(|r| key(r))
        .map_or(Slot::Free, |r| Slot::Behind(r.name.clone()))
}

/// The restores an emergency overtakes as it takes the guard: waiting (not started), and
/// asked for no later than it — at the same second too, since the API server keeps creation
/// times to the second and the flags had better stay off. A restore asked for after the
/// emergency took the guard is not among them, and runs after it.
pub fn to_overtake(me: &Queued, queue: &[Queued]) -> Vec<String> {
    let mut names: Vec<String> = queue
        .iter()
        .filter(|r| r.restore && !r.started && !r.finished && r.name != me.name)
        .filter(|r| r.created <= me.created)
        .map(|r| r.name.clone())
        .collect();
    names.sort();
    names
}

/// For a restore that has not started: the emergency that overtook it (see
/// [`to_overtake`]), unless that emergency failed.
pub fn overtaken(me: &Queued, accepted: bool, queue: &[Queued]) -> Option<String> {
    if !me.restore || accepted {
        return None;
    }
    queue
        .iter()
        .find(|r| r.emergency && !r.failed && r.overtook.contains(&me.name))
        .map(|r| r.name.clone())
}

/// An emergency: an immediate rollback that changes flags. It does not queue behind a
/// graceful rollback, a restore or a dry run of the same guard.
pub fn is_emergency(spec: &RollbackRequestSpec) -> bool {
    spec.action == RequestAction::Rollback && spec.mode == RequestMode::Immediate && !spec.dry_run
}

pub use crate::api::request::is_terminal;

pub fn next_step(
    spec: &RollbackRequestSpec,
    status: &RollbackRequestStatus,
    observed: &Observed,
) -> Step {
    if is_terminal(status.phase) {
        return if observed.slot == Slot::Held {
            Step::Release
        } else {
            Step::Done
        };
    }
    if !observed.guard_exists {
        return Step::Fail {
            reason: "GuardNotFound",
            message: format!(
                "spec.guardRef.name: RolloutGuard {:?} does not exist in this namespace",
                spec.guard_ref.name
            ),
        };
    }
    if let Some(by) = &observed.overtaken_by {
        return Step::Superseded {
            by: Some(by.clone()),
        };
    }
    // Accepted means it held the slot; the only way to lose it is an emergency taking it.
    if status.started_at.is_some() && observed.slot != Slot::Held {
        return Step::Superseded {
            by: match &observed.slot {
                Slot::Behind(other) | Slot::Takeover(other) => Some(other.clone()),
                _ => None,
            },
        };
    }
    match &observed.slot {
        Slot::Behind(other) => {
            return Step::Wait {
                behind: other.clone(),
            };
        }
        Slot::Free => return Step::Claim { supersedes: None },
        Slot::Takeover(other) => {
            return Step::Claim {
                supersedes: Some(other.clone()),
            };
        }
        Slot::Held => {}
    }
    let c = &status.conditions;
    if spec.dry_run {
        return Step::DryRun;
    }
    if !is_true(c, condition::SNAPSHOT_TAKEN) {
        return Step::Snapshot;
    }
    let graceful_rollback =
        spec.action == RequestAction::Rollback && spec.mode == RequestMode::Graceful;
    if graceful_rollback
        && let Some(step) = next_hook(status, HookStage::PreRollback, observed.pre_hooks)
    {
        return step;
    }
    if !is_true(c, condition::FLAGS_DISABLED) {
        return Step::WriteFlags;
    }
    if spec.action == RequestAction::Rollback
        && conditions::status_of(c, condition::HEALTH_VERIFIED) != Some(conditions::TRUE)
    {
        return Step::Verify;
    }
    if graceful_rollback
        && let Some(step) = next_hook(status, HookStage::PostRollback, observed.post_hooks)
    {
        return step;
    }
    Step::Succeed
}

/// The first hook of `stage` not yet finished.
fn next_hook(status: &RollbackRequestStatus, stage: HookStage, count: usize) -> Option<Step> {
    (0..count).find_map(|index| {
        let record = status
            .hooks
            .iter()
            .find(|h| h.stage == stage && h.index as usize == index);
        match record.map(|h| h.outcome) {
            None | Some(HookOutcome::Calling) => Some(Step::CallHook { stage, index }),
            Some(_) => None,
        }
    })
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
