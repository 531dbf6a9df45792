//! The one place outbound HTTP clients are built and bounded (SPEC §5, "Outbound HTTP").
//!
//! A tenant who may edit a RolloutGuard chooses URLs the operator calls: its Prometheus, its
//! hooks and health checks, its receivers. Every such call goes through an [`Egress`]:
//!
//! - denied networks (link-local `169.254.0.0/16` and `fe80::/10` always, more by
//!   `--egress-deny-cidr`) are checked on the resolved address: by [`Egress::check_url`] for
//!   IP literals (reqwest resolves no name for them) and by the client's resolver for names,
//!   which refuses a name when any of its addresses is denied;
//! - redirects are never followed: a 3xx answer is an error;
//! - an answer's body is read up to `--egress-max-response-bytes`, counted while it streams;
//! - a credential goes over plain http only to a host `--egress-allow-plain-http-credentials`
//!   names;
//! - errors carry no URL: reqwest's own (`without_url`), and callers describe the endpoint
//!   with a label of their own (a receiver's name, an address without its userinfo).

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Networks no call reaches whatever the flags say (cloud metadata services live here).
pub const ALWAYS_DENIED: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];
/// Default of `--egress-max-response-bytes`: 8 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;
pub const DENY_FLAG: &str = "--egress-deny-cidr";
pub const ALLOW_PLAIN_HTTP_FLAG: &str = "--egress-allow-plain-http-credentials";

/// The operator's egress flags (`rollguard run`).
#[derive(Clone, Debug, clap::Args)]
pub struct EgressArgs {
    /// Networks no outbound call may reach (CIDR; repeatable or comma-separated), checked on
    /// the resolved address. Link-local 169.254.0.0/16 and fe80::/10 are always denied.
    #[arg(long = "egress-deny-cidr", value_name = "CIDR", env = "ROLLGUARD_EGRESS_DENY_CIDRS",
          value_delimiter = ',', value_parser = parse_cidr)]
    pub egress_deny_cidrs: Vec<IpNet>,
    /// Hosts that may receive credentials (Prometheus auth, receiver URLs from Secrets) over
    /// plain http (repeatable or comma-separated); everything else needs https.
    #[arg(
        long = "egress-allow-plain-http-credentials",
        value_name = "HOST",
        env = "ROLLGUARD_EGRESS_ALLOW_PLAIN_HTTP_CREDENTIALS",
        value_delimiter = ','
    )]
    pub egress_allow_plain_http_credentials: Vec<String>,
    /// Largest answer body read from any outbound call, in bytes.
    #[arg(long, env = "ROLLGUARD_EGRESS_MAX_RESPONSE_BYTES", default_value_t = DEFAULT_MAX_RESPONSE_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub egress_max_response_bytes: u64,
}

impl Default for EgressArgs {
    fn default() -> Self {
        Self {
            egress_deny_cidrs: Vec::new(),
            egress_allow_plain_http_credentials: Vec::new(),
            egress_max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// A CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address (`10.1.2.3`, a /32 or /128).
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not a CIDR such as 10.0.0.0/8 or fd00::/8"))
}

/// Why an outbound call was refused or failed. No variant holds a URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("the URL is not valid: {0}")]
    InvalidUrl(String),
    #[error("scheme {0:?} is not allowed: use http or https")]
    Scheme(String),
    #[error("address {address} is denied by the operator's egress policy ({network}; {DENY_FLAG})")]
    Denied { address: IpAddr, network: IpNet },
    #[error(
        "{host} resolves to {address}, which the operator's egress policy denies ({network}; {DENY_FLAG})"
    )]
    DeniedName {
        host: String,
        address: IpAddr,
        network: IpNet,
    },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("answered {0}: redirects are not followed")]
    Redirect(u16),
    #[error("answer larger than {0} bytes")]
    TooLarge(u64),
    #[error(
        "{field}: credentials are not sent over plain http to {address}; use https, or let the operator allow the host with {ALLOW_PLAIN_HTTP_FLAG} {host}"
    )]
    PlainHttpCredentials {
        field: String,
        address: String,
        host: String,
    },
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Transport(String),
}

#[derive(Debug)]
struct Policy {
    deny: Vec<IpNet>,
    allow_plain_http_credentials: Vec<String>,
    max_response_bytes: u64,
}

