//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): of several
//! replicas only the holder of the Lease runs the controllers; the others stand by.
//!
//! A leader that loses the Lease exits at once with [`LOST_LEASE_EXIT_CODE`], before the
//! Lease can pass to another process, so two processes never both change flags: either
//! another holder shows up, or its own renewal cannot be confirmed while the Lease still
//! has `grace / 2` to run. The restarted process stands by like any other replica.

use crate::metrics::Metrics;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Exit status of a leader that lost its Lease (the Deployment restarts it as a standby).
pub const LOST_LEASE_EXIT_CODE: i32 = 3;

#[derive(Clone, Debug, clap::Args)]
pub struct LeaderArgs {
    /// Elect a leader on a Lease; only the leader acts. `--leader-elect=false` only for a
    /// single replica.
    #[arg(long, env = "ROLLGUARD_LEADER_ELECT", default_value_t = true,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, env = "ROLLGUARD_LEASE_NAME", default_value = "rollguard")]
    pub lease_name: String,
    /// Namespace of the Lease; default: $POD_NAMESPACE, else --namespace, else `default`.
    #[arg(long, env = "ROLLGUARD_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long the Lease stays valid after the holder's last renewal (whole seconds, at
    /// least 2s): the longest a standby waits after the leader died. The holder renews
    /// `max(1s, duration/3)` before it expires.
    #[arg(long, env = "ROLLGUARD_LEASE_DURATION", default_value = "15s", value_parser = lease_duration)]
    pub lease_duration: Duration,
}

fn lease_duration(text: &str) -> Result<Duration, String> {
    let d = crate::api::schema::GoDuration::new(text)
        .to_std()
        .map_err(|e| e.to_string())?;
    if d < Duration::from_secs(2) || d.subsec_nanos() != 0 {
        return Err(format!(
            "{text}: a lease duration is whole seconds, at least 2s"
        ));
    }
    Ok(d)
}

/// Seconds the holder renews before the Lease expires (kube-lease-manager's `grace`).
pub fn grace(duration: Duration) -> Duration {
    Duration::from_secs((duration.as_secs() / 3).max(1))
}

/// The Lease's namespace: the flag, else the pod's own namespace, else the watched one.
pub fn lease_namespace(args: &LeaderArgs, watched: Option<&str>) -> String {
    args.lease_namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .or_else(|| watched.map(str::to_string))
        .unwrap_or_else(|| "default".into())
}

/// `<pod or host name>_<random>`: unique also for two processes on one host, or a
/// container restarted in the same pod.
fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "rollguard".into());
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let random = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    format!("{base}_{random:016x}")
}

/// What a freshly read Lease says about our leadership.
#[derive(Debug, PartialEq)]
pub enum Standing {
    /// We hold it, valid for this long yet (by our clock, which wrote the renewal).
    Holding(Duration),
    /// Someone else holds it, or nobody (released or wiped).
    Lost(String),
}

pub fn standing(lease: &Lease, identity: &str, now: SystemTime) -> Standing {
    let spec = lease.spec.clone().unwrap_or_default();
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => {}
        Some(holder) => return Standing::Lost(format!("the lease is now held by {holder}")),
        None => return Standing::Lost("the lease has no holder".into()),
    }
    let (Some(renew), Some(duration)) = (spec.renew_time, spec.lease_duration_seconds) else {
        return Standing::Lost("the lease has no renewTime or leaseDurationSeconds".into());
    };
    let expiry =
        SystemTime::from(renew.0) + Duration::from_secs(u64::try_from(duration).unwrap_or(0));
    Standing::Holding(expiry.duration_since(now).unwrap_or_default())
}

/// This process's part in the election; [`Leadership::step_down`] hands the Lease over on
/// a clean shutdown.
pub struct Leadership {
    held: Option<Held>,
    metrics: Arc<Metrics>,
}

struct Held {
    channel: watch::Receiver<bool>,
    manager: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
    guards: Vec<JoinHandle<()>>,
}

/// Returns once this process may act: at once without leader election, else when it
/// holds the Lease. Meanwhile it stands by (ready, `rollguard_leader` 0).
pub async fn lead(
    client: Client,
    args: &LeaderArgs,
    watched_namespace: Option<&str>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Leadership> {
    if !args.leader_elect {
        tracing::info!("leader election off (--leader-elect=false): acting at once");
        metrics.leader.set(1);
        return Ok(Leadership {
            held: None,
            metrics,
        });
    }
    let namespace = lease_namespace(args, watched_namespace);
    let identity = identity();
    let grace = grace(args.lease_duration);
    // Until the Lease can be read or created (API server down, RBAC missing) the process
    // is alive but not ready, and says why.
    let mut retry = Duration::from_millis(500);
    let manager = loop {
        match LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&namespace)
            .with_identity(&identity)
            .with_duration(args.lease_duration.as_secs())
            .with_grace(grace.as_secs())
            .build()
            .await
        {
            Ok(manager) => break manager,
            Err(e) => {
                tracing::warn!(lease = %format!("{namespace}/{}", args.lease_name), error = %e,
                    "cannot join the election yet; retrying in {retry:?}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(10));
            }
        }
    };
    let (mut channel, manager) = manager.watch().await;
    tracing::info!(lease = %format!("{namespace}/{}", args.lease_name), %identity, "standing by for the lease");
    metrics.set_standing_by(true);
    // No signal handler here: SIGTERM ends a standby by its default action (nothing to
    // stop), and a handler installed now would swallow a SIGTERM that arrives before the
    // controllers install theirs.
    while !*channel.borrow_and_update() {
        if channel.changed().await.is_err() {
            let error = match manager.await {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(_)) => "it stopped".into(),
                Err(e) => e.to_string(),
            };
            anyhow::bail!(
                "lease {namespace}/{}: election failed: {error}",
                args.lease_name
            );
        }
    }
    metrics.set_standing_by(false);
    metrics.leader.set(1);
    tracing::info!(lease = %format!("{namespace}/{}", args.lease_name), %identity, "leading: starting the controllers");

    let mut lost = channel.clone();
    let on_loss = tokio::spawn(async move {
        loop {
            if lost.changed().await.is_err() {
                exit_lost("the lease manager stopped");
            }
            if !*lost.borrow_and_update() {
                exit_lost("the lease manager reports the lease lost");
            }
        }
    });
    let fence = tokio::spawn(fence(
        Api::namespaced(client, &namespace),
        args.lease_name.clone(),
        identity,
        args.lease_duration,
        grace,
    ));
    Ok(Leadership {
        held: Some(Held {
            channel,
            manager,
            guards: vec![on_loss, fence],
        }),
        metrics,
    })
}

