//! The demo's stand-in for the kubelet's ConfigMap volumes: the demo's control plane has no
//! nodes, so nothing projects ConfigMap `feature-flags` into a file for the shop. This does,
//! the way a kubelet does it for pod `SHOP_POD` (default `shop-0`, an object the demo creates
//! that mounts the ConfigMap): one file per key in `SHOP_VOLUME_DIR`, updated late — a real
//! kubelet takes its sync period plus its cache TTL, up to about two minutes; this one
//! `SHOP_KUBELET_DELAY` seconds (default 20) after the ConfigMap changed, so the demo shows
//! the same delay every time — and at once when the pod changes, which is what rollguard's
//! `refreshPods` annotation makes happen.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the stand-in kubelet knows: the ConfigMap as the API has it, since when, and
/// whether the pod asked for a refresh.
#[derive(Default)]
struct Seen {
    data: Option<BTreeMap<String, String>>,
    changed: Option<Instant>,
    refresh: bool,
}

pub async fn run(client: kube::Client, namespace: String, config_map: String, dir: PathBuf) {
    let pod = std::env::var("SHOP_POD").unwrap_or_else(|_| "shop-0".into());
    let delay = Duration::from_secs(
        std::env::var("SHOP_KUBELET_DELAY")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(20),
    );
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    tokio::spawn(follow_config_map(
        config_maps.clone(),
        config_map.clone(),
        seen.clone(),
    ));
    tokio::spawn(follow_pod(
        Api::namespaced(client, &namespace),
        pod.clone(),
        seen.clone(),
    ));
    let mut written: Option<BTreeMap<String, String>> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (refresh, synced) = {
            let mut s = seen.lock().unwrap();
            let synced = s.changed.is_some_and(|at| at.elapsed() >= delay) && s.data != written;
            (std::mem::take(&mut s.refresh), synced)
        };
        if !refresh && !synced {
            continue;
        }
        // As the kubelet does on a pod update: the ConfigMap as the API has it now.
        let Ok(cm) = config_maps.get(&config_map).await else {
            seen.lock().unwrap().refresh |= refresh;
            continue;
        };
        if cm.data == written {
            continue;
        }
        let why = if refresh {
            format!("pod {pod} changed")
        } else {
            format!("sync, {}s after the ConfigMap changed", delay.as_secs())
        };
        super::say(&format!("[kubelet] volume of pod {pod} updated ({why})"));
        let _ = std::fs::create_dir_all(&dir);
        for (key, value) in cm.data.iter().flatten() {
            let _ = std::fs::write(dir.join(key), value);
        }
        written = cm.data;
    }
}

async fn follow_config_map(api: Api<ConfigMap>, name: String, seen: Arc<Mutex<Seen>>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).boxed();
    loop {
        match events.try_next().await {
            Ok(Some(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm))) => {
                let mut s = seen.lock().unwrap();
                if s.data != cm.data {
                    // The first sight (pod start) is mounted at once; changes wait.
                    let first = s.data.is_none();
                    s.data = cm.data;
                    s.changed = Some(Instant::now());
                    s.refresh |= first;
                }
            }
            Ok(None) => return,
            Ok(Some(_)) => {}
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

async fn follow_pod(api: Api<Pod>, name: String, seen: Arc<Mutex<Seen>>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).boxed();
    let mut annotations = None;
    loop {
        match events.try_next().await {
            Ok(Some(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                let now = Some(pod.metadata.annotations);
                if annotations.is_some() && annotations != now {
                    seen.lock().unwrap().refresh = true;
                }
                annotations = now;
            }
            Ok(None) => return,
            Ok(Some(_)) => {}
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}
