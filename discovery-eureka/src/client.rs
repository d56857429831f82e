//! The Eureka REST client: `GET {base}/apps` and `{base}/apps/delta` in
//! JSON, with basic auth, a bounded body, and fail-over across the servers
//! of a cluster.
//!
//! Like Eureka's own client, it sticks to the server that answered last and
//! moves on to the next one only when that server fails.

use std::{fmt, time::Duration};

use reqwest::{StatusCode, header};

use crate::{
    config::Server,
    model::{AppsDoc, parse_apps},
};

/// A client of one Eureka cluster.
pub(crate) struct Client {
    http: reqwest::Client,
    servers: Vec<Server>,
    current: usize,
    max_body: usize,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The server answered with a client-error status: the request itself
    /// was refused (a delta fetch refused means "fetch everything").
    #[error("GET {url}: Eureka answered {status}")]
    Refused { url: String, status: StatusCode },
    /// Every server failed; one message each.
    #[error("{}", .0.join("; "))]
    AllFailed(Vec<String>),
}

/// Why one server failed one request.
#[derive(Debug)]
enum Failure {
    Transport(reqwest::Error),
    Status(StatusCode),
    TooLarge(usize),
    Body(String),
}

// === impl Client ===

impl Client {
    pub(crate) fn new(
        servers: Vec<Server>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Self, reqwest::Error> {
        // reqwest's rustls carries no crypto provider and panics without
        // one: make sure there is one, whoever embeds this library.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!(
                "tributary-discovery-eureka/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            http,
            servers,
            current: 0,
            max_body,
        })
    }

    /// The whole registry.
    pub(crate) async fn full(&mut self) -> Result<AppsDoc, FetchError> {
        self.get("apps").await
    }

    /// The registry's recent changes.
    pub(crate) async fn delta(&mut self) -> Result<AppsDoc, FetchError> {
        self.get("apps/delta").await
    }

    /// Tries each server once, starting with the current one; the first
    /// good answer (or refusal) wins and its server becomes current.
    async fn get(&mut self, path: &str) -> Result<AppsDoc, FetchError> {
        let n = self.servers.len();
        let mut failures = Vec::new();
        for attempt in 0..n {
            let index = (self.current + attempt) % n;
            let server = &self.servers[index];
            let url = match server.base.join(path) {
                Ok(u) => u,
                Err(e) => {
                    failures.push(format!("{}{path}: {e}", server.base));
                    continue;
                }
            };
            match self.get_one(server, &url).await {
                Ok(doc) => {
                    if index != self.current {
                        tracing::info!(server = %server.base, "switched to another Eureka server");
                        self.current = index;
                    }
                    return Ok(doc);
                }
                Err(Failure::Status(status)) if status.is_client_error() => {
                    self.current = index;
                    return Err(FetchError::Refused {
                        url: url.to_string(),
                        status,
                    });
                }
                Err(f) => {
                    tracing::debug!(%url, error = %f, "Eureka server failed");
                    failures.push(format!("GET {url}: {f}"));
                }
            }
        }
        self.current = (self.current + 1) % n.max(1);
        Err(FetchError::AllFailed(failures))
    }

    async fn get_one(&self, server: &Server, url: &reqwest::Url) -> Result<AppsDoc, Failure> {
        let mut req = self
            .http
            .get(url.clone())
            .header(header::ACCEPT, "application/json");
        if let Some(c) = &server.credentials {
            req = req.basic_auth(&c.username, Some(c.password()));
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| Failure::Transport(e.without_url()))?;
        if resp.status() != StatusCode::OK {
            return Err(Failure::Status(resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|l| l > self.max_body as u64)
        {
            return Err(Failure::TooLarge(self.max_body));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Failure::Transport(e.without_url()))?
        {
            if body.len() + chunk.len() > self.max_body {
                return Err(Failure::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        parse_apps(&body).map_err(Failure::Body)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // reqwest's message plus its causes ("connection refused"...).
            Failure::Transport(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
            Failure::Status(s) => write!(f, "Eureka answered {s}"),
            Failure::TooLarge(limit) => write!(
                f,
                "response body is larger than the limit of {limit} bytes (--max-body-size)"
            ),
            Failure::Body(why) => write!(f, "unreadable response: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A one-trick HTTP/1.1 server: every request gets `reply`, counted.
    async fn serve(reply: String) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        (format!("http://{addr}/eureka/"), hits)
    }

    fn reply(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn client(urls: &[&str], max_body: usize) -> Client {
        let servers = urls
            .iter()
            .map(|u| Server {
                base: reqwest::Url::parse(u).unwrap(),
                credentials: None,
            })
            .collect();
        Client::new(servers, Duration::from_secs(5), max_body).unwrap()
    }

    const EMPTY: &str = r#"{"applications":{"apps__hashcode":"","application":[]}}"#;

    #[tokio::test]
    async fn fails_over_and_sticks_to_the_server_that_answers() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/eureka/", l.local_addr().unwrap())
        };
        let (broken, broken_hits) = serve(reply("503 Service Unavailable", "")).await;
        let (good, good_hits) = serve(reply("200 OK", EMPTY)).await;
        let mut c = client(&[&dead, &broken, &good], 1 << 20);
        c.full().await.unwrap();
        c.delta().await.unwrap();
        assert_eq!(
            broken_hits.load(Ordering::SeqCst),
            1,
            "tried once, then skipped"
        );
        assert_eq!(good_hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refusal_is_an_answer_and_everything_else_names_each_server() {
        let (refusing, _) = serve(reply("403 Forbidden", "")).await;
        let (good, good_hits) = serve(reply("200 OK", EMPTY)).await;
        let mut c = client(&[&refusing, &good], 1 << 20);
        let err = c.delta().await.unwrap_err();
        assert!(matches!(err, FetchError::Refused { .. }), "{err}");
        assert_eq!(
            good_hits.load(Ordering::SeqCst),
            0,
            "a 4xx does not fail over"
        );

        let big = format!(r#"{{"applications":{{"x":"{}"}}}}"#, "y".repeat(2000));
        let (large, _) = serve(reply("200 OK", &big)).await;
        let (xml, _) = serve(reply("200 OK", "<applications/>")).await;
        let err = client(&[&large, &xml], 1000)
            .full()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than the limit of 1000 bytes"), "{err}");
        assert!(err.contains("the body is XML"), "{err}");
        assert!(err.contains(&format!("GET {large}apps")), "{err}");
    }
}
