//! `rollguard run`: wires the controllers to the API server.

use crate::api::{RollbackRequest, RolloutGuard};
use crate::guard;
use crate::metrics::Metrics;
use crate::notify::courier::{Courier, RetryPolicy};
use crate::notify::outbox::Outbox;
use crate::prometheus::{Prometheus, SharedQueries};
use crate::rollback::reconciler::{self, Context};
use futures::{StreamExt, TryStreamExt};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};
use std::path::PathBuf;
use std::sync::Arc;

mod shards;
mod wake;

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Kubeconfig file; default: in-cluster configuration, then $KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only these namespaces (comma-separated, or the flag repeated); default: all
    /// namespaces.
    #[arg(long, env = "ROLLGUARD_NAMESPACE", value_delimiter = ',')]
    pub namespace: Vec<String>,
    /// Prometheus used by guards that set no spec.prometheus.address.
    #[arg(long, env = "ROLLGUARD_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Log format.
    #[arg(long, env = "ROLLGUARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Attempts per notification (the first included) before it counts as failed.
    #[arg(long, env = "ROLLGUARD_NOTIFY_ATTEMPTS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub notify_attempts: u32,
    /// Bound of one notification attempt (Go duration).
    #[arg(long, env = "ROLLGUARD_NOTIFY_ATTEMPT_TIMEOUT", default_value = "5s", value_parser = go_duration)]
    pub notify_attempt_timeout: std::time::Duration,
    /// Guards evaluated at once at most. Guards evaluate at each interval boundary; the bound
    /// keeps a thousand of them from all holding their answers in memory together.
    #[arg(long, env = "ROLLGUARD_GUARD_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub guard_concurrency: u16,
    /// Of those, at most this many for one source (a namespace's guards that query one
    /// Prometheus address), so a slow or hostile endpoint never holds every slot.
    #[arg(long, env = "ROLLGUARD_GUARD_CONCURRENCY_PER_SOURCE", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub guard_concurrency_per_source: u16,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "ROLLGUARD_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    #[command(flatten)]
    pub leader: crate::leader::LeaderArgs,
    #[command(flatten)]
    pub egress: crate::egress::EgressArgs,
    #[command(flatten)]
    pub webhook: crate::alerts::intake::WebhookArgs,
}

/// A Go duration flag value (`500ms`, `5s`, `1m`).
pub fn go_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::api::schema::GoDuration::new(text)
        .to_std()
        .map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    crate::install_crypto_provider();
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let client = client(args.kubeconfig.as_ref()).await?;
    let reporter = Reporter {
        controller: "rollguard".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let metrics = Arc::new(Metrics::new());
    let server = tokio::spawn(crate::metrics::serve(args.metrics_addr, metrics.clone()));
    let alerts = Arc::new(crate::alerts::store::Store::new(
        args.webhook.alert_resend_window,
    ));
    // Served before the election: a standby answers 503, so Alertmanager retries until a
    // post reaches the leader (see `alerts::intake`).
    let intake = match (&args.webhook.webhook_addr, &args.webhook.webhook_token_file) {
        (Some(addr), Some(token_file)) => {
            let intake = Arc::new(crate::alerts::intake::Intake::new(
                alerts.clone(),
                metrics.clone(),
                token_file.clone(),
                args.webhook.webhook_max_body_bytes,
            ));
            intake.token().map_err(|e| anyhow::anyhow!(e))?;
            tokio::spawn(crate::alerts::intake::serve(*addr, intake.clone()).await?);
            Some(intake)
        }
        _ => None,
    };
    let scopes = scopes(&args.namespace);
    // Only the Lease holder goes past this line; a holder that loses it exits.
    let leadership = crate::leader::lead(
        client.clone(),
        &args.leader,
        scopes.first().cloned().flatten().as_deref(),
        metrics.clone(),
    )
    .await?;
    let shared = Shared {
        client,
        reporter,
        metrics,
        // Every outbound call (queries, hooks, health checks, receivers) obeys one policy.
        egress: crate::egress::Egress::new(&args.egress),
        // One bound on evaluations across every namespace served.
        fairness: Arc::new(guard::fairness::Fairness::new(
            args.guard_concurrency.into(),
            args.guard_concurrency_per_source.into(),
        )),
        synced: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        scopes: scopes.len(),
        alerts,
        intake,
    };
    futures::future::join_all(scopes.into_iter().map(|scope| serve(&args, &shared, scope))).await;
    leadership.step_down().await;
    server.abort();
    tracing::info!("rollguard controller stopped");
    Ok(())
}

