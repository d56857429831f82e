//! A small Consul HTTP client on reqwest: GET with the ACL token, TLS from
//! files, a body size limit, a timeout per call, and fail-over across agent
//! addresses.
//!
//! Every error names the call (`GET /v1/health/service/web at
//! http://10.0.0.1:8500`) and what went wrong; the token is never part of a
//! message or of `Debug` output.

use std::{
    fmt,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use reqwest::Url;

use crate::{
    metrics::{ConsulMetrics, endpoint_label},
    reply::{Reply, chain, read_reply},
};

/// How Consul is reached; the `discovery-consul` flags fill it in.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Agent addresses (`http://host:port`, `https://…`, or `host:port`),
    /// tried in order; a failing one hands over to the next.
    pub addresses: Vec<String>,
    /// The ACL token sent with every call.
    pub token: Option<Token>,
    /// PEM file of the CA(s) that sign the agents' certificates; when set,
    /// only these are trusted.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for agents that verify clients.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Timeout of a call that does not block; a blocking call gets its
    /// `wait` (plus Consul's own jitter of up to a sixteenth) on top.
    pub request_timeout: Duration,
    /// The largest response body read, in bytes.
    pub max_body: usize,
}

/// An ACL token; `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Token(String);

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// A failed call, with the call named.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {what}")]
pub(crate) struct CallError {
    call: String,
    what: String,
}

/// The client; cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct ConsulClient {
    http: reqwest::Client,
    bases: Vec<Url>,
    /// The address to try first: the last one that answered.
    current: AtomicUsize,
    token: Option<Token>,
    request_timeout: Duration,
    max_body: usize,
    metrics: ConsulMetrics,
}

// === impl Token ===

impl Token {
    /// A token; surrounding white space (a file's last newline) is dropped.
    pub fn new(secret: &str) -> Self {
        Self(secret.trim().to_string())
    }

    /// Whether the token is empty (then none is sent).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

// === impl ConsulClient ===

impl ConsulClient {
    pub(crate) fn new(cfg: &ClientConfig) -> Result<Self, ConfigError> {
        // reqwest is built without a bundled crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if cfg.addresses.is_empty() {
            return Err(ConfigError("no Consul address given".into()));
        }
        let bases = cfg
            .addresses
            .iter()
            .map(|a| parse_address(a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(cfg.request_timeout)
            .user_agent(concat!(
                "tributary-discovery-consul/",
                env!("CARGO_PKG_VERSION")
            ));
        if let Some(ca) = &cfg.ca_file {
            let pem = read(ca, "--ca-file")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ConfigError(format!("--ca-file {}: {e}", ca.display())))?;
            builder = builder.tls_certs_only(certs);
        }
        match (&cfg.client_cert, &cfg.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert, "--client-cert")?;
                pem.push(b'\n');
                pem.extend(read(key, "--client-key")?);
                let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    ConfigError(format!(
                        "--client-cert {} / --client-key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
                builder = builder.identity(id);
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError(
                    "--client-cert and --client-key go together".into(),
                ));
            }
        }
        let http = builder
            .build()
            .map_err(|e| ConfigError(format!("cannot build the HTTP client: {}", chain(&e))))?;
        Ok(Self {
            http,
            bases,
            current: AtomicUsize::new(0),
            token: cfg.token.clone().filter(|t| !t.is_empty()),
            request_timeout: cfg.request_timeout,
            max_body: cfg.max_body,
            metrics: ConsulMetrics::default(),
        })
    }