/// Reads the Lease every `grace / 2` and exits when another process holds it, or when
/// its renewal is overdue: less than `grace / 2` left, where the holder renews `grace`
/// before expiry. A read that fails counts as no confirmation.
async fn fence(
    leases: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    grace: Duration,
) {
    let margin = grace / 2;
    // Acquired just now: valid for at least the duration less the renewal margin.
    let mut valid_until = Instant::now() + duration - grace;
    let mut tick = tokio::time::interval(margin);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match leases.get(&name).await {
            Ok(lease) => match standing(&lease, &identity, SystemTime::now()) {
                Standing::Holding(left) if left > margin => valid_until = Instant::now() + left,
                Standing::Holding(left) => exit_lost(&format!(
                    "renewal overdue: the lease expires in {:.1}s",
                    left.as_secs_f64()
                )),
                Standing::Lost(why) => exit_lost(&why),
            },
            Err(e) if Instant::now() + margin >= valid_until => {
                exit_lost(&format!("cannot confirm the lease before it expires: {e}"))
            }
            Err(e) => tracing::warn!(error = %e, "reading the lease failed; retrying"),
        }
    }
}

fn exit_lost(why: &str) -> ! {
    tracing::error!(
        reason = why,
        "lost the lease: exiting at once so that only one process acts"
    );
    std::process::exit(LOST_LEASE_EXIT_CODE);
}

impl Leadership {
    /// After the controllers stopped: releases the Lease so a standby takes over now
    /// rather than after the lease duration.
    pub async fn step_down(self) {
        self.metrics.leader.set(0);
        let Some(held) = self.held else { return };
        for guard in &held.guards {
            guard.abort();
        }
        drop(held.channel);
        match tokio::time::timeout(Duration::from_secs(5), held.manager).await {
            Ok(Ok(Ok(_))) => tracing::info!("lease released"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the lease failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease manager task failed"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: Option<&str>, renewed_ago: Duration, duration: i32) -> Lease {
        let renew = jiff::Timestamp::try_from(SystemTime::now() - renewed_ago).unwrap();
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                renew_time: Some(MicroTime(renew)),
                lease_duration_seconds: Some(duration),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn holding_while_the_renewal_is_fresh() {
        let l = lease(Some("me"), Duration::from_secs(5), 15);
        match standing(&l, "me", SystemTime::now()) {
            Standing::Holding(left) => assert!(
                left > Duration::from_secs(9) && left <= Duration::from_secs(10),
                "{left:?}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_expired_lease_leaves_nothing() {
        let l = lease(Some("me"), Duration::from_secs(20), 15);
        assert_eq!(
            standing(&l, "me", SystemTime::now()),
            Standing::Holding(Duration::ZERO)
        );
    }

    #[test]
    fn another_holder_or_none_is_lost() {
        let l = lease(Some("other"), Duration::ZERO, 15);
        assert_eq!(
            standing(&l, "me", SystemTime::now()),
            Standing::Lost("the lease is now held by other".into())
        );
        let l = lease(None, Duration::ZERO, 15);
        assert!(matches!(
            standing(&l, "me", SystemTime::now()),
            Standing::Lost(_)
        ));
    }

    #[test]
    fn grace_is_a_third_of_the_duration_at_least_a_second() {
        assert_eq!(grace(Duration::from_secs(15)), Duration::from_secs(5));
        assert_eq!(grace(Duration::from_secs(2)), Duration::from_secs(1));
    }

    #[test]
    fn lease_durations_are_whole_seconds_of_at_least_two() {
        assert_eq!(lease_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(lease_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(lease_duration("1s").is_err());
        assert!(lease_duration("2500ms").is_err());
        assert!(lease_duration("soon").is_err());
    }

    #[test]
    fn the_lease_namespace_prefers_the_flag_then_the_watched_namespace() {
        let mut args = LeaderArgs {
            leader_elect: true,
            lease_name: "rollguard".into(),
            lease_namespace: Some("ops".into()),
            lease_duration: Duration::from_secs(15),
        };
        assert_eq!(lease_namespace(&args, Some("shop")), "ops");
        args.lease_namespace = None;
        if std::env::var("POD_NAMESPACE").is_err() {
            assert_eq!(lease_namespace(&args, Some("shop")), "shop");
            assert_eq!(lease_namespace(&args, None), "default");
        }
    }
}
