//! Notification receivers the tests run on loopback: an HTTP endpoint that records every
//! delivery and answers as told (slow, failing, flaky), a minimal SMTP server that keeps the
//! mail it is given, and the Standard Webhooks reference library (PyPI `standardwebhooks`,
//! in the venv `tests/cluster/build-tools.sh python-tools` builds) that checks webhook
//! signatures: as an HTTP receiver of its own ([`LibraryReceiver`]) or on a delivery another
//! receiver recorded ([`library_verify`]). rollguard's signatures are never checked with a
//! re-implementation here.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Router, routing::post};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
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
}

struct Shared {
    behaviour: Behaviour,
    received: Arc<Mutex<Vec<Received>>>,
}

impl HttpReceiver {
    /// A receiver at `http://127.0.0.1:<port>/hook`. It checks no signature: hand what it
    /// recorded to [`library_verify`].
    pub async fn start(behaviour: Behaviour) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let shared = Arc::new(Shared {
            behaviour,
            received: received.clone(),
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared);
        let url = format!("http://{}/hook", super::serve(app).await);
        Self { url, received }
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
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let earlier = shared.received.lock().unwrap().len();
    let answer = match shared.behaviour {
        Behaviour::Accept => StatusCode::OK,
        Behaviour::FailFirst(n) if earlier < n => StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::FailFirst(_) => StatusCode::OK,
        Behaviour::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::Hang => StatusCode::OK,
    };
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

// ---- the Standard Webhooks reference library ----------------------------------------------

/// How a secret is handed to the library's `Webhook(secret)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// As the string itself: the library strips an optional `whsec_` and base64-decodes.
    Str,
    /// As its UTF-8 bytes (`Webhook(secret.encode())`): how a raw key string is used.
    Bytes,
}

impl Form {
    fn word(self) -> &'static str {
        match self {
            Form::Str => "str",
            Form::Bytes => "bytes",
        }
    }
}

/// A tools variable of tests/cluster/versions.sh.
pub fn tools_var(name: &str) -> String {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source tests/cluster/versions.sh && echo \"${name}\""
        ))
        .current_dir(super::repo())
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The python of the venv with the pinned `standardwebhooks`
/// (`tests/cluster/build-tools.sh python-tools`), or None with a message; under `CI=true`
/// a missing venv is a failure.
pub fn standardwebhooks_python() -> Option<PathBuf> {
    let python = PathBuf::from(tools_var("PYTHON_TOOLS")).join("bin/python");
    if python.is_file() {
        return Some(python);
    }
    let msg = format!(
        "no standardwebhooks venv at {}: run `tests/cluster/build-tools.sh python-tools` (make tools and make cluster-up do)",
        python.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

fn receiver_script() -> PathBuf {
    super::repo().join("tests/receivers/standardwebhooks_receiver.py")
}

/// Whether the library accepts a delivery with `secret`: `Ok` or the library's refusal.
/// None (outside CI) when the venv is missing.
pub fn library_verify(
    secret: &str,
    form: Form,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Result<(), String>> {
    use base64::Engine;
    let python = standardwebhooks_python()?;
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().into()))
        .collect();
    let input = serde_json::json!({
        "secret": secret,
        "form": form.word(),
        "headers": headers,
        "body": base64::engine::general_purpose::STANDARD.encode(body),
    });
    let mut child = std::process::Command::new(python)
        .arg(receiver_script())
        .arg("verify")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the standardwebhooks verifier");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match (out.status.code(), said.as_str()) {
        (Some(0), "accepted") => Some(Ok(())),
        (Some(1), s) if s.starts_with("rejected: ") => Some(Err(s.to_string())),
        _ => panic!(
            "the standardwebhooks verifier failed: {said}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// One POST as [`LibraryReceiver`] saw and judged it.
#[derive(Clone, Debug)]
pub struct Judged {
    /// `/<verifier name>`: the verifier whose verdict was the answer.
    pub path: String,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// Every verifier's verdict: `accepted` or `rejected: <the library's reason>`.
    pub verdicts: BTreeMap<String, String>,
    pub answered: u16,
}

impl Judged {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or_default()
    }
    pub fn accepted_by(&self, verifier: &str) -> bool {
        self.verdicts.get(verifier).map(String::as_str) == Some("accepted")
    }
}

/// tests/receivers/standardwebhooks_receiver.py serving on loopback: every POST is checked
/// with `standardwebhooks.Webhook(secret).verify(body, headers)` by every verifier, and
/// `POST /<name>` is answered 200 if verifier `name` accepted it, else 401.
pub struct LibraryReceiver {
    /// `http://127.0.0.1:<port>`; a receiver's URL is this plus `/<verifier name>`.
    pub base_url: String,
    /// The library's version, as the script reports it.
    pub version: String,
    record: PathBuf,
    child: std::process::Child,
}

impl LibraryReceiver {
    /// None (outside CI) when the venv is missing.
    pub fn start(verifiers: &[(&str, &str, Form)]) -> Option<Self> {
        let python = standardwebhooks_python()?;
        let dir = super::repo().join("target/test-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let stem = format!("standardwebhooks-{}", super::unique_suffix());
        let record = dir.join(format!("{stem}.jsonl"));
        let config = dir.join(format!("{stem}.json"));
        let verifiers: Vec<_> = verifiers
            .iter()
            .map(|(name, secret, form)| {
                serde_json::json!({"name": name, "secret": secret, "form": form.word()})
            })
            .collect();
        std::fs::write(
            &config,
            serde_json::json!({"record": record, "verifiers": verifiers}).to_string(),
        )
        .unwrap();
        let mut child = std::process::Command::new(python)
            .arg(receiver_script())
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the standardwebhooks receiver");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut words = line.split_whitespace();
        let (Some("PORT"), Some(port), Some("standardwebhooks"), Some(version)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            let _ = child.kill();
            panic!("the standardwebhooks receiver did not start: {line:?}");
        };
        Some(Self {
            base_url: format!("http://127.0.0.1:{port}"),
            version: version.to_string(),
            record,
            child,
        })
    }

    /// The URL whose answers follow verifier `name`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base_url)
    }

    /// Every POST so far, in arrival order (each recorded before it was answered).
    pub fn received(&self) -> Vec<Judged> {
        use base64::Engine;
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        text.lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let map = |v: &serde_json::Value, lower: bool| -> BTreeMap<String, String> {
                    v.as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| {
                            let k = if lower {
                                k.to_ascii_lowercase()
                            } else {
                                k.clone()
                            };
                            (k, v.as_str().unwrap().to_string())
                        })
                        .collect()
                };
                Judged {
                    path: v["path"].as_str().unwrap().to_string(),
                    headers: map(&v["headers"], true),
                    body: base64::engine::general_purpose::STANDARD
                        .decode(v["body"].as_str().unwrap())
                        .unwrap(),
                    verdicts: map(&v["verdicts"], false),
                    answered: v["answered"].as_u64().unwrap() as u16,
                }
            })
            .collect()
    }
}

