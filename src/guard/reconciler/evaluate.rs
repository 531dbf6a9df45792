//! The triggers' readings: queries sent through the per-interval shared queries; alert
//! triggers judged over the guard's Alertmanager (pull) or the pushed alerts.

use super::*;
use crate::alerts::{self, alertmanager, alertmanager::Source};

pub(super) async fn evaluate_triggers(
    guard: &RolloutGuard,
    ctx: &Context,
    namespace: &str,
    interval: Duration,
) -> Result<Vec<Outcome>, Error> {
    let spec = &guard.spec;
    let queries = spec.triggers.iter().filter(|t| t.query.is_some()).count();
    let target = match queries {
        0 => Err(String::new()),
        _ => {
            // From the credential Secrets' watch: no API call while the Secret is cached.
            let credentials = match crate::prometheus::auth_secret(guard) {
                Some(name) => Some(
                    ctx.opted_in
                        .credentials(namespace, name, crate::prometheus::AUTH_SECRET_FIELD)
                        .await?
                        .0,
                ),
                None => None,
            };
            Target::judge(
                guard,
                ctx.default_prometheus_url.as_deref(),
                credentials,
                ctx.prometheus.egress(),
            )
        }
    };
    let firing = match spec.triggers.iter().any(|t| t.alert.is_some()) {
        false => None,
        true => Some(firing_alerts(guard, ctx, namespace, interval).await?),
    };
    let query = |q: String| {
        let target = target.clone();
        async move {
            let Target {
                address,
                timeout,
                auth,
            } = target?;
            ctx.queries
                .instant(
                    &ctx.prometheus,
                    &address,
                    &q,
                    timeout,
                    auth.as_ref(),
                    interval,
                )
                .await
        }
    };
    let previous = guard
        .status
        .as_ref()
        .map(|s| s.triggers.as_slice())
        .unwrap_or_default();
    let evaluations = spec.triggers.iter().map(|trigger| {
        let current = trigger.query.clone().map(query);
        let baseline = trigger.baseline.as_ref().map(|b| query(b.query.clone()));
        let firing = &firing;
        let was_breaching = previous
            .iter()
            .any(|p| p.name == trigger.name && p.breaching);
        async move {
            if let (Some(matchers), Some(firing)) = (trigger.alert.as_ref(), firing) {
                return match firing {
                    Firing::Pulled(Ok(alerts)) => Ok(alerts::reading(&matchers.matchers, alerts)),
                    Firing::Pulled(Err(e)) => Err(e.clone()),
                    Firing::Pushed { firing, resolved } => alerts::pushed_outcome(
                        &matchers.matchers,
                        firing,
                        resolved,
                        was_breaching,
                        ctx.alerts.receiving_for(),
                        ctx.alerts.resend_window(),
                    ),
                };
            }
            let Some(current) = current else {
                return Err(format!(
                    "trigger {:?} has neither query nor alert",
                    trigger.name
                ));
            };
            let current = current.await?;
            let baseline = match baseline {
                Some(b) => b.await?,
                None => Vec::new(),
            };
            Ok(triggers::evaluate(trigger, &current, &baseline))
        }
    });
    Ok(futures::future::join_all(evaluations).await)
}

/// The alerts the guard's alert triggers are judged over.
enum Firing {
    /// Read from `spec.alertmanager` this interval.
    Pulled(Result<Vec<alerts::Alert>, String>),
    /// Pushed to the webhook, in the guard's namespace: firing, and lately resolved.
    Pushed {
        firing: Vec<alerts::Alert>,
        resolved: Vec<alerts::Alert>,
    },
}

async fn firing_alerts(
    guard: &RolloutGuard,
    ctx: &Context,
    namespace: &str,
    interval: Duration,
) -> Result<Firing, Error> {
    // From the credential Secrets' watch: no API call while the Secret is cached.
    let credentials = match alertmanager::auth_secret(guard) {
        Some(name) => Some(
            ctx.opted_in
                .credentials(namespace, name, alertmanager::AUTH_SECRET_FIELD)
                .await?
                .0,
        ),
        None => None,
    };
    Ok(match Source::of(guard, credentials) {
        Some(Ok(source)) => Firing::Pulled(ctx.alertmanagers.firing(&source, interval).await),
        Some(Err(problem)) => Firing::Pulled(Err(problem)),
        None => {
            let now = jiff::Timestamp::now();
            Firing::Pushed {
                firing: ctx.alerts.firing(namespace, now),
                resolved: ctx.alerts.resolved(namespace, now),
            }
        }
    })
}
