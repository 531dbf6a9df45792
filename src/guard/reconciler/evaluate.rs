//! The triggers' queries, sent through the per-interval shared queries.

use super::*;

pub(super) async fn evaluate_triggers(
    guard: &RolloutGuard,
    ctx: &Context,
    namespace: &str,
    interval: Duration,
) -> Result<Vec<Outcome>, Error> {
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
    let target = match Target::judge(
        guard,
        ctx.default_prometheus_url.as_deref(),
        credentials,
        ctx.prometheus.egress(),
    ) {
        Ok(target) => target,
        Err(e) => return Ok(guard.spec.triggers.iter().map(|_| Err(e.clone())).collect()),
    };
    let Target {
        address,
        timeout,
        auth,
    } = target;
    let query = |q: String| {
        let (address, auth) = (address.clone(), auth.clone());
        async move {
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
    let evaluations = guard.spec.triggers.iter().map(|trigger| {
        let current = query(trigger.query.clone());
        let baseline = trigger.baseline.as_ref().map(|b| query(b.query.clone()));
        async move {
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