    /// `GET /v1/<segments…>?<query>`; with `blocking`, also
    /// `index` and `wait`, and a timeout that covers the wait.
    ///
    /// An agent that cannot be reached hands over to the next address at
    /// once; any other failure is returned, and the next call starts at the
    /// next address.
    pub(crate) async fn get(
        &self,
        segments: &[&str],
        query: &[(&'static str, String)],
        blocking: Option<(u64, Duration)>,
    ) -> Result<Reply, CallError> {
        let endpoint = endpoint_label(segments);
        let _in_flight = self.metrics.start(endpoint);
        let result = self.get_any(segments, query, blocking).await;
        self.metrics.ended(endpoint, result.is_ok());
        result
    }

    /// The call's metrics.
    pub(crate) fn metrics(&self) -> &ConsulMetrics {
        &self.metrics
    }

    /// [`get`](Self::get) from the first agent that can be reached.
    async fn get_any(
        &self,
        segments: &[&str],
        query: &[(&'static str, String)],
        blocking: Option<(u64, Duration)>,
    ) -> Result<Reply, CallError> {
        let path = format!("/v1/{}", segments.join("/"));
        let start = self.current.load(Ordering::Relaxed);
        let mut unreachable = Vec::new();
        for i in 0..self.bases.len() {
            let n = (start + i) % self.bases.len();
            let base = &self.bases[n];
            let call = format!("GET {path} at {}", base.as_str().trim_end_matches('/'));
            let url = build_url(base, segments, query, blocking);
            let mut timeout = self.request_timeout;
            if let Some((_, wait)) = blocking {
                timeout += wait + wait / 16;
            }
            let mut req = self.http.get(url).timeout(timeout);
            if let Some(t) = &self.token {
                req = req.header("X-Consul-Token", &t.0);
            }
            match req.send().await {
                Ok(resp) => {
                    let result = read_reply(resp, &call, self.max_body)
                        .await
                        .map_err(|what| CallError {
                            call: call.clone(),
                            what,
                        });
                    // A bad answer sends the next call to the next agent.
                    let next = if result.is_ok() { n } else { n + 1 };
                    self.current
                        .store(next % self.bases.len(), Ordering::Relaxed);
                    return result;
                }
                Err(e) if e.is_connect() && i + 1 < self.bases.len() => {
                    tracing::debug!(%call, error = %chain(&e), "agent unreachable; trying the next");
                    unreachable.push(format!("{}: {}", base, chain(&e)));
                }
                Err(e) => {
                    self.current
                        .store((n + 1) % self.bases.len(), Ordering::Relaxed);
                    let what = if e.is_timeout() {
                        format!("no answer within {timeout:?}")
                    } else {
                        chain(&e)
                    };
                    let what = if unreachable.is_empty() {
                        what
                    } else {
                        format!("{what} (also unreachable: {})", unreachable.join("; "))
                    };
                    return Err(CallError { call, what });
                }
            }
        }
        unreachable!("the loop returns on its last address")
    }
}

fn build_url(
    base: &Url,
    segments: &[&str],
    query: &[(&'static str, String)],
    blocking: Option<(u64, Duration)>,
) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().push("v1").extend(segments);
    }
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in query {
            if v.is_empty() {
                q.append_key_only(k);
            } else {
                q.append_pair(k, v);
            }
        }
        if let Some((index, wait)) = blocking {
            q.append_pair("index", &index.to_string());
            q.append_pair("wait", &crate::blocking::wait_param(wait));
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    url
}

/// `host:port` gets `http://`; anything else must be an http(s) URL.
fn parse_address(a: &str) -> Result<Url, ConfigError> {
    let a = a.trim();
    let with_scheme = if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    };
    let url =
        Url::parse(&with_scheme).map_err(|e| ConfigError(format!("Consul address {a:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError(format!(
            "Consul address {a:?}: use http://host:port, https://host:port or host:port"
        )));
    }
    Ok(url)
}

fn read(path: &std::path::Path, flag: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError(format!("{flag} {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_path_query_and_blocking_parameters() {
        let base = parse_address("127.0.0.1:8500").unwrap();
        let url = build_url(
            &base,
            &["health", "service", "we b/x"],
            &[("dc", "eu".into()), ("stale", String::new())],
            Some((42, Duration::from_secs(300))),
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8500/v1/health/service/we%20b%2Fx?dc=eu&stale&index=42&wait=300000ms"
        );
        let url = build_url(&base, &["catalog", "services"], &[], None);
        assert_eq!(url.as_str(), "http://127.0.0.1:8500/v1/catalog/services");
        let base = parse_address("https://consul.example:8501/").unwrap();
        assert_eq!(
            build_url(&base, &["status", "leader"], &[], None).as_str(),
            "https://consul.example:8501/v1/status/leader"
        );
    }

    #[test]
    fn bad_addresses_and_files_are_named() {
        for bad in ["ftp://x:1", "http://", ":::"] {
            let err = parse_address(bad).unwrap_err().to_string();
            assert!(err.contains("Consul address"), "{bad}: {err}");
        }
        let cfg = ClientConfig {
            addresses: vec!["127.0.0.1:8500".into()],
            token: None,
            ca_file: Some("/no/such/ca.pem".into()),
            client_cert: None,
            client_key: None,
            request_timeout: Duration::from_secs(1),
            max_body: 1024,
        };
        let err = ConsulClient::new(&cfg).unwrap_err().to_string();
        assert!(err.contains("--ca-file /no/such/ca.pem"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_agent_hands_over_to_the_next() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let live = crate::reply::tests::raw_server(
            b"HTTP/1.1 200 OK\r\nX-Consul-Index: 3\r\nContent-Length: 2\r\n\r\n[]".to_vec(),
        )
        .await;
        let client = ConsulClient::new(&crate::reply::tests::config(vec![
            dead.clone(),
            live.clone(),
        ]))
        .unwrap();
        let reply = client
            .get(&["catalog", "services"], &[], None)
            .await
            .unwrap();
        assert!(reply.call.ends_with(&live), "{}", reply.call);
        // The agent that answered is asked first next time; when it is gone
        // too, the error names the last and lists the unreachable ones.
        let err = client
            .get(&["catalog", "services"], &[], None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&live) && err.contains("also unreachable") && err.contains(&dead),
            "{err}"
        );
    }

    #[test]
    fn the_token_never_shows() {
        let t = Token::new("s3cr3t-token\n");
        let cfg = ClientConfig {
            addresses: vec!["127.0.0.1:8500".into()],
            token: Some(t.clone()),
            ca_file: None,
            client_cert: None,
            client_key: None,
            request_timeout: Duration::from_secs(1),
            max_body: 1024,
        };
        let client = ConsulClient::new(&cfg).unwrap();
        for text in [format!("{t:?}"), format!("{cfg:?}"), format!("{client:?}")] {
            assert!(!text.contains("s3cr3t"), "{text}");
        }
        assert_eq!(t.0, "s3cr3t-token");
    }
}
