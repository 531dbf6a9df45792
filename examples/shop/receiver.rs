//! The demo's webhook receiver: checks each notification's Standard Webhooks signature and
//! keeps what it received (see the shop's module docs).

use super::say;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use hmac::{KeyInit, Mac};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Receiver {
    pub key: Vec<u8>,
    pub received: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// Checks a delivery as a Standard Webhooks receiver should: timestamp within five minutes,
/// then the HMAC over `<id>.<timestamp>.<raw body>`, compared in constant time with each
/// `v1,` signature of the header (one per key the sender holds).
fn verify(key: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {name} header"))
    };
    let id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?;
    let seconds: i64 = timestamp.parse().map_err(|_| "bad timestamp")?;
    if (jiff::Timestamp::now().as_second() - seconds).abs() > 300 {
        return Err("timestamp more than five minutes off: a replay?".into());
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let matches = header("webhook-signature")?
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .any(|digest| mac.clone().verify_slice(&digest).is_ok());
    if matches {
        Ok(())
    } else {
        Err("no signature matches".into())
    }
}

pub async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if let Err(why) = verify(&r.key, &headers, &body) {
        say(&format!("[webhook] REJECTED a delivery: {why}"));
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(notice) = serde_json::from_slice::<serde_json::Value>(&body) else {
        say("[webhook] REJECTED a delivery: body is not JSON");
        return StatusCode::BAD_REQUEST;
    };
    say(&format!(
        "[webhook] signature OK  event={} guard={}/{} request={} — {}",
        notice["event"].as_str().unwrap_or("?"),
        notice["namespace"].as_str().unwrap_or("?"),
        notice["guard"].as_str().unwrap_or("?"),
        notice["request"]["name"].as_str().unwrap_or("-"),
        notice["message"].as_str().unwrap_or(""),
    ));
    r.received.lock().unwrap().push(notice);
    StatusCode::OK
}

pub async fn list_received(State(r): State<Receiver>) -> Json<Vec<serde_json::Value>> {
    Json(r.received.lock().unwrap().clone())
}