impl Policy {
    /// The denied network holding `address`, if any. An IPv4-mapped IPv6 address
    /// (`::ffff:169.254.169.254`) is judged as the IPv4 address it stands for.
    fn denied(&self, address: IpAddr) -> Option<IpNet> {
        let canonical = address.to_canonical();
        self.deny
            .iter()
            .find(|net| net.contains(&canonical) || net.contains(&address))
            .copied()
    }
}

/// The outbound HTTP policy and the one client that obeys it; cheap to clone.
#[derive(Clone, Debug)]
pub struct Egress {
    policy: Arc<Policy>,
    client: reqwest::Client,
}

impl Default for Egress {
    fn default() -> Self {
        Self::new(&EgressArgs::default())
    }
}

impl Egress {
    pub fn new(args: &EgressArgs) -> Self {
        let mut deny: Vec<IpNet> = ALWAYS_DENIED
            .iter()
            .map(|c| c.parse().expect("the always-denied networks parse"))
            .collect();
        deny.extend(args.egress_deny_cidrs.iter().copied());
        let policy = Arc::new(Policy {
            deny,
            allow_plain_http_credentials: args
                .egress_allow_plain_http_credentials
                .iter()
                .map(|h| normalise_host(h))
                .filter(|h| !h.is_empty())
                .collect(),
            max_response_bytes: args.egress_max_response_bytes.max(1),
        });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the name itself, past the denied networks.
            .no_proxy()
            .dns_resolver(Arc::new(DenyingResolver {
                policy: policy.clone(),
            }))
            .build()
            .expect("an HTTP client with a custom resolver builds");
        Self { policy, client }
    }

    /// The client to build requests with; send them with [`Egress::send`].
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn max_response_bytes(&self) -> u64 {
        self.policy.max_response_bytes
    }

