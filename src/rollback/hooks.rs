//! Drain and resume hooks (`rollback.hooks`): a POST with a JSON body naming the guard, the
//! request and the flags. Each call carries an idempotency key, and the state machine calls
//! a hook at least once: its start is recorded before the call, and a call interrupted by a
//! restart is made again with the same key.

use crate::api::guard::Hook;
use crate::api::request::HookStage;
use crate::egress::{Egress, EgressError, without_userinfo};
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookPayload<'a> {
    pub stage: HookStage,
    pub namespace: &'a str,
    pub guard: &'a str,
    pub request: &'a str,
    pub requested_by: &'a str,
    pub reason: &'a str,
    pub flags: &'a [String],
}

/// Calls the hook; Err says what went wrong (the rollback goes on either way). The URL is
/// the guard's own (`rollback.hooks[].url`, no credential); the error names it without its
/// userinfo and the answer's body is read within the egress cap, never kept.
pub async fn call(
    egress: &Egress,
    hook: &Hook,
    idempotency_key: &str,
    payload: &HookPayload<'_>,
) -> Result<(), String> {
    let timeout = hook.timeout.to_std().map_err(|e| e.to_string())?;
    let shown = without_userinfo(&hook.url);
    let request = egress
        .client()
        .post(&hook.url)
        .timeout(timeout)
        .header("Idempotency-Key", idempotency_key)
        .json(payload);
    let response = egress.send(request).await.map_err(|e| match e {
        EgressError::Timeout => format!("POST {shown} timed out after {}", hook.timeout),
        e => format!("POST {shown} failed: {e}"),
    })?;
    let status = response.status();
    // Drain (within the cap) so the connection can be reused; the body itself is not used.
    let _ = egress.read_capped(response).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("POST {shown} answered {}", status.as_u16()))
    }
}
