//! The Nacos v1 HTTP API: the instance-list query (the poll mode, the
//! fall-back while no gRPC session can be had), the service-existence check,
//! and the login that yields the access token, with fail-over across the
//! configured servers and a size limit on every body.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

use crate::{
    config::{Credentials, NacosConfig, ServerAddr},
    model::{Login, ServiceInfo, ServicePage, parse},
    target::ServiceKey,
};

/// A refused login is not retried sooner than this, whoever asks.
const LOGIN_RETRY: Duration = Duration::from_secs(2);

/// Most pages a service listing reads.
const MAX_PAGES: u64 = 100;

/// Token lifetime assumed when the server gives none (Nacos' default).
const DEFAULT_TOKEN_TTL: u64 = 18_000;

/// The HTTP side of the Nacos servers.
pub(crate) struct Http {
    client: reqwest::Client,
    servers: Vec<ServerAddr>,
    /// The server that answered last; requests start there.
    preferred: AtomicUsize,
    max_body: usize,
    auth: Option<Auth>,
}

/// The credentials and the token they last gave.
struct Auth {
    credentials: Credentials,
    state: Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    token: Option<Token>,
    refused: Option<(Instant, String)>,
}

struct Token {
    value: String,
    refresh_at: Instant,
}

/// A response read whole (within the size limit).
struct Reply {
    server: String,
    status: u16,
    body: Vec<u8>,
}

// === impl Http ===

