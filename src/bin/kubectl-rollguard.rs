//! `kubectl rollguard`: the kubectl plugin for people in an incident.

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use rollguard::api::request::{RequestAction, RequestMode, RequestPhase, RollbackRequestSpec};
use rollguard::api::{GUARD_LABEL, LocalObjectReference, RollbackRequest, RolloutGuard};
use rollguard::report::{self, Colour, StatusFormat, StatusOptions};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kubectl-rollguard",
    version,
    about = "Roll back, restore and inspect rollguard-guarded rollouts"
)]
struct Cli {
    /// Kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dashboard of guards: phase, health, triggers breaching, rollbacks in flight, last
    /// rollback. Coloured on a terminal (unless NO_COLOR is set), plain when piped.
    Status {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// wide: also each trigger's value against its threshold, breach start and last
        /// error, Prometheus reachability and problems; json: a JSON array.
        #[arg(short, long, value_enum)]
        output: Option<StatusOutput>,
    },
    /// Roll a guard's flags back now.
    Rollback {
        guard: String,
        /// Why (recorded in the request, notifications and the report).
        #[arg(long)]
        reason: String,
        /// Emergency: no drain hooks, no waiting (may need the `emergency` RBAC verb).
        #[arg(long)]
        immediate: bool,
        /// Only these guarded flags (comma-separated); default: all.
        #[arg(long, value_delimiter = ',')]
        flags: Vec<String>,
        /// Also turn off every other boolean flag in the ConfigMap.
        #[arg(long)]
        force_disable_all: bool,
        /// Record what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Follow the request to its end; exit non-zero if it fails.
        #[arg(long)]
        watch: bool,
    },
    /// Put back what the guard's last rollback (or --snapshot) changed.
    Restore {
        guard: String,
        #[arg(long)]
        snapshot: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        watch: bool,
    },
    /// The incident report (post-mortem) of a RollbackRequest: who and why, trigger values,
    /// flags changed, durations against the SLOs, notifications, timeline, snapshot.
    Report {
        request: String,
        #[arg(short, long, value_enum, default_value_t = ReportFormat::Markdown)]
        output: ReportFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StatusOutput {
    Wide,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Markdown,
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// One line naming what is missing or forbidden, instead of a stack of causes.
fn explain(e: kube::Error, what: &str) -> anyhow::Error {
    match e {
        kube::Error::Api(s) if s.code == 404 => anyhow::anyhow!("{what} not found"),
        kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!("forbidden: {}", s.message),
        kube::Error::Api(s) => anyhow::anyhow!("{what}: {}", s.message),
        other => anyhow::anyhow!("{what}: {other}"),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = rollguard::controller::client(cli.kubeconfig.as_ref()).await?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    match cli.command {
        Command::Status {
            all_namespaces,
            output,
        } => status(&client, &namespace, all_namespaces, output).await,
        Command::Rollback {
            guard,
            reason,
            immediate,
            flags,
            force_disable_all,
            dry_run,
            watch,
        } => {
            let spec = |requested_by| RollbackRequestSpec {
                guard_ref: LocalObjectReference {
                    name: guard.clone(),
                },
                action: RequestAction::Rollback,
                requested_by,
                reason: reason.clone(),
                mode: if immediate {
                    RequestMode::Immediate
                } else {
                    RequestMode::Graceful
                },
                flags: flags.clone(),
                force_disable_all,
                snapshot_name: String::new(),
                dry_run,
            };
            submit(&client, &namespace, &guard, "manual", spec, watch).await
        }
        Command::Restore {
            guard,
            snapshot,
            reason,
            watch,
        } => {
            let spec = |requested_by| RollbackRequestSpec {
                guard_ref: LocalObjectReference {
                    name: guard.clone(),
                },
                action: RequestAction::Restore,
                requested_by,
                reason: reason.clone(),
                mode: RequestMode::Graceful,
                flags: Vec::new(),
                force_disable_all: false,
                snapshot_name: snapshot.clone().unwrap_or_default(),
                dry_run: false,
            };
            submit(&client, &namespace, &guard, "restore", spec, watch).await
        }
        Command::Report { request, output } => {
            let requests: Api<RollbackRequest> = Api::namespaced(client.clone(), &namespace);
            let r = requests.get(&request).await.map_err(|e| {
                explain(
                    e,
                    &format!("RollbackRequest {request:?} in namespace {namespace:?}"),
                )
            })?;
            // The report stands without its guard (deleted, or not readable by this user):
            // it says so, and judges against the default SLO targets.
            let guards: Api<RolloutGuard> = Api::namespaced(client.clone(), &namespace);
            let guard_name = &r.spec.guard_ref.name;
            let guard = match guards.get_opt(guard_name).await {
                Ok(guard) => guard,
                Err(e) => {
                    let e = explain(e, &format!("RolloutGuard {guard_name:?}"));
                    eprintln!("warning: {e:#}; reporting without it");
                    None
                }
            };
            match output {
                ReportFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report::incident_record(&r, guard.as_ref()))?
                ),
                ReportFormat::Markdown => {
                    print!("{}", report::incident_report(&r, guard.as_ref()));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn status(
    client: &Client,
    namespace: &str,
    all: bool,
    output: Option<StatusOutput>,
) -> anyhow::Result<ExitCode> {
    let (guards, requests): (Api<RolloutGuard>, Api<RollbackRequest>) = if all {
        (Api::all(client.clone()), Api::all(client.clone()))
    } else {
        (
            Api::namespaced(client.clone(), namespace),
            Api::namespaced(client.clone(), namespace),
        )
    };
    let guards = guards
        .list(&ListParams::default())
        .await
        .map_err(|e| explain(e, "RolloutGuards"))?
        .items;
    let requests = requests
        .list(&ListParams::default())
        .await
        .map_err(|e| explain(e, "RollbackRequests"))?
        .items;
    let no_color = std::env::var("NO_COLOR").ok();
    let opts = StatusOptions {
        format: match output {
            None => StatusFormat::Default,
            Some(StatusOutput::Wide) => StatusFormat::Wide,
            Some(StatusOutput::Json) => StatusFormat::Json,
        },
        colour: Colour::detect(std::io::stdout().is_terminal(), no_color.as_deref()),
        namespace: (!all).then(|| namespace.to_string()),
        now: jiff::Timestamp::now(),
    };
    print!("{}", report::render_status(&guards, &requests, &opts));
    Ok(ExitCode::SUCCESS)
}

/// The user the API server sees, as `requestedBy` (the admission policy checks it).
async fn whoami(client: &Client) -> anyhow::Result<String> {
    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"
    }))?;
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| explain(e, "SelfSubjectReview"))?;
    answer
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the API server did not say who you are (SelfSubjectReview has no username)"
            )
        })
}

