//! The chart's Alertmanager webhook (`alertWebhook.enabled`), rendered by the real helm: the
//! token Secret, mounted as the file `--webhook-token-file` names, the container port and the
//! Service that reaches it; off by default (deploy/rollguard.yaml has none of it).

mod common;

use base64::Engine as _;
use common::tenancy::helm_template;
use yaml_rust2::{Yaml, YamlLoader};

fn documents(yaml: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(yaml)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> Option<&'a Yaml> {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
}

fn container(docs: &[Yaml]) -> &Yaml {
    &of_kind(docs, "Deployment", "rg-rollguard").expect("the Deployment")["spec"]["template"]["spec"]
        ["containers"][0]
}

fn args(docs: &[Yaml]) -> Vec<String> {
    container(docs)["args"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_webhook_token_is_a_secret_mounted_where_the_operator_reads_it() {
    let Some(helm) = common::helm() else { return };
    let docs = documents(&helm_template(
        &helm,
        "rg",
        "rollguard-system",
        &[
            "alertWebhook.enabled=true",
            "alertWebhook.token=t0k3n-from-values",
        ],
    ));
    let secret = of_kind(&docs, "Secret", "rg-rollguard-alert-webhook").expect("the token Secret");
    let token = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(token, b"t0k3n-from-values");
    let args = args(&docs);
    for arg in [
        "--webhook-addr=0.0.0.0:9094",
        "--webhook-token-file=/etc/rollguard/alert-webhook/token",
        "--webhook-max-body-bytes=1048576",
        "--alert-resend-window=10m",
    ] {
        assert!(args.iter().any(|a| a == arg), "{arg} in {args:?}");
    }
    let container = container(&docs);
    let mount = &container["volumeMounts"][0];
    assert_eq!(
        mount["mountPath"].as_str(),
        Some("/etc/rollguard/alert-webhook")
    );
    let pod = &of_kind(&docs, "Deployment", "rg-rollguard").unwrap()["spec"]["template"]["spec"];
    let volume = &pod["volumes"][0];
    assert_eq!(volume["name"], mount["name"]);
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("rg-rollguard-alert-webhook")
    );
    assert_eq!(volume["secret"]["items"][0]["path"].as_str(), Some("token"));
    let port = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some("alert-webhook"))
        .expect("the container's webhook port");
    assert_eq!(port["containerPort"].as_i64(), Some(9094));
    let service = of_kind(&docs, "Service", "rg-rollguard-alerts").expect("the webhook Service");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        Some("alert-webhook")
    );
    assert_eq!(service["spec"]["ports"][0]["port"].as_i64(), Some(9094));
}

#[test]
fn without_a_token_the_chart_makes_one_and_an_existing_secret_is_used_as_it_is() {
    let Some(helm) = common::helm() else { return };
    let docs = documents(&helm_template(
        &helm,
        "rg",
        "rollguard-system",
        &["alertWebhook.enabled=true"],
    ));
    let secret = of_kind(&docs, "Secret", "rg-rollguard-alert-webhook").expect("the token Secret");
    let token = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(token.len(), 48, "a random token of 48 characters");

    let docs = documents(&helm_template(
        &helm,
        "rg",
        "rollguard-system",
        &[
            "alertWebhook.enabled=true",
            "alertWebhook.existingSecret=my-am-token",
        ],
    ));
    assert!(!docs.iter().any(|d| d["kind"].as_str() == Some("Secret")));
    let pod = &of_kind(&docs, "Deployment", "rg-rollguard").unwrap()["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"].as_str(),
        Some("my-am-token")
    );

    let off = helm_template(&helm, "rg", "rollguard-system", &[]);
    assert!(
        !off.contains("webhook-addr") && !off.contains("rg-rollguard-alerts"),
        "off by default"
    );
}
