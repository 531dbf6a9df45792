//! Notification receivers the tests run on loopback: an HTTP endpoint that records every
//! delivery (and, given a signing key, checks the webhook signature the way a real
//! receiver should, with an HMAC implementation independent of the operator's), and a
//! minimal SMTP server that keeps the mail it is given.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Router, routing::post};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How an HTTP receiver answers.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    Accept,
    /// 500 to the first `n` deliveries, then 200.
    FailFirst(usize),
    /// 500 always.
    Fail,
    /// Never answers (sleeps longer than any attempt timeout).
    Hang,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the receiver answered.
    pub answered: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct HttpReceiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    signing_key: Option<Vec<u8>>,
}

struct Shared {
    behaviour: Behaviour,
    received: Arc<Mutex<Vec<Received>>>,
    signing_key: Option<Vec<u8>>,
}

impl HttpReceiver {
    /// A receiver at `http://127.0.0.1:<port>/hook`; with a signing key it answers 401 to
    /// a delivery whose signature does not verify.
    pub async fn start(behaviour: Behaviour, signing_key: Option<&str>) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let signing_key = signing_key.map(|k| k.as_bytes().to_vec());
        let shared = Arc::new(Shared {
            behaviour,
            received: received.clone(),
            signing_key: signing_key.clone(),
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared);
        let url = format!("http://{}/hook", super::serve(app).await);
        Self {
            url,
            received,
            signing_key,
        }
    }

    /// Every delivery attempt so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Deliveries answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    /// Checks a delivery as a receiver would: timestamp within five minutes, signature
    /// over `<timestamp>.<body>` (ring's HMAC, constant-time comparison).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        verify(
            self.signing_key.as_deref().expect("a signing receiver"),
            headers,
            body,
        )
    }
}

pub fn verify(key: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {name} header"))
    };
    let timestamp = get("X-Rollguard-Timestamp")?;
    let seconds: i64 = timestamp.parse().map_err(|_| "timestamp not a number")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - seconds).abs() > 300 {
        return Err(format!(
            "timestamp {seconds} too far from now ({now}): replay?"
        ));
    }
    let signature = get("X-Rollguard-Signature")?;
    let hex_digest = signature
        .strip_prefix("sha256=")
        .ok_or("signature without sha256=")?;
    let digest = hex::decode(hex_digest).map_err(|_| "signature not hex")?;
    let mut signed = timestamp.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&key, &signed, &digest).map_err(|_| "signature does not match".to_string())
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let earlier = shared.received.lock().unwrap().len();
    let mut answer = match shared.behaviour {
        Behaviour::Accept => StatusCode::OK,
        Behaviour::FailFirst(n) if earlier < n => StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::FailFirst(_) => StatusCode::OK,
        Behaviour::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::Hang => StatusCode::OK,
    };
    if let Some(key) = &shared.signing_key
        && verify(key, &headers, &body).is_err()
    {
        answer = StatusCode::UNAUTHORIZED;
    }
    shared.received.lock().unwrap().push(Received {
        headers,
        body,
        answered: answer.as_u16(),
        at: std::time::Instant::now(),
    });
    if matches!(shared.behaviour, Behaviour::Hang) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    answer
}

/// One mail as the SMTP server received it.
#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body as sent (dot-stuffing undone).
    pub data: String,
}

impl Mail {
    pub fn subject(&self) -> &str {
        self.data
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_default()
    }
}

/// A minimal SMTP server (RFC 5321: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no
/// extensions) on a loopback port. Returns its `smtp://` URL and the mailbox.
pub async fn smtp_server() -> (String, Arc<Mutex<Vec<Mail>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mailbox: Arc<Mutex<Vec<Mail>>> = Arc::default();
    let delivered = mailbox.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let mailbox = delivered.clone();
            tokio::spawn(async move {
                let _ = smtp_session(socket, mailbox).await;
            });
        }
    });
    (format!("smtp://{addr}"), mailbox)
}

async fn smtp_session(
    socket: tokio::net::TcpStream,
    mailbox: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 localhost test SMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250 localhost\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if upper.starts_with("RSET") {
            (from, to) = (String::new(), Vec::new());
            b"250 OK\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&command["MAIL FROM:".len()..]);
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&command["RCPT TO:".len()..]));
            b"250 OK\r\n"
        } else if upper == "DATA" {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            mailbox.lock().unwrap().push(Mail {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data,
            });
            b"250 queued\r\n"
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}

fn address(arg: &str) -> String {
    let arg = arg.trim();
    let arg = arg.split_whitespace().next().unwrap_or_default();
    arg.trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}
