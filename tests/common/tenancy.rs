//! A namespace run as a multi-tenant cluster would run it: the chart installed (namespaced
//! to it, its admission policies bound to it alone, so other tests sharing this API server
//! are not held to them), the operator running with the chart's ServiceAccount token, and
//! alice holding exactly the chart's `-author` and `-requester` roles there. Plus a loopback
//! "attacker" that records everything that reaches it.

use super::{Cluster, Operator, unique_suffix};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `helm template` of charts/rollguard with `--set` values.
pub fn helm_template(helm: &Path, release: &str, namespace: &str, sets: &[&str]) -> String {
    let mut args = vec![
        "template",
        release,
        "charts/rollguard",
        "--namespace",
        namespace,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = Command::new(helm)
        .args(&args)
        .current_dir(super::repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template {sets:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl apply --server-side` of a manifest as the admin; returns (success, stdout, stderr).
pub fn apply_server_side(cluster: &Cluster, yaml: &str, extra: &[&str]) -> (bool, String, String) {
    let file = std::env::temp_dir().join(format!("rollguard-chart-{}.yaml", unique_suffix()));
    std::fs::write(&file, yaml).unwrap();
    let mut args = vec![
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        file.to_str().unwrap(),
    ];
    args.extend(extra);
    let result = cluster.kubectl(&args);
    let _ = std::fs::remove_file(file);
    result
}

/// A kubeconfig that authenticates with a bearer token against the local API server.
pub fn token_kubeconfig(cluster: &Cluster, token: &str) -> PathBuf {
    let admin = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let field = |key: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap()
            .trim()
            .to_string()
    };
    let (server, ca) = (field("server:"), field("certificate-authority:"));
    let path = std::env::temp_dir().join(format!("rollguard-sa-{}.kubeconfig", unique_suffix()));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}\nusers:\n- name: sa\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: sa\n  context: {{cluster: c, user: sa}}\ncurrent-context: sa\n"
        ),
    )
    .unwrap();
    path
}

/// A release of the chart installed by [`install_chart`].
pub struct Chart {
    /// The release namespace (the operator's ServiceAccount and Lease).
    pub system: String,
    /// The release's full name: its ServiceAccount, roles and policies.
    pub fullname: String,
    /// The chart as rendered.
    pub manifests: String,
    /// What `apply --server-side` printed on stderr (warnings).
    pub warnings: String,
}

/// Installs the chart as release `t<unique>` in `system` with `sets`, its people-facing
/// admission policies bound to the namespaces in `bound` only (labelled for it here):
/// never cluster-wide, since other tests on this API server create guards and requests as
/// the admin on behalf of others.
pub fn install_chart(
    cluster: &Cluster,
    helm: &Path,
    system: &str,
    bound: &[&str],
    sets: &[&str],
) -> Chart {
    // Not all digits: helm's --set would read such a label value as a number.
    let tag = format!("p{}", unique_suffix());
    for ns in bound {
        let (ok, _, err) = cluster.kubectl(&[
            "label",
            "namespace",
            ns,
            &format!("rollguard.dev/test-policy={tag}"),
        ]);
        assert!(ok, "{err}");
    }
    let release = format!("t{}", &tag[1..]);
    let selector =
        format!("admissionPolicy.namespaceSelector.matchLabels.rollguard\\.dev/test-policy={tag}");
    let mut all = vec![selector.as_str()];
    all.extend_from_slice(sets);
    let manifests = helm_template(helm, &release, system, &all);
    // An object just created (a new namespace, a policy) can take a moment to be
    // usable by the next one: a failed apply is tried again, twice, before it counts.
    let mut tries = 0;
    let (out, err) = loop {
        let (ok, out, err) = apply_server_side(cluster, &manifests, &[]);
        tries += 1;
        if ok {
            break (out, err);
        }
        assert!(tries < 3, "apply the chart ({tries} tries):\n{out}\n{err}");
        eprintln!("apply the chart failed, trying again:\n{err}");
        std::thread::sleep(Duration::from_secs(1));
    };
    let _ = out;
    Chart {
        system: system.to_string(),
        fullname: format!("{release}-rollguard"),
        manifests,
        warnings: err,
    }
}

/// A Role `name` in `namespace` with the one `rule` (flow-style YAML), bound to `user`.
pub fn grant(cluster: &Cluster, namespace: &str, user: &str, name: &str, rule: &str) {
    cluster.apply(&format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {name}, namespace: {namespace}}}
rules: [{rule}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {user}-{name}, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}
subjects: [{{kind: User, name: {user}, apiGroup: rbac.authorization.k8s.io}}]
"#
    ));
}

/// A kubeconfig with a TokenRequest token (1 h) of ServiceAccount `namespace/name`.
pub fn service_account_kubeconfig(cluster: &Cluster, namespace: &str, name: &str) -> PathBuf {
    let (ok, token, err) =
        cluster.kubectl(&["create", "token", name, "-n", namespace, "--duration", "1h"]);
    assert!(ok, "kubectl create token: {err}");
    token_kubeconfig(cluster, token.trim())
}

/// The API server's message of a 403, if `e` is one.
pub fn forbidden(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) if s.code == 403 => Some(s.message.clone()),
        _ => None,
    }
}

pub struct Tenancy {
    /// The tenant namespace: alice's, watched by the operator.
    pub ns: String,
    /// Where the chart's ServiceAccount lives.
    pub system: String,
    /// The chart release's full name (prefix of its roles and policies).
    pub fullname: String,
    /// The operator authenticated as the chart's ServiceAccount.
    pub operator: Operator,
    /// A client authenticated as that ServiceAccount.
    pub operator_client: kube::Client,
    pub alice: kube::Client,
    sa_kubeconfig: PathBuf,
}

impl Drop for Tenancy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sa_kubeconfig);
    }
}

impl Tenancy {
    /// Installs the chart for a fresh tenant namespace and starts the operator with its
    /// ServiceAccount token and `operator_args` (e.g. egress flags).
    pub async fn start(cluster: &Cluster, helm: &Path, operator_args: &[&str]) -> Tenancy {
        cluster.install_crds().await;
        let system = cluster.namespace("rg-sys").await;
        let ns = cluster.namespace("tenant").await;
        let watch = format!("scope.watchNamespace={ns}");
        let chart = install_chart(
            cluster,
            helm,
            &system,
            &[&ns],
            &["scope.mode=namespaced", &watch, "rbac.userRoles=true"],
        );
        let fullname = chart.fullname;
        for role in ["author", "requester"] {
            let (ok, _, err) = cluster.kubectl(&[
                "create",
                "rolebinding",
                &format!("alice-{role}"),
                "-n",
                &ns,
                &format!("--clusterrole={fullname}-{role}"),
                "--user=alice",
            ]);
            assert!(ok, "{err}");
        }
        let sa_kubeconfig = service_account_kubeconfig(cluster, &system, &fullname);
        let operator_client = super::client_for(&sa_kubeconfig).await;
        let kubeconfig = sa_kubeconfig.to_str().unwrap().to_string();
        let mut args = vec![
            "--kubeconfig",
            kubeconfig.as_str(),
            "--lease-name",
            fullname.as_str(),
            "--lease-duration",
            "5s",
        ];
        args.extend_from_slice(operator_args);
        let operator = cluster.start_operator_with(
            &ns,
            &[
                ("POD_NAMESPACE", system.as_str()),
                ("POD_NAME", "tenant-operator"),
            ],
            &args,
        );
        operator.wait_ready().await;
        let alice = cluster.user_client("alice").await;
        Tenancy {
            ns,
            system,
            fullname,
            operator,
            operator_client,
            alice,
            sa_kubeconfig,
        }
    }
}

/// One request that reached the attacker.
#[derive(Clone, Debug)]
pub struct Visit {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Visit {
    /// Everything the attacker learnt from this request, as text.
    pub fn text(&self) -> String {
        format!(
            "{} {} {:?} {}",
            self.method,
            self.uri,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// A loopback server that answers every request (`status`, an empty Prometheus vector for
/// queries) and records it.
#[derive(Clone)]
pub struct Attacker {
    pub url: String,
    visits: Arc<Mutex<Vec<Visit>>>,
}

/// How an attacker answers.
#[derive(Clone, Debug)]
pub enum Tactic {
    /// 200: an empty Prometheus vector for queries, "ok" otherwise.
    Answer,
    /// 307 to this URL, for every request.
    Redirect(String),
    /// A Prometheus answer of this many bytes (a valid vector padded with spaces).
    Huge(usize),
}

impl Attacker {
    /// Listening on `ip` (any loopback address), answering plainly.
    pub async fn start_on(ip: &str) -> Attacker {
        Self::start_with(ip, Tactic::Answer).await
    }

    /// Listening on `ip`, answering by `tactic`.
    pub async fn start_with(ip: &str, tactic: Tactic) -> Attacker {
        use axum::response::IntoResponse;
        let visits: Arc<Mutex<Vec<Visit>>> = Arc::default();
        let seen = visits.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (seen, tactic) = (seen.clone(), tactic.clone());
                async move {
                    let query = uri.path().ends_with("/api/v1/query");
                    seen.lock().unwrap().push(Visit {
                        method,
                        uri,
                        headers,
                        body,
                    });
                    const EMPTY: &str =
                        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
                    match tactic {
                        Tactic::Redirect(to) => (
                            axum::http::StatusCode::TEMPORARY_REDIRECT,
                            [(axum::http::header::LOCATION, to)],
                        )
                            .into_response(),
                        Tactic::Huge(size) => {
                            format!("{EMPTY}{}", " ".repeat(size.saturating_sub(EMPTY.len())))
                                .into_response()
                        }
                        Tactic::Answer if query => EMPTY.into_response(),
                        Tactic::Answer => "ok".into_response(),
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Attacker {
            url: format!("http://{addr}"),
            visits,
        }
    }

    pub fn visits(&self) -> Vec<Visit> {
        self.visits.lock().unwrap().clone()
    }

    /// Whether any request that reached the attacker carried `secret` anywhere (path,
    /// headers — base64 in a Basic header too — or body).
    pub fn learnt(&self, secret: &str) -> bool {
        use base64::Engine as _;
        self.visits().iter().any(|v| {
            let text = v.text();
            text.contains(secret)
                || v.headers.values().any(|h| {
                    h.to_str()
                        .ok()
                        .and_then(|h| h.strip_prefix("Basic "))
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .is_some_and(|d| String::from_utf8_lossy(&d).contains(secret))
                })
        })
    }
}
