//! The triggers' queries, sent through the per-interval shared queries.

use super::*;

pub(super) async fn evaluate_triggers(
    guard: &RolloutGuard,
    ctx: &Context,
    namespace: &str,
    interval: Duration,
) -> Result<Vec<Outcome>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let target = match Target::of(
        guard,
        ctx.default_prometheus_url.as_deref(),
        &secrets,
        ctx.prometheus.egress(),
    )
    .await?
    {
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