async fn submit(
    client: &Client,
    namespace: &str,
    guard: &str,
    kind: &str,
    spec: impl Fn(String) -> RollbackRequestSpec,
    watch: bool,
) -> anyhow::Result<ExitCode> {
    let guards: Api<RolloutGuard> = Api::namespaced(client.clone(), namespace);
    guards.get(guard).await.map_err(|e| {
        explain(
            e,
            &format!("RolloutGuard {guard:?} in namespace {namespace:?}"),
        )
    })?;
    let user = whoami(client).await?;
    let name = format!(
        "{guard}-{kind}-{}",
        jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S")
    );
    let mut request = RollbackRequest::new(&name, spec(user.clone()));
    request.metadata.namespace = Some(namespace.to_string());
    request.metadata.labels = Some(
        [(
            GUARD_LABEL.to_string(),
            rollguard::rollback::snapshot::label_value(guard),
        )]
        .into(),
    );
    let requests: Api<RollbackRequest> = Api::namespaced(client.clone(), namespace);
    requests
        .create(&PostParams::default(), &request)
        .await
        .map_err(|e| explain(e, &format!("creating RollbackRequest {name:?}")))?;
    println!("rollbackrequest.rollguard.dev/{name} created (requestedBy: {user})");
    if !watch {
        return Ok(ExitCode::SUCCESS);
    }
    follow(&requests, &name).await
}

/// Prints each timeline step as it is recorded; the exit code says how the request ended.
async fn follow(requests: &Api<RollbackRequest>, name: &str) -> anyhow::Result<ExitCode> {
    let mut shown = 0;
    let mut print_new = |r: &RollbackRequest| -> Option<ExitCode> {
        let status = r.status.as_ref()?;
        for entry in status.timeline.iter().skip(shown) {
            println!(
                "{}  {:<16} {}",
                entry.time.0.strftime("%H:%M:%S%.3f"),
                entry.step,
                entry.message
            );
        }
        shown = status.timeline.len();
        match status.phase {
            Some(RequestPhase::Succeeded) => Some(ExitCode::SUCCESS),
            Some(RequestPhase::Failed | RequestPhase::Superseded) => {
                eprintln!("{name}: {}", status.message.as_deref().unwrap_or("failed"));
                Some(ExitCode::FAILURE)
            }
            _ => None,
        }
    };
    loop {
        let current = requests.get(name).await.map_err(|e| explain(e, name))?;
        if let Some(code) = print_new(&current) {
            return Ok(code);
        }
        let version = current.resource_version().unwrap_or_default();
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(60);
        let mut stream = requests
            .watch(&params, &version)
            .await
            .map_err(|e| explain(e, name))?
            .boxed();
        while let Some(event) = stream.next().await {
            if let Ok(WatchEvent::Modified(r)) = event
                && let Some(code) = print_new(&r)
            {
                return Ok(code);
            }
        }
    }
}