impl Drop for LibraryReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- published schemas ----------------------------------------------------------------

/// One POST as [`SchemaReceiver`] saw and judged it.
#[derive(Clone, Debug)]
pub struct Checked {
    /// `/teams` or `/pagerduty`.
    pub path: String,
    pub body: Vec<u8>,
    /// `valid`, or `invalid: <the validator's or PagerDuty's client's reasons>`.
    pub verdict: String,
    pub answered: u16,
}

impl Checked {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// tests/receivers/schema_receiver.py serving on loopback: a Teams Workflows webhook at
/// `/teams` whose every Adaptive Card is validated against the published Adaptive Card
/// schema by PyPI `jsonschema`, and a PagerDuty Events API v2 endpoint at `/pagerduty`
/// whose every event must be what PagerDuty's own client (PyPI `pagerduty`) sends for its
/// fields; each answered 202 when valid (PagerDuty with its success body), 400 when not.
pub struct SchemaReceiver {
    pub base_url: String,
    /// `jsonschema <version> adaptive-card <schema id> pagerduty <version>`, as the script
    /// reports them.
    pub validator: String,
    record: PathBuf,
    child: std::process::Child,
}

impl SchemaReceiver {
    /// None (outside CI) when the venv is missing.
    pub fn start() -> Option<Self> {
        let python = standardwebhooks_python()?;
        let dir = super::repo().join("target/test-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let record = dir.join(format!("schema-receiver-{}.jsonl", super::unique_suffix()));
        let mut child = std::process::Command::new(python)
            .arg(super::repo().join("tests/receivers/schema_receiver.py"))
            .arg("serve")
            .arg(&record)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the schema receiver");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(("PORT", rest)) = line.trim().split_once(' ') else {
            let _ = child.kill();
            panic!("the schema receiver did not start: {line:?}");
        };
        let (port, validator) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(Self {
            base_url: format!("http://127.0.0.1:{port}"),
            validator: validator.to_string(),
            record,
            child,
        })
    }

    pub fn url(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.base_url)
    }

    /// Every POST so far, in arrival order (each recorded before it was answered).
    pub fn received(&self) -> Vec<Checked> {
        use base64::Engine;
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        text.lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                Checked {
                    path: v["path"].as_str().unwrap().to_string(),
                    body: base64::engine::general_purpose::STANDARD
                        .decode(v["body"].as_str().unwrap())
                        .unwrap(),
                    verdict: v["verdict"].as_str().unwrap().to_string(),
                    answered: v["answered"].as_u64().unwrap() as u16,
                }
            })
            .collect()
    }

    /// The POSTs to one endpoint.
    pub fn at(&self, endpoint: &str) -> Vec<Checked> {
        let path = format!("/{endpoint}");
        self.received()
            .into_iter()
            .filter(|c| c.path == path)
            .collect()
    }
}

impl Drop for SchemaReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