    /// Whether `url` may be called at all: http or https, and a host that is not a denied
    /// IP literal (names are checked when resolved).
    pub fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(EgressError::Scheme(other.to_string())),
        }
        let Some(host) = url.host_str() else {
            return Err(EgressError::InvalidUrl("it has no host".into()));
        };
        // The URL parser has already normalised other spellings of an IPv4 address.
        let Ok(address) = normalise_host(host).parse::<IpAddr>() else {
            return Ok(());
        };
        match self.policy.denied(address) {
            Some(network) => Err(EgressError::Denied { address, network }),
            None => Ok(()),
        }
    }

    /// Whether a call carrying a credential (named by `field`) may go to `url`: https, or
    /// plain http to an allowed host. `shown` describes the endpoint in the error.
    pub fn check_credentials(
        &self,
        url: &Url,
        field: &str,
        shown: &str,
    ) -> Result<(), EgressError> {
        if url.scheme() != "http" {
            return Ok(());
        }
        let host = normalise_host(url.host_str().unwrap_or_default());
        if self.policy.allow_plain_http_credentials.contains(&host) {
            return Ok(());
        }
        Err(EgressError::PlainHttpCredentials {
            field: field.to_string(),
            address: shown.to_string(),
            host,
        })
    }

    /// Sends `request` after [`Egress::check_url`]; a 3xx answer is an error.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, EgressError> {
        let request = request.build().map_err(transport)?;
        self.check_url(request.url())?;
        let response = self.client.execute(request).await.map_err(transport)?;
        if response.status().is_redirection() {
            return Err(EgressError::Redirect(response.status().as_u16()));
        }
        Ok(response)
    }

    /// The answer's body, at most `--egress-max-response-bytes`, counted while it streams.
    pub async fn read_capped(
        &self,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, EgressError> {
        let limit = self.policy.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(EgressError::TooLarge(limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(EgressError::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Hosts compare lower-case and without the brackets of an IPv6 literal.
fn normalise_host(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// `url` without its userinfo (`https://user:pass@host/` → `https://host/`); for text that
/// is not a URL, a placeholder (it could be anything).
pub fn without_userinfo(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "<invalid URL>".into(),
    }
}

/// A reqwest error as an [`EgressError`]: our own refusal when the resolver made it,
/// otherwise its text and its causes, never its URL.
fn transport(e: reqwest::Error) -> EgressError {
    let e = e.without_url();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        if let Some(ours) = cause.downcast_ref::<EgressError>() {
            return ours.clone();
        }
        source = cause.source();
    }
    if e.is_timeout() {
        return EgressError::Timeout;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    EgressError::Transport(text)
}

/// Resolves with the system resolver (tokio) and refuses a name when any of its addresses
/// is denied: dropping only the denied ones would let a name that answers differently each
/// time (DNS rebinding) still reach them.
struct DenyingResolver {
    policy: Arc<Policy>,
}

impl Resolve for DenyingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            judge_resolved(&policy, &host, &addresses)?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

fn judge_resolved(
    policy: &Policy,
    host: &str,
    addresses: &[SocketAddr],
) -> Result<(), EgressError> {
    if addresses.is_empty() {
        return Err(EgressError::NoAddress(host.to_string()));
    }
    for address in addresses {
        if let Some(network) = policy.denied(address.ip()) {
            return Err(EgressError::DeniedName {
                host: host.to_string(),
                address: address.ip(),
                network,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(deny: &[&str], allow: &[&str]) -> Egress {
        crate::install_crypto_provider();
        Egress::new(&EgressArgs {
            egress_deny_cidrs: deny.iter().map(|c| parse_cidr(c).unwrap()).collect(),
            egress_allow_plain_http_credentials: allow.iter().map(|h| h.to_string()).collect(),
            egress_max_response_bytes: 16,
        })
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn link_local_is_always_denied_and_flags_add_networks() {
        let e = egress(&["10.0.0.0/8", "127.0.0.3"], &[]);
        for denied in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "10.1.2.3",
            "127.0.0.3",
        ] {
            let ip: IpAddr = denied.parse().unwrap();
            assert!(e.policy.denied(ip).is_some(), "{denied} should be denied");
        }
        for allowed in ["127.0.0.1", "127.0.0.4", "11.0.0.1", "fe00::1", "::1"] {
            let ip: IpAddr = allowed.parse().unwrap();
            assert_eq!(e.policy.denied(ip), None, "{allowed} should be allowed");
        }
        assert!(
            Egress::default()
                .policy
                .denied("169.254.169.254".parse().unwrap())
                .is_some()
        );
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_is_judged_as_its_ipv4_address() {
        let e = egress(&["10.0.0.0/8"], &[]);
        for mapped in ["::ffff:169.254.169.254", "::ffff:10.0.0.1"] {
            assert!(
                e.policy.denied(mapped.parse().unwrap()).is_some(),
                "{mapped} should be denied"
            );
        }
        assert_eq!(e.policy.denied("::ffff:127.0.0.1".parse().unwrap()), None);
        // And an IPv6 network still matches an IPv6 address.
        let e = egress(&["::ffff:0:0/96"], &[]);
        assert!(e.policy.denied("::ffff:1.2.3.4".parse().unwrap()).is_some());
    }

    #[test]
    fn cidr_flags_take_networks_and_single_addresses() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr(" 10.1.2.3 ").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_cidr("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert!(
            parse_cidr("10.0.0.0/33")
                .unwrap_err()
                .contains("not a CIDR")
        );
        assert!(parse_cidr("example.com").is_err());
    }

    #[test]
    fn ip_literal_urls_are_checked_before_sending() {
        let e = egress(&["127.0.0.3/32"], &[]);
        let refused = e
            .check_url(&url("http://169.254.169.254/latest/meta-data"))
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "address 169.254.169.254 is denied by the operator's egress policy (169.254.0.0/16; --egress-deny-cidr)"
        );
        assert!(e.check_url(&url("http://127.0.0.3:8080/drain")).is_err());
        assert!(e.check_url(&url("http://[fe80::1]:80/")).is_err());
        assert!(
            e.check_url(&url("http://[::ffff:169.254.169.254]/"))
                .is_err()
        );
        // The URL parser normalises other spellings of an IPv4 address to the address.
        assert!(e.check_url(&url("http://2852039166/")).is_err());
        assert!(e.check_url(&url("http://0xA9.254.169.254/")).is_err());
        assert_eq!(e.check_url(&url("http://127.0.0.1:8080/")), Ok(()));
        assert_eq!(e.check_url(&url("https://example.com/")), Ok(()));
        assert_eq!(
            e.check_url(&url("file:///etc/passwd")),
            Err(EgressError::Scheme("file".into()))
        );
    }

    #[test]
    fn a_name_is_refused_when_any_of_its_addresses_is_denied() {
        let e = egress(&[], &[]);
        let addr = |s: &str| SocketAddr::new(s.parse().unwrap(), 0);
        let refused = judge_resolved(
            &e.policy,
            "metadata.internal",
            &[addr("10.0.0.1"), addr("169.254.169.254")],
        )
        .unwrap_err();
        assert!(refused.to_string().starts_with(
            "metadata.internal resolves to 169.254.169.254, which the operator's egress policy denies"
        ));
        assert_eq!(
            judge_resolved(&e.policy, "ok.internal", &[addr("10.0.0.1"), addr("::1")]),
            Ok(())
        );
        assert_eq!(
            judge_resolved(&e.policy, "none", &[]),
            Err(EgressError::NoAddress("none".into()))
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_of_a_denied_address() {
        let e = egress(&["127.0.0.0/8", "::1/128"], &[]);
        let error = e
            .send(e.client().get("http://localhost:9/secret-path"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, EgressError::DeniedName { ref host, .. } if host == "localhost"),
            "{error:?}"
        );
        assert!(!error.to_string().contains("secret-path"), "{error}");
    }

    #[test]
    fn credentials_go_over_plain_http_only_to_allowed_hosts() {
        let e = egress(&[], &["127.0.0.1", "Prometheus.Monitoring", "[::1]"]);
        let field = "spec.prometheus.authSecretRef";
        assert_eq!(
            e.check_credentials(&url("https://10.0.0.1/"), field, "x"),
            Ok(())
        );
        assert_eq!(
            e.check_credentials(&url("http://127.0.0.1:9090/"), field, "x"),
            Ok(())
        );
        assert_eq!(
            e.check_credentials(&url("http://prometheus.monitoring:9090/"), field, "x"),
            Ok(())
        );
        assert_eq!(
            e.check_credentials(&url("http://[::1]:9090/"), field, "x"),
            Ok(())
        );
        let refused = e
            .check_credentials(
                &url("http://127.0.0.2:9090/"),
                field,
                "http://127.0.0.2:9090/",
            )
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "spec.prometheus.authSecretRef: credentials are not sent over plain http to http://127.0.0.2:9090/; use https, or let the operator allow the host with --egress-allow-plain-http-credentials 127.0.0.2"
        );
    }

    #[test]
    fn userinfo_is_removed_from_shown_addresses() {
        assert_eq!(
            without_userinfo("http://admin:hunter2@prometheus:9090/prom"),
            "http://prometheus:9090/prom"
        );
        assert_eq!(without_userinfo("https://token@host/"), "https://host/");
        assert_eq!(without_userinfo("http://host:1/"), "http://host:1/");
        assert_eq!(without_userinfo("not a url hunter2"), "<invalid URL>");
    }

    /// One loopback server answering every request with `answer`.
    async fn serve(answer: &'static [u8]) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let _ = socket.write_all(answer).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn a_redirect_is_an_error_that_does_not_echo_its_location() {
        let at = serve(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let e = egress(&[], &[]);
        let error = e
            .send(e.client().post(format!("http://{at}/token-in-path")))
            .await
            .unwrap_err();
        assert_eq!(error, EgressError::Redirect(307));
        assert_eq!(
            error.to_string(),
            "answered 307: redirects are not followed"
        );
    }

    #[tokio::test]
    async fn bodies_are_capped_while_streaming_with_or_without_a_length() {
        let e = egress(&[], &[]); // 16 bytes
        let small = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
        let response = e
            .send(e.client().get(format!("http://{small}/")))
            .await
            .unwrap();
        assert_eq!(e.read_capped(response).await.unwrap(), b"hello");

        let declared = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
        let response = e
            .send(e.client().get(format!("http://{declared}/")))
            .await
            .unwrap();
        assert_eq!(
            e.read_capped(response).await.unwrap_err().to_string(),
            "answer larger than 16 bytes"
        );

        let chunked = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
        )
        .await;
        let response = e
            .send(e.client().get(format!("http://{chunked}/")))
            .await
            .unwrap();
        assert_eq!(
            e.read_capped(response).await.unwrap_err(),
            EgressError::TooLarge(16)
        );
    }

    #[tokio::test]
    async fn transport_errors_carry_no_url() {
        // Nothing listens on port 1 of loopback.
        let e = egress(&[], &[]);
        let error = e
            .send(
                e.client()
                    .get("http://user:hunter2@127.0.0.1:1/T0KEN?key=s3cret"),
            )
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, EgressError::Transport(_)), "{error:?}");
        for secret in ["hunter2", "T0KEN", "s3cret", "127.0.0.1:1"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}