/// The namespaces served, one controller pair each; `[None]` is every namespace.
fn scopes(namespaces: &[String]) -> Vec<Option<String>> {
    let mut named: Vec<String> = namespaces
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    named.sort();
    named.dedup();
    if named.is_empty() {
        vec![None]
    } else {
        named.into_iter().map(Some).collect()
    }
}

/// What the controllers of every namespace share.
struct Shared {
    client: Client,
    reporter: Reporter,
    metrics: Arc<Metrics>,
    egress: crate::egress::Egress,
    fairness: Arc<guard::fairness::Fairness>,
    /// Namespaces whose caches hold the cluster's state; ready when all of `scopes` do.
    synced: Arc<std::sync::atomic::AtomicUsize>,
    scopes: usize,
    /// Pushed alerts, and the webhook that takes them (with --webhook-addr).
    alerts: Arc<crate::alerts::store::Store>,
    intake: Option<Arc<crate::alerts::intake::Intake>>,
}

/// An Api of `scope`: one namespace, or all.
fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The rollback and guard controllers of one namespace (or of all).
async fn serve(args: &RunArgs, shared: &Shared, scope: Option<String>) {
    let client = shared.client.clone();
    let (reporter, metrics, egress) = (
        shared.reporter.clone(),
        shared.metrics.clone(),
        shared.egress.clone(),
    );
    let requests: Api<RollbackRequest> = api(&client, &scope);
    let guards: Api<RolloutGuard> = api(&client, &scope);
    // The requests' cache, indexed by guard as the watch fills it.
    let (store, writer) = reflector::store();
    let indexed = crate::requests::Requests::new(store.clone());
    let index = indexed.clone();
    let arrivals = crate::rollback::ready::Arrivals::default();
    let arrived = arrivals.clone();
    // A request just created starts at once, its turn taken here before the controller's
    // scheduler (about a millisecond later) can run it (ready::Turns).
    let turns = crate::rollback::ready::Turns::default();
    let (starts, mut to_start) = tokio::sync::mpsc::unbounded_channel();
    let starting = turns.clone();
    let request_events = watcher(requests, watcher::Config::default())
        .default_backoff()
        .modify(forget_managed_fields)
        .map_ok(move |event| {
            index.apply(&event);
            if arrived.apply(&event)
                && let watcher::Event::Apply(r) = &event
                && let Some(turn) = starting.take_now(&r.uid().unwrap_or_default())
            {
                let _ = starts.send((Arc::new(r.clone()), turn));
            }
            event
        })
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(request_events, store.clone());
    // Notifications are delivered beside the rollbacks; a finished delivery wakes its
    // request so the outcome is recorded.
    let (outbox, mut delivered) = Outbox::new(
        Courier::new(
            client.clone(),
            egress.clone(),
            RetryPolicy {
                attempts: args.notify_attempts,
                attempt_timeout: args.notify_attempt_timeout,
                ..RetryPolicy::default()
            },
        ),
        Recorder::new(client.clone(), reporter.clone()),
        metrics.clone(),
    );
    let (guard_changed, mut guards_to_evaluate) = tokio::sync::mpsc::unbounded_channel();
    // The guards' cache, filled by the guard controller's watch below.
    let (reader, guard_writer) = reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter.clone()),
        prometheus: Prometheus::new(egress.clone()),
        egress: egress.clone(),
        default_prometheus_url: args.prometheus_url.clone(),
        requests: indexed.clone(),
        metrics: metrics.clone(),
        outbox: outbox.clone(),
        guard_changed: guard_changed.clone(),
        effective_since: Default::default(),
        guards: reader.clone(),
        flags: crate::rollback::ready::FlagsCache::start(api(&client, &scope)),
        arrivals,
        turns,
        mirrors: Default::default(),
    });
    let starter = ctx.clone();
    let fast_starts = tokio::spawn(async move {
        while let Some((request, turn)) = to_start.recv().await {
            tokio::spawn(reconciler::start_arrived(request, turn, starter.clone()));
        }
    });
    tracing::info!(
        namespace = scope.as_deref().unwrap_or("<all>"),
        "rollguard controller starting"
    );
    let queue = indexed.clone();
    // A guard's change (e.g. its rollback slot freed) wakes the requests waiting on it: told
    // by the guards' own watch below, once its cache holds the change, rather than by a
    // second watch of every guard status write.
    let (guard_touched, mut touched_guards) = tokio::sync::mpsc::unbounded_channel();
    let request_controller = controller
        .reconcile_on(futures::stream::poll_fn(move |cx| {
            touched_guards.poll_recv(cx)
        }))
        .reconcile_on(futures::stream::poll_fn(move |cx| delivered.poll_recv(cx)))
        .shutdown_on_signal()
        .run(reconciler::reconcile_in_turn, reconciler::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!(error = %e, "rollback reconcile error");
            }
        });

    // The objects whose owners opted in (SPEC §5), label-selected: the caches never hold the
    // cluster's other ConfigMaps and Secrets. A guard's evaluation reads them from here.
    let (opted_in, flags_changes, credentials_watch) =
        crate::opted_in::watch(&client, api(&client, &scope), api(&client, &scope));

    // Guards are evaluated every interval by requeue; only a spec change (a new
    // generation) or a rollback taking or freeing the slot triggers an evaluation early,
    // never the guard's own status write.
    let guard_ctx = Arc::new(guard::reconciler::Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter.clone()),
        prometheus: Prometheus::new(egress.clone()),
        queries: SharedQueries::with_metrics(metrics.clone()),
        alerts: shared.alerts.clone(),
        alertmanagers: crate::alerts::alertmanager::Alertmanagers::new(egress, metrics.clone()),
        default_prometheus_url: args.prometheus_url.clone(),
        requests: indexed.clone(),
        metrics: metrics.clone(),
        outbox,
        fairness: shared.fairness.clone(),
        opted_in,
    });
    // A pushed alert wakes the guards it reached, as a freed rollback slot does.
    if let Some(intake) = &shared.intake {
        intake.serve_scope(reader.clone(), guard_changed);
    }
    let guard_changes = watcher(guards, watcher::Config::default())
        .default_backoff()
        .modify(forget_managed_fields)
        .reflect(guard_writer)
        .map_ok(move |event| {
            wake::requests_of(&event, &queue, &guard_touched);
            event
        })
        .applied_objects()
        .predicate_filter(wake::generation_and_slot, Default::default());
    let guards_by_config_map = reader.clone();
    // Ready once both caches hold the cluster's state.
    let (request_cache, guard_cache, readiness) = (store.clone(), reader.clone(), metrics.clone());
    let (synced, scopes, mine) = (shared.synced.clone(), shared.scopes, scope.clone());
    tokio::spawn(async move {
        until_synced(&request_cache).await;
        until_synced(&guard_cache).await;
        let done = synced.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        tracing::info!(
            namespace = mine.as_deref().unwrap_or("<all>"),
            "caches synced"
        );
        if done == scopes {
            tracing::info!("caches synced: ready");
            readiness.set_ready();
        }
        // A deleted guard is never reconciled again: its trigger series go here.
        let mut sweep = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            sweep.tick().await;
            // Another namespace's guards are its sweep's to judge.
            readiness.forget_deleted_guards(|namespace, name| {
                mine.as_deref().is_some_and(|m| m != namespace)
                    || guard_cache
                        .get(&ObjectRef::new(name).within(namespace))
                        .is_some()
            });
        }
    });
    // Each change and each wake-up goes to its guard's shard (see `shards`).
    let (router, shard_inputs) = shards::split(shards::GUARD_SHARDS);
    let mut routing = tokio::task::JoinSet::new();
    routing.spawn(router.clone().changes(guard_changes));
    // A change to a guard's flags ConfigMap (e.g. a flag turned back on after a rollback)
    // is evaluated at once rather than at the next interval; the flags ConfigMaps' cache
    // fills from this same watch.
    let flags_wake_ups = flags_changes
        .filter_map(move |change| {
            futures::future::ready(match change {
                Ok(cm) => {
                    let (ns, name) = (cm.namespace(), cm.name_any());
                    let guards: Vec<_> = guards_by_config_map
                        .state()
                        .into_iter()
                        .filter(|g| g.namespace() == ns && g.spec.flags.config_map_ref.name == name)
                        .map(|g| ObjectRef::from_obj(&*g))
                        .collect();
                    Some(futures::stream::iter(guards))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "flags ConfigMaps' watch failed; retrying");
                    None
                }
            })
        })
        .flatten();
    routing.spawn(router.clone().wake_ups(flags_wake_ups));
    // A rollback took or freed a guard's slot, or a pushed alert reached it: its phase and
    // conditions follow now.
    routing.spawn(router.wake_ups(futures::stream::poll_fn(move |cx| {
        guards_to_evaluate.poll_recv(cx)
    })));
    let guard_controllers = shard_inputs.into_iter().map(|shard| {
        let shards::Shard {
            mut changed,
            mut wake,
        } = shard;
        let changed =
            futures::stream::poll_fn(move |cx| changed.poll_recv(cx)).map(Ok::<_, watcher::Error>);
        let reader = reader.clone();
        let guard_ctx = guard_ctx.clone();
        tokio::spawn(async move {
            // The store wakes only one of several waiters on its readiness (the last to
            // ask), so each shard makes sure of it here before its runner waits on it too.
            tokio::select! {
                () = until_synced(&reader) => {}
                () = stop_signal() => return,
            }
            Controller::for_stream(changed, reader)
                // Unbounded here: the bound is `fairness`, inside each evaluation, so a guard
                // waiting for its source's share holds none of the shared slots.
                .with_config(kube::runtime::controller::Config::default().concurrency(0))
                .reconcile_on(futures::stream::poll_fn(move |cx| wake.poll_recv(cx)))
                .shutdown_on_signal()
                .run(
                    guard::reconciler::reconcile,
                    guard::reconciler::error_policy,
                    guard_ctx,
                )
                .for_each(|result| async move {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "guard reconcile error");
                    }
                })
                .await
        })
    });
    let guard_controller = futures::future::join_all(guard_controllers);
    // The watch ends with the controllers (a SIGTERM stops them).
    let credentials = tokio::spawn(credentials_watch);
    let (_, shards_ended) = futures::join!(request_controller, guard_controller);
    for ended in shards_ended {
        if let Err(e) = ended {
            tracing::error!(error = %e, "a guard controller shard ended abnormally");
        }
    }
    credentials.abort();
    fast_starts.abort();
    routing.abort_all();
}

/// Cached objects keep no managedFields: nothing reads them from a guard, a request or a
/// credential Secret (only the flags ConfigMaps' writers are asked for), and they are often
/// the larger part of an object.
pub fn forget_managed_fields<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// A SIGTERM or SIGINT, as the controllers' `shutdown_on_signal` hear it.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Waits until a reflector store holds its first full list. A second waiter on a store's
/// readiness is not always woken (the controller is the first), so this asks again.
async fn until_synced<K>(store: &kube::runtime::reflector::Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    while tokio::time::timeout(
        std::time::Duration::from_millis(100),
        store.wait_until_ready(),
    )
    .await
    .is_err()
    {}
}

#[cfg(test)]
mod tests {
    use super::scopes;

    #[test]
    fn namespaces_are_served_once_each_and_none_means_all() {
        assert_eq!(scopes(&[]), vec![None]);
        assert_eq!(scopes(&["".into(), " ".into()]), vec![None]);
        let listed = [
            "shop".into(),
            "payments".into(),
            "shop".into(),
            " shop ".into(),
        ];
        assert_eq!(
            scopes(&listed),
            vec![Some("payments".to_string()), Some("shop".to_string())]
        );
    }
}
