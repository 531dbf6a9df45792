//! A private control plane for the fault tests: its own etcd and kube-apiserver, started
//! from the same binaries and command lines as the shared one (tests/cluster/control-plane.sh)
//! on free loopback ports, with the shared plane's certificates. The fault tests kill,
//! restart, pause (SIGSTOP) and compact only these; the shared kube-apiserver and etcd,
//! which other tests and engineers use, are never touched.
//!
//! kube-apiserver runs with `--watch-cache=false`, so a watch resumed from a compacted
//! resourceVersion is answered `410 Gone` by etcd itself.

use super::Cluster;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Plane {
    /// The private plane as a `Cluster` (its admin client and kubeconfig; the shared
    /// Prometheus and kubectl).
    pub cluster: Cluster,
    dir: PathBuf,
    pki: PathBuf,
    etcd: Child,
    apiserver: Option<Child>,
    etcd_port: u16,
    api_port: u16,
    paused: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn control_plane(args: &[&str], log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(super::repo().join("tests/cluster/control-plane.sh"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start tests/cluster/control-plane.sh")
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

impl Plane {
    /// Starts etcd and kube-apiserver next to `shared` (whose certificates it borrows),
    /// installs the CRDs and waits until both answer.
    pub async fn start(shared: &Cluster) -> Plane {
        let pki = shared
            .kubeconfig
            .parent()
            .expect("the shared kubeconfig's directory")
            .join("pki");
        assert!(pki.join("ca.crt").is_file(), "no {}", pki.display());
        let dir = std::env::temp_dir().join(format!("rollguard-plane-{}", super::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let logs = super::repo().join("target/test-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let etcd = control_plane(
            &[
                "etcd",
                dir.join("etcd").to_str().unwrap(),
                &etcd_port.to_string(),
                &peer_port.to_string(),
            ],
            &dir.join("etcd.log"),
        );
        // The shared admin kubeconfig, pointed at this plane's port.
        let text = std::fs::read_to_string(&shared.kubeconfig).unwrap();
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .expect("a server in the shared kubeconfig")
            .to_string();
        let kubeconfig = dir.join("admin.kubeconfig");
        std::fs::write(
            &kubeconfig,
            text.replace(&server, &format!("https://127.0.0.1:{api_port}")),
        )
        .unwrap();
        let client = super::client_for(&kubeconfig).await;
        let mut plane = Plane {
            cluster: Cluster {
                client,
                kubeconfig,
                prometheus_url: shared.prometheus_url.clone(),
                prom_sd_dir: shared.prom_sd_dir.clone(),
                user_kubeconfig_dir: shared.user_kubeconfig_dir.clone(),
                tools_path: shared.tools_path.clone(),
            },
            dir,
            pki,
            etcd,
            apiserver: None,
            etcd_port,
            api_port,
            paused: false,
        };
        plane.start_apiserver().await;
        plane.cluster.install_crds().await;
        plane
    }

    pub fn log_dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.as_ref().expect("kube-apiserver runs").id()
    }

    /// Starts kube-apiserver (again) on the same port and etcd, and waits until it serves.
    pub async fn start_apiserver(&mut self) {
        assert!(self.apiserver.is_none());
        let child = control_plane(
            &[
                "apiserver",
                &self.etcd_port.to_string(),
                &self.api_port.to_string(),
                self.dir.join("apiserver").to_str().unwrap(),
                self.pki.to_str().unwrap(),
                "--watch-cache=false",
            ],
            &self.dir.join("kube-apiserver.log"),
        );
        self.apiserver = Some(child);
        self.wait_serving(Duration::from_secs(120)).await;
    }

    /// Waits until the API server answers a list (and so its storage is ready).
    pub async fn wait_serving(&mut self, timeout: Duration) {
        use k8s_openapi::api::core::v1::Namespace;
        let api: kube::Api<Namespace> = kube::Api::all(self.cluster.client.clone());
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(child) = self.apiserver.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "the private kube-apiserver exited ({status}); see {}",
                    self.dir.join("kube-apiserver.log").display()
                );
            }
            let ready = tokio::time::timeout(
                Duration::from_secs(2),
                api.list(&kube::api::ListParams::default().limit(1)),
            )
            .await;
            if matches!(ready, Ok(Ok(_))) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the private kube-apiserver did not serve within {timeout:?}; see {}",
                self.dir.join("kube-apiserver.log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL kube-apiserver (etcd keeps the data).
    pub fn kill_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP kube-apiserver: connections stay open and nothing is answered.
    pub fn pause_apiserver(&mut self) {
        signal(self.apiserver_pid(), "-STOP");
        self.paused = true;
    }

    pub fn resume_apiserver(&mut self) {
        signal(self.apiserver_pid(), "-CONT");
        self.paused = false;
    }

    /// etcd's current revision, through its JSON gateway on loopback.
    pub async fn revision(&self) -> i64 {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/v3/kv/range", self.etcd_port))
            .json(&serde_json::json!({"key": "Lw==", "count_only": true}))
            .send()
            .await
            .expect("etcd range")
            .json()
            .await
            .expect("etcd range answer");
        answer["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .or_else(|| answer["header"]["revision"].as_i64())
            .expect("a revision")
    }

    /// Compacts etcd's history up to its current revision: a watch resumed from any
    /// resourceVersion before it is answered 410 Gone. Returns the revision.
    pub async fn compact(&self) -> i64 {
        let revision = self.revision().await;
        let answer = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/v3/kv/compaction",
                self.etcd_port
            ))
            .json(&serde_json::json!({"revision": revision.to_string(), "physical": true}))
            .send()
            .await
            .expect("etcd compaction");
        assert!(
            answer.status().is_success(),
            "etcd compaction: {:?}",
            answer.text().await
        );
        revision
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if self.paused {
            self.resume_apiserver();
        }
        self.kill_apiserver();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
        if std::thread::panicking() {
            // Keep the logs for the failure; drop the data.
            let _ = std::fs::remove_dir_all(self.dir.join("etcd"));
            let _ = std::fs::remove_dir_all(self.dir.join("apiserver"));
            eprintln!("private control plane logs: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
