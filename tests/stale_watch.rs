//! Stale watches: the operator talks to the real kube-apiserver through a loopback proxy
//! that delivers the RollbackRequest watch 0.5–3 s late and everything else at once — a
//! watch half a second behind is ordinary on a loaded API server. Graceful rollbacks with
//! drain and resume hooks must end Succeeded and stay so, call each hook once, and record
//! the flags they changed.

mod common;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures::StreamExt;
use rollguard::api::RollbackRequest;
use rollguard::api::request::RequestPhase;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The proxy's view of the watch it holds back.
#[derive(Default)]
struct Lag {
    /// Watch frames received from the API server and not yet passed on.
    held: AtomicUsize,
    /// Watch frames passed on late.
    delayed: AtomicUsize,
}

struct Proxy {
    client: kube::Client,
    lag: Arc<Lag>,
}

/// 0.5–3 s, varying from frame to frame (a fixed sequence: the test is repeatable).
fn delay(frame: usize) -> Duration {
    Duration::from_millis(500 + (frame as u64 * 7919) % 2500)
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let watch_of_requests = parts.uri.path().ends_with("/rollbackrequests")
        && parts.uri.query().is_some_and(|q| q.contains("watch=true"));
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
    let response = match proxy.client.send(upstream).await {
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
    if !watch_of_requests {
        return Response::from_parts(parts, body);
    }
    // Each frame goes on at its arrival plus a delay, in order.
    let (send, receive) = tokio::sync::mpsc::unbounded_channel::<(Instant, axum::body::Bytes)>();
    let lag = proxy.lag.clone();
    tokio::spawn(async move {
        let mut frames = body.into_data_stream();
        let mut due = Instant::now();
        let mut n = 0;
        while let Some(Ok(frame)) = frames.next().await {
            n += 1;
            due = due.max(Instant::now() + delay(n));
            lag.held.fetch_add(1, Ordering::SeqCst);
            if send.send((due, frame)).is_err() {
                break;
            }
        }
    });
    let lag = proxy.lag.clone();
    let late = futures::stream::unfold((receive, lag), |(mut receive, lag)| async move {
        let (due, frame) = receive.recv().await?;
        tokio::time::sleep_until(due.into()).await;
        lag.held.fetch_sub(1, Ordering::SeqCst);
        lag.delayed.fetch_add(1, Ordering::SeqCst);
        Some((Ok::<_, std::io::Error>(frame), (receive, lag)))
    });
    Response::from_parts(parts, Body::from_stream(late))
}

/// Starts the proxy; returns a kubeconfig that reaches the API server through it (the
/// proxy adds the admin's credentials).
async fn lagging_api_server(cluster: &common::Cluster, lag: Arc<Lag>) -> std::path::PathBuf {
    let proxy = Arc::new(Proxy {
        client: cluster.client.clone(),
        lag,
    });
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let addr = common::serve(app).await;
    let path = std::env::temp_dir().join(format!(
        "rollguard-lagging-{}.kubeconfig",
        common::unique_suffix()
    ));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: lagging, cluster: {{server: \"http://{addr}\"}}}}]\nusers: [{{name: proxied, user: {{}}}}]\ncontexts: [{{name: lagging, context: {{cluster: lagging, user: proxied}}}}]\ncurrent-context: lagging\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn graceful_rollbacks_seen_through_a_late_watch_succeed_once_and_stay_succeeded() {
    let Some(cluster) = common::cluster("stale_watch").await else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace("stale-watch").await;
    let hooks = common::receivers::HttpReceiver::start(common::receivers::Behaviour::Accept).await;
    const GUARDS: usize = 6;
    for i in 0..GUARDS {
        cluster.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ff-{i}, namespace: {ns}, labels: {{rollguard.dev/flags: \"true\"}}}}\ndata: {{checkout: \"true\", search: \"true\"}}\n---\napiVersion: rollguard.dev/v1alpha1\nkind: RolloutGuard\nmetadata: {{name: g-{i}, namespace: {ns}}}\nspec:\n  flags: {{configMapRef: {{name: ff-{i}}}, guarded: [checkout, search]}}\n  rollback: {{hooks: {{preRollback: [{{url: \"{url}\"}}], postRollback: [{{url: \"{url}\"}}]}}}}\n",
            url = hooks.url
        ));
    }
    let lag = Arc::new(Lag::default());
    let kubeconfig = lagging_api_server(&cluster, lag.clone()).await;
    let operator = cluster.start_operator_with(
        &ns,
        &[],
        &[
            "--leader-elect=false",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    let requests: kube::Api<RollbackRequest> = kube::Api::namespaced(cluster.client.clone(), &ns);
    for i in 0..GUARDS {
        cluster.apply(&format!(
            "apiVersion: rollguard.dev/v1alpha1\nkind: RollbackRequest\nmetadata: {{name: rb-{i}, namespace: {ns}}}\nspec: {{guardRef: {{name: g-{i}}}, mode: graceful, requestedBy: alice, reason: checkout errors}}\n"
        ));
    }
    let succeeded = |r: &RollbackRequest| {
        r.status.as_ref().and_then(|s| s.phase) == Some(RequestPhase::Succeeded)
    };
    common::wait_until(Duration::from_secs(90), "every rollback Succeeded", || {
        let requests = requests.clone();
        async move {
            let all = requests.list(&Default::default()).await.ok()?.items;
            (all.len() == GUARDS && all.iter().all(succeeded)).then_some(())
        }
    })
    .await;
    // The late watch had its chance: every frame held back when the last request succeeded
    // has been passed on, and the operator reconciled what it saw (a few seconds more).
    common::wait_until(
        Duration::from_secs(30),
        "the proxy to pass on every watch frame it held",
        || {
            let lag = lag.clone();
            async move { (lag.held.load(Ordering::SeqCst) == 0).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        lag.delayed.load(Ordering::SeqCst) > 0,
        "the watch of RollbackRequests went through the lagging proxy"
    );

    let calls = hooks.received();
    for i in 0..GUARDS {
        let name = format!("rb-{i}");
        let r = requests.get(&name).await.unwrap();
        let status = r.status.clone().unwrap();
        assert_eq!(
            status.phase,
            Some(RequestPhase::Succeeded),
            "{name} after the late watch caught up: {:?}\n{:#?}",
            status.message,
            status.timeline
        );
        assert!(
            status.timeline.iter().all(|t| t.step != "Superseded"),
            "{name}: {:#?}",
            status.timeline
        );
        let complete = rollguard::conditions::get(&status.conditions, "Complete").unwrap();
        assert_eq!(complete.status, "True", "{complete:?}");
        let mut changed: Vec<_> = status
            .flags_changed
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect();
        changed.sort();
        assert_eq!(changed, ["checkout", "search"], "{name}: flagsChanged");
        for stage in ["preRollback", "postRollback"] {
            let n = calls
                .iter()
                .filter(|c| {
                    let body = c.json();
                    body["request"] == name.as_str() && body["stage"] == stage
                })
                .count();
            assert_eq!(n, 1, "{name}: {stage} hook calls");
        }
    }
    let _ = std::fs::remove_file(&kubeconfig);
    drop(operator);
}
