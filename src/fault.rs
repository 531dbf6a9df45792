//! Test-only fault injection (cargo feature `fault-injection`, never in release builds):
//! at a named point after an external side effect, the operator announces the point on
//! stderr and stops making progress, so a test can SIGKILL it exactly there and prove
//! that a restart neither repeats nor skips the side effect.
//!
//! `ROLLGUARD_FAULT_POINT=<point>` arms one point; `ROLLGUARD_FAULT_REQUEST=<name>`
//! limits it to one RollbackRequest.

/// Points: `snapshot-created`, `preRollback-hook-called`, `flags-written`, `verified`,
/// `postRollback-hook-called`.
#[cfg(feature = "fault-injection")]
pub async fn point(name: &str, request: &str) {
    let armed = std::env::var("ROLLGUARD_FAULT_POINT").is_ok_and(|p| p == name)
        && std::env::var("ROLLGUARD_FAULT_REQUEST").map_or(true, |r| r == request);
    if armed {
        eprintln!("FAULT-POINT {name} {request}");
        std::future::pending::<()>().await;
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub async fn point(_name: &str, _request: &str) {}
