//! Test-only fault injection (cargo feature `fault-injection`, never in release builds):
//! at a named point after an external side effect, the operator announces the point on
//! stderr and stops making progress, so a test can SIGKILL it exactly there and prove
//! that a restart neither repeats nor skips the side effect.
//!
//! `ROLLGUARD_FAULT_POINT=<point>` arms one point; `ROLLGUARD_FAULT_REQUEST=<name>`
//! limits it to one RollbackRequest.

/// Points: `snapshot-created`, `preRollback-hook-recorded` (the call is recorded, not made),
/// `preRollback-hook-called`, `flags-written`, `flags-effective` (`FlagsEffective` recorded), `verified`,
/// `postRollback-hook-recorded`, `postRollback-hook-called`.
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

/// Test-only: at `name`, when `ROLLGUARD_FAULT_PAUSE=<name>` (and `ROLLGUARD_FAULT_REQUEST`
/// matches), announce `FAULT-PAUSE <name> <request>` and wait `ROLLGUARD_FAULT_PAUSE_MS`
/// (default 3000) before going on: a window in which a test makes another request race this
/// one. Points: `before-flags-write` (the snapshot exists, the ConfigMap is not yet written).
#[cfg(feature = "fault-injection")]
pub async fn pause(name: &str, request: &str) {
    let armed = std::env::var("ROLLGUARD_FAULT_PAUSE").is_ok_and(|p| p == name)
        && std::env::var("ROLLGUARD_FAULT_REQUEST").map_or(true, |r| r == request);
    if armed {
        let millis = std::env::var("ROLLGUARD_FAULT_PAUSE_MS")
            .ok()
            .and_then(|m| m.parse().ok())
            .unwrap_or(3000);
        eprintln!("FAULT-PAUSE {name} {request}");
        tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub async fn pause(_name: &str, _request: &str) {}
