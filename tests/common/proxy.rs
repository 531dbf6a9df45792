//! A loopback proxy between the operator and kube-apiserver, for the stale-state faults of
//! Sieve (OSDI'22): every call goes through at once, but watch streams can be held back
//! frame by frame (each stream with its own delay, so events of one kind overtake those of
//! another: reordering across watches, never within one, as a real lagging cache would),
//! and every open watch can be cut at once (the operator then watches again from the
//! resourceVersion it last saw: after an etcd compaction, that gets `410 Gone`).
//!
//! The proxy adds the upstream client's credentials; the operator gets a kubeconfig with
//! a plain `http://127.0.0.1:<port>` server.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures::StreamExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How watch frames are held back: `late_percent` of the watch streams (drawn from the
/// seed; only those whose path ends with `only`, when set) lag, each frame `min..=max` late
/// and never overtaking the one before it; the others are prompt.
#[derive(Clone, Debug)]
pub struct Lag {
    pub seed: u64,
    pub min: Duration,
    pub max: Duration,
    pub late_percent: u64,
    pub only: Option<&'static str>,
}

/// What the proxy saw and did.
#[derive(Default, Debug)]
pub struct Stats {
    /// Watch streams opened through the proxy.
    pub watches: AtomicUsize,
    /// Frames held back and not yet passed on.
    pub held: AtomicUsize,
    /// Frames passed on late.
    pub delayed: AtomicUsize,
    /// Watch answers or frames carrying a 410 (Expired / Gone) to the operator.
    pub gone: AtomicUsize,
    /// Watch streams ended by [`Proxy::cut_watches`].
    pub cut: AtomicUsize,
}

struct Shared {
    upstream: kube::Client,
    lag: Mutex<Option<Lag>>,
    stats: Arc<Stats>,
    streams: AtomicU64,
    cut: tokio::sync::watch::Sender<u64>,
}

pub struct Proxy {
    pub kubeconfig: PathBuf,
    pub stats: Arc<Stats>,
    shared: Arc<Shared>,
}