impl Http {
    pub(crate) fn new(cfg: &NacosConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(cfg.request_timeout)
            .timeout(cfg.request_timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            client,
            servers: cfg.servers.clone(),
            preferred: AtomicUsize::new(0),
            max_body: cfg.max_body,
            auth: cfg.credentials.clone().map(|credentials| Auth {
                credentials,
                state: Mutex::new(AuthState::default()),
            }),
        })
    }

    /// The instances of a service, healthy or not (the watch filters).
    pub(crate) async fn instances(&self, key: &ServiceKey) -> Result<ServiceInfo, String> {
        let query = format!(
            "/nacos/v1/ns/instance/list?serviceName={}&groupName={}&namespaceId={}&clusters={}&healthyOnly=false",
            key.service,
            key.group,
            key.namespace,
            key.clusters_param()
        );
        let what = format!("instance list of {}", key.label());
        let reply = self.get(&query, &what).await?;
        if reply.status != 200 {
            return Err(status_error(&what, &reply));
        }
        parse(&format!("{what} from {}", reply.server), &reply.body)
    }

    /// The names of the services of a namespace and group, every page.
    pub(crate) async fn services(&self, key: &ServiceKey) -> Result<Vec<String>, String> {
        const PAGE: u64 = 500;
        let mut names = Vec::new();
        for page in 1..=MAX_PAGES {
            let query = format!(
                "/nacos/v1/ns/service/list?pageNo={page}&pageSize={PAGE}&namespaceId={}&groupName={}",
                key.namespace, key.group
            );
            let what = format!("service list of {}/{}", key.namespace, key.group);
            let reply = self.get(&query, &what).await?;
            if reply.status != 200 {
                return Err(status_error(&what, &reply));
            }
            let p: ServicePage = parse(&format!("{what} from {}", reply.server), &reply.body)?;
            let last = p.doms.len() < PAGE as usize;
            names.extend(p.doms);
            if last || names.len() as u64 >= p.count {
                return Ok(names);
            }
        }
        Err(format!(
            "more than {} services: listing stopped",
            PAGE * MAX_PAGES
        ))
    }

    /// Whether the server knows the service (with or without instances).
    pub(crate) async fn exists(&self, key: &ServiceKey) -> Result<bool, String> {
        // The grouped name: rnacos reads the group from it, not groupName.
        let query = format!(
            "/nacos/v1/ns/service?serviceName={}@@{}&groupName={}&namespaceId={}",
            key.group, key.service, key.group, key.namespace
        );
        let what = format!("service {}", key.label());
        let reply = self.get(&query, &what).await?;
        if reply.status == 200 {
            return Ok(true);
        }
        let text = String::from_utf8_lossy(&reply.body).to_ascii_lowercase();
        // Nacos answers 400 or 404, rnacos 500, naming the missing service.
        if (400..=500).contains(&reply.status)
            && (text.contains("not found") || text.contains("not exist"))
        {
            return Ok(false);
        }
        Err(status_error(&what, &reply))
    }

    /// The access token to send, logging in when there is none or it is due
    /// for refresh; `None` without credentials.
    pub(crate) async fn token(&self) -> Result<Option<String>, String> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let mut state = auth.state.lock().await;
        if let Some(t) = &state.token
            && Instant::now() < t.refresh_at
        {
            return Ok(Some(t.value.clone()));
        }
        if let Some((at, why)) = &state.refused
            && at.elapsed() < LOGIN_RETRY
        {
            return Err(why.clone());
        }
        match self.login(&auth.credentials).await {
            Ok(token) => {
                let value = token.value.clone();
                state.token = Some(token);
                state.refused = None;
                Ok(Some(value))
            }
            Err(e) => {
                state.token = None;
                state.refused = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Forgets the token after a server refused it.
    pub(crate) async fn invalidate_token(&self) {
        if let Some(auth) = &self.auth {
            auth.state.lock().await.token = None;
        }
    }

    async fn login(&self, c: &Credentials) -> Result<Token, String> {
        let body = format!(
            "username={}&password={}",
            form_encode(&c.username),
            form_encode(&c.password)
        );
        let what = format!("login as {:?}", c.username);
        let started = Instant::now();
        let reply = self
            .send(&what, |base| {
                self.client
                    .post(format!("{base}/nacos/v1/auth/login"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body.clone())
            })
            .await?;
        match reply.status {
            200 => {
                let login: Login = parse(&format!("{what} answer"), &reply.body)?;
                let ttl = login.token_ttl.unwrap_or(DEFAULT_TOKEN_TTL).max(1);
                // Refresh when 80% of the lifetime has passed.
                let refresh = Duration::from_millis(ttl * 800);
                tracing::info!(server = %reply.server, ttl_secs = ttl, "logged in to nacos");
                Ok(Token {
                    value: login.access_token,
                    refresh_at: started + refresh,
                })
            }
            401 | 403 => Err(format!(
                "{what} refused by {} (HTTP {}: {}): is the user name or password wrong?",
                reply.server,
                reply.status,
                head(&reply.body)
            )),
            _ => Err(status_error(&what, &reply)),
        }
    }

    /// `GET base + path_and_query` with the token, once more with a fresh
    /// token if the server refuses the one sent.
    async fn get(&self, path_and_query: &str, what: &str) -> Result<Reply, String> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let reply = self
                .send(what, |base| {
                    let req = self.client.get(format!("{base}{path_and_query}"));
                    match &token {
                        Some(t) => req.header("accessToken", t),
                        None => req,
                    }
                })
                .await?;
            if reply.status == 403 && token.is_some() && attempt == 0 {
                self.invalidate_token().await;
                continue;
            }
            return Ok(reply);
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Sends to each server in turn, from the preferred one, until one
    /// answers; a server that cannot be reached is skipped.
    async fn send(
        &self,
        what: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Reply, String> {
        let n = self.servers.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        let mut errors = Vec::new();
        for i in 0..n {
            let idx = (first + i) % n;
            let server = &self.servers[idx];
            match self.read(build(&server.base)).await {
                Ok((status, body)) if !matches!(status, 502..=504) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(Reply {
                        server: server.base.clone(),
                        status,
                        body,
                    });
                }
                Ok((status, body)) => {
                    errors.push(format!("{}: HTTP {status}: {}", server.base, head(&body)))
                }
                Err(e) => errors.push(format!("{}: {e}", server.base)),
            }
        }
        Err(format!(
            "{what}: no nacos server answered ({})",
            errors.join("; ")
        ))
    }

    async fn read(&self, req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), String> {
        let mut resp = req.send().await.map_err(describe)?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(format!(
                    "response body larger than the {} byte limit (--max-body-size)",
                    self.max_body
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

fn status_error(what: &str, r: &Reply) -> String {
    format!(
        "{what} from {}: HTTP {}: {}",
        r.server,
        r.status,
        head(&r.body)
    )
}

/// The start of a body, for error messages.
fn head(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.trim().to_string()
}

/// A reqwest error with its causes (connection refused, timed out...).
fn describe(e: reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(form_encode("nacos_1.x"), "nacos_1.x");
    }
}
