//! Drain and resume hooks (`rollback.hooks`): a POST with a JSON body naming the guard, the
//! request and the flags. Each call carries an idempotency key, and the state machine calls
//! a hook at most once (its start is recorded before the call).

use crate::api::guard::Hook;
use crate::api::request::HookStage;
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

/// Calls the hook; Err says what went wrong (the rollback goes on either way).
pub async fn call(
    http: &reqwest::Client,
    hook: &Hook,
    idempotency_key: &str,
    payload: &HookPayload<'_>,
) -> Result<(), String> {
    let timeout = hook.timeout.to_std().map_err(|e| e.to_string())?;
    let response = http
        .post(&hook.url)
        .timeout(timeout)
        .header("Idempotency-Key", idempotency_key)
        .json(payload)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("POST {} timed out after {}", hook.url, hook.timeout)
            } else {
                format!("POST {} failed: {e}", hook.url)
            }
        })?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "POST {} answered {}",
            hook.url,
            response.status().as_u16()
        ))
    }
}