/// splitmix64: the proxy's own small deterministic generator.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Proxy {
    /// Starts the proxy in front of `upstream` (whose credentials it uses).
    pub async fn start(upstream: kube::Client, lag: Option<Lag>) -> Proxy {
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            upstream,
            lag: Mutex::new(lag),
            stats: stats.clone(),
            streams: AtomicU64::new(0),
            cut: tokio::sync::watch::channel(0).0,
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let addr = super::serve(app).await;
        let kubeconfig = std::env::temp_dir().join(format!(
            "rollguard-proxy-{}.kubeconfig",
            super::unique_suffix()
        ));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: proxied, cluster: {{server: \"http://{addr}\"}}}}]\nusers: [{{name: proxied, user: {{}}}}]\ncontexts: [{{name: proxied, context: {{cluster: proxied, user: proxied}}}}]\ncurrent-context: proxied\n"
            ),
        )
        .unwrap();
        Proxy {
            kubeconfig,
            stats,
            shared,
        }
    }

    /// Ends every watch stream open now (frames still held are dropped with it).
    pub fn cut_watches(&self) {
        self.shared.cut.send_modify(|g| *g += 1);
    }

    /// Stops delaying new frames (those held are still passed on when due).
    pub fn stop_lagging(&self) {
        *self.shared.lag.lock().unwrap() = None;
    }

    /// Waits until no frame is held back (at most `timeout`).
    pub async fn drained(&self, timeout: Duration) {
        let stats = self.stats.clone();
        super::wait_until(timeout, "the proxy to pass on every frame it held", || {
            let stats = stats.clone();
            async move { (stats.held.load(Ordering::SeqCst) == 0).then_some(()) }
        })
        .await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

async fn forward(State(proxy): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let parts_path = parts.uri.path().to_string();
    let watch = parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let mut upstream = axum::http::Request::builder()
        .method(parts.method)
        .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    for (name, value) in &parts.headers {
        if name != "host" && name != "authorization" {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .body(kube::client::Body::from(body.to_vec()))
        .unwrap();
    let response = match proxy.upstream.send(upstream).await {
        Ok(response) => response,
        Err(e) => {
            return Response::builder()
                .status(502)
                .body(Body::from(e.to_string()))
                .unwrap();
        }
    };
    let (parts, body) = response.into_parts();
    let body = Body::new(body);
    if !watch {
        return Response::from_parts(parts, body);
    }
    let stats = proxy.stats.clone();
    stats.watches.fetch_add(1, Ordering::SeqCst);
    if parts.status.as_u16() == 410 {
        stats.gone.fetch_add(1, Ordering::SeqCst);
    }
    // This stream's lag: prompt, or each frame up to `max` late (in order).
    let stream_no = proxy.streams.fetch_add(1, Ordering::SeqCst);
    let lag = proxy.lag.lock().unwrap().clone();
    let path = parts_path.clone();
    let (min_ms, max_ms) = lag.as_ref().map_or((0, 0), |lag| {
        let r = mix(lag.seed ^ mix(stream_no));
        let chosen = lag.only.is_none_or(|only| path.ends_with(only));
        if chosen && r % 100 < lag.late_percent {
            (lag.min.as_millis() as u64, lag.max.as_millis() as u64)
        } else {
            (0, 0)
        }
    });
    let seed = lag.as_ref().map_or(0, |l| l.seed) ^ mix(stream_no.wrapping_add(7));
    let (send, receive) =
        tokio::sync::mpsc::unbounded_channel::<(Instant, axum::body::Bytes, bool)>();
    let mine = Arc::new(AtomicUsize::new(0));
    let (counting, held_here) = (stats.clone(), mine.clone());
    tokio::spawn(async move {
        let mut frames = body.into_data_stream();
        let mut due = Instant::now();
        let mut n = 0u64;
        while let Some(Ok(frame)) = frames.next().await {
            n += 1;
            let late = if max_ms == 0 {
                0
            } else {
                min_ms + mix(seed ^ n) % (max_ms - min_ms + 1)
            };
            due = due.max(Instant::now() + Duration::from_millis(late));
            let held = due > Instant::now();
            if held {
                counting.held.fetch_add(1, Ordering::SeqCst);
                held_here.fetch_add(1, Ordering::SeqCst);
            }
            if send.send((due, frame, held)).is_err() {
                // The operator hung up: nothing this stream held counts any more.
                let left = held_here.swap(0, Ordering::SeqCst);
                counting.held.fetch_sub(left, Ordering::SeqCst);
                break;
            }
        }
    });
    let state = Passing {
        receive,
        stats,
        mine,
        cut: proxy.cut.subscribe(),
    };
    let passed = futures::stream::unfold(state, |mut s| async move {
        let (due, frame, held) = tokio::select! {
            next = s.receive.recv() => next?,
            _ = s.cut.changed() => {
                s.stats.cut.fetch_add(1, Ordering::SeqCst);
                return None; // what it held is dropped with it (Passing::drop)
            }
        };
        if held {
            tokio::time::sleep_until(due.into()).await;
            s.stats.held.fetch_sub(1, Ordering::SeqCst);
            s.mine.fetch_sub(1, Ordering::SeqCst);
            s.stats.delayed.fetch_add(1, Ordering::SeqCst);
        }
        if frame.windows(10).any(|w| w == b"\"code\":410") {
            s.stats.gone.fetch_add(1, Ordering::SeqCst);
        }
        Some((Ok::<_, std::io::Error>(frame), s))
    });
    Response::from_parts(parts, Body::from_stream(passed))
}

/// One watch stream's passing side; when it ends (cut, or the operator hung up), the frames
/// it still held no longer count as held.
struct Passing {
    receive: tokio::sync::mpsc::UnboundedReceiver<(Instant, axum::body::Bytes, bool)>,
    stats: Arc<Stats>,
    mine: Arc<AtomicUsize>,
    cut: tokio::sync::watch::Receiver<u64>,
}

impl Drop for Passing {
    fn drop(&mut self) {
        self.receive.close();
        let left = self.mine.swap(0, Ordering::SeqCst);
        self.stats.held.fetch_sub(left, Ordering::SeqCst);
    }
}
