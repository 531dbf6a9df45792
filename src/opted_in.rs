//! The objects whose owners let rollguard use them (SPEC §5) — flags ConfigMaps labelled
//! `rollguard.dev/flags: "true"` and credential Secrets labelled
//! `rollguard.dev/credentials: "true"` — from the operator's label-selected watches, so a
//! guard's evaluation reads them without an API call.
//!
//! A miss asks the API server by name: the object may exist without the label (its owner
//! has not opted in, which a guard must be told), the watch may not have listed yet, or it
//! may lag behind a just-created object. Answers and messages are those of a direct read.

use crate::trust::{read_credentials, readable_credentials};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

#[derive(Clone)]
pub struct OptedIn {
    client: Client,
    flags: Store<ConfigMap>,
    credentials: Store<Secret>,
}

/// Where an answer came from (for the tests of the fallback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Cache,
    ApiServer,
}

impl OptedIn {
    pub fn new(client: Client, flags: Store<ConfigMap>, credentials: Store<Secret>) -> Self {
        Self {
            client,
            flags,
            credentials,
        }
    }

    /// ConfigMap `name` of `namespace`, labelled or not; None when it does not exist.
    pub async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(Option<ConfigMap>, Source), kube::Error> {
        let key = ObjectRef::new(name).within(namespace);
        if let Some(cm) = self.flags.get(&key) {
            return Ok((Some(cm.as_ref().clone()), Source::Cache));
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        Ok((api.get_opt(name).await?, Source::ApiServer))
    }

    /// Secret `name` of `namespace` for `field` of a guard, as [`read_credentials`] answers:
    /// None when it does not exist, Some(Err) with the message when rollguard may not read it.
    pub async fn credentials(
        &self,
        namespace: &str,
        name: &str,
        field: &str,
    ) -> Result<(Option<Result<Secret, String>>, Source), kube::Error> {
        let key = ObjectRef::new(name).within(namespace);
        if let Some(secret) = self.credentials.get(&key) {
            // Labelled, or it would not be in the cache; never a ServiceAccount token.
            let secret = secret.as_ref().clone();
            let judged = readable_credentials(&secret, field).map(|()| secret);
            return Ok((Some(judged), Source::Cache));
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        Ok((
            read_credentials(&api, name, field).await?,
            Source::ApiServer,
        ))
    }
}

/// The label-selected watches of flags ConfigMaps (in `config_maps`) and credential Secrets
/// (in `secrets`): the cache they fill, the flags ConfigMaps that changed (for the guard
/// controller to map to their guards), and the Secrets' watch to run beside it.
pub fn watch(
    client: &Client,
    config_maps: Api<ConfigMap>,
    secrets: Api<Secret>,
) -> (
    OptedIn,
    impl futures::Stream<Item = Result<ConfigMap, watcher::Error>> + Send + 'static,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (flags, flags_writer) = reflector::store::<ConfigMap>();
    let flags_changes = watcher(
        config_maps,
        watcher::Config::default().labels(&flags_selector()),
    )
    .default_backoff()
    .reflect(flags_writer)
    .applied_objects();
    let (credentials, credentials_writer) = reflector::store::<Secret>();
    let credentials_watch = watcher(
        secrets,
        watcher::Config::default().labels(&credentials_selector()),
    )
    .default_backoff()
    .modify(crate::controller::forget_managed_fields)
    .reflect(credentials_writer)
    .for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!(error = %e, "credential Secrets' watch failed; retrying (reads by name meanwhile)");
        }
    });
    (
        OptedIn::new(client.clone(), flags, credentials),
        flags_changes,
        credentials_watch,
    )
}

/// The label selector of the flags ConfigMaps' watch.
pub fn flags_selector() -> String {
    format!("{}={}", crate::api::FLAGS_LABEL, crate::api::OPT_IN)
}

/// The label selector of the credential Secrets' watch.
pub fn credentials_selector() -> String {
    format!("{}={}", crate::api::CREDENTIALS_LABEL, crate::api::OPT_IN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose every call fails at once: nothing listens on port 1.
    fn unreachable_client() -> Client {
        crate::install_crypto_provider();
        Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap()
    }

    fn cached<K>(objects: Vec<K>) -> Store<K>
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Default,
    {
        let (store, mut writer) = reflector::store();
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        store
    }

    fn opted_in(config_maps: Vec<ConfigMap>, secrets: Vec<Secret>) -> OptedIn {
        OptedIn::new(unreachable_client(), cached(config_maps), cached(secrets))
    }

    #[tokio::test]
    async fn a_cached_object_is_answered_without_an_api_call_and_a_miss_asks_the_api_server() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ff", "namespace": "shop", "labels": {"rollguard.dev/flags": "true"}},
            "data": {"a": "true"}
        }))
        .unwrap();
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "prom-auth", "namespace": "shop", "labels": {"rollguard.dev/credentials": "true"}},
            "stringData": {"token": "t"}
        }))
        .unwrap();
        let o = opted_in(vec![cm.clone()], vec![secret]);
        let (found, source) = o.config_map("shop", "ff").await.unwrap();
        assert_eq!((found, source), (Some(cm), Source::Cache));
        let (found, source) = o
            .credentials("shop", "prom-auth", "spec.prometheus.authSecretRef.name")
            .await
            .unwrap();
        assert!(matches!(found, Some(Ok(_))), "{found:?}");
        assert_eq!(source, Source::Cache);
        // Another namespace's object of the same name is a miss: the API server is asked
        // (and here cannot answer).
        assert!(o.config_map("other", "ff").await.is_err());
        assert!(o.credentials("other", "prom-auth", "f").await.is_err());
        assert!(o.config_map("shop", "absent").await.is_err());
    }

    #[tokio::test]
    async fn a_cached_service_account_token_is_refused_as_a_read_would_refuse_it() {
        let token: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sa", "namespace": "shop", "labels": {"rollguard.dev/credentials": "true"}},
            "type": crate::trust::SERVICE_ACCOUNT_TOKEN,
        }))
        .unwrap();
        let o = opted_in(Vec::new(), vec![token.clone()]);
        let field = "spec.notify[ops].secretRef.name";
        let (found, _) = o.credentials("shop", "sa", field).await.unwrap();
        assert_eq!(
            found,
            Some(readable_credentials(&token, field).map(|()| token))
        );
        assert!(matches!(found, Some(Err(m)) if m.contains("ServiceAccount token")));
    }
}
