//! Post-rollback health verification (SPEC §2 step 5): workloads Available with every
//! replica ready, HTTP checks answering as expected. The judgement of a workload's status
//! is pure; fetching it and calling URLs is the reconciler's.

use crate::egress::{Egress, EgressError, without_userinfo};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use std::time::Duration;

/// Why a Deployment is not yet healthy, or Ok.
pub fn deployment_ready(d: &Deployment) -> Result<(), String> {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let want = d.spec.replicas.unwrap_or(1);
    let Some(status) = &d.status else {
        return Err(format!("Deployment {name:?} has no status yet"));
    };
    generation_current(
        d.metadata.generation,
        status.observed_generation,
        "Deployment",
        name,
    )?;
    let available =
        status.conditions.iter().flatten().any(|c| {
            c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
        });
    if !available {
        return Err(format!("Deployment {name:?} is not Available"));
    }
    replicas_ready(
        "Deployment",
        name,
        want,
        status.ready_replicas.unwrap_or(0),
        status.updated_replicas.unwrap_or(0),
    )
}

/// Why a StatefulSet is not yet healthy, or Ok.
pub fn statefulset_ready(s: &StatefulSet) -> Result<(), String> {
    let name = s.metadata.name.as_deref().unwrap_or_default();
    let want = s.spec.replicas.unwrap_or(1);
    let Some(status) = &s.status else {
        return Err(format!("StatefulSet {name:?} has no status yet"));
    };
    generation_current(
        s.metadata.generation,
        status.observed_generation,
        "StatefulSet",
        name,
    )?;
    replicas_ready(
        "StatefulSet",
        name,
        want,
        status.ready_replicas.unwrap_or(0),
        status.updated_replicas.unwrap_or(0),
    )
}

fn generation_current(
    generation: Option<i64>,
    observed: Option<i64>,
    kind: &str,
    name: &str,
) -> Result<(), String> {
    match (generation, observed) {
        (Some(g), Some(o)) if o >= g => Ok(()),
        (None, _) => Ok(()),
        _ => Err(format!(
            "{kind} {name:?}: its controller has not observed generation {} yet",
            generation.unwrap_or_default()
        )),
    }
}

fn replicas_ready(
    kind: &str,
    name: &str,
    want: i32,
    ready: i32,
    updated: i32,
) -> Result<(), String> {
    if ready < want || updated < want {
        return Err(format!(
            "{kind} {name:?}: {ready}/{want} replicas ready, {updated}/{want} updated"
        ));
    }
    Ok(())
}

/// GETs `url` and compares the status code; Err says what was wrong (naming the URL
/// without its userinfo). Redirects are answers like any other: a 302 where 200 is expected
/// fails the check.
pub async fn check_http(
    egress: &Egress,
    url: &str,
    expect: i32,
    timeout: Duration,
) -> Result<(), String> {
    let shown = without_userinfo(url);
    let request = egress.client().get(url).timeout(timeout);
    let response = match egress.send(request).await {
        Ok(response) => response,
        Err(EgressError::Redirect(code)) if i32::from(code) == expect => return Ok(()),
        Err(EgressError::Redirect(code)) => {
            return Err(format!(
                "GET {shown} answered {code}, expected {expect} (redirects are not followed)"
            ));
        }
        Err(e) => return Err(format!("GET {shown} failed: {e}")),
    };
    let status = response.status().as_u16();
    let _ = egress.read_capped(response).await;
    if i32::from(status) == expect {
        Ok(())
    } else {
        Err(format!("GET {shown} answered {status}, expected {expect}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(
        replicas: i32,
        ready: i32,
        available: bool,
        generation: i64,
        observed: i64,
    ) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": {"readyReplicas": ready, "updatedReplicas": ready, "observedGeneration": observed,
                       "conditions": [{"type": "Available", "status": if available {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_deployment_is_ready_when_available_with_every_replica_ready_at_the_current_generation() {
        assert_eq!(deployment_ready(&deployment(3, 3, true, 2, 2)), Ok(()));
        assert_eq!(
            deployment_ready(&deployment(3, 2, true, 2, 2)).unwrap_err(),
            "Deployment \"api\": 2/3 replicas ready, 2/3 updated"
        );
        assert_eq!(
            deployment_ready(&deployment(3, 3, false, 2, 2)).unwrap_err(),
            "Deployment \"api\" is not Available"
        );
        assert!(
            deployment_ready(&deployment(3, 3, true, 3, 2))
                .unwrap_err()
                .contains("not observed generation 3")
        );
    }

    #[test]
    fn a_statefulset_is_ready_when_every_replica_is_ready_and_updated() {
        let s = |ready, updated| -> StatefulSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "db", "generation": 1},
                "spec": {"replicas": 2, "selector": {}, "template": {}, "serviceName": "db"},
                "status": {"replicas": 2, "readyReplicas": ready, "updatedReplicas": updated, "observedGeneration": 1}
            }))
            .unwrap()
        };
        assert_eq!(statefulset_ready(&s(2, 2)), Ok(()));
        assert!(statefulset_ready(&s(2, 1)).is_err());
    }
}
