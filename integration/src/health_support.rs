//! Support for the sidecar's health-check tests: demo backends that can be
//! killed and started again on the same port, a sidecar started from a
//! config in a temporary directory, a small HTTP/1.1 client, and polling of
//! `/upstreams` with a deadline.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;

use crate::process::{Process, workspace_binary};

/// How long a process gets to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A `demo-backend` process.
#[derive(Debug)]
pub struct Backend {
    process: Process,
    name: String,
    addr: SocketAddr,
}

/// A `sidecar` process and the addresses it listens on.
#[derive(Debug)]
pub struct Sidecar {
    process: Process,
    admin: SocketAddr,
    listeners: HashMap<String, SocketAddr>,
    client: HttpClient,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

/// A pooled HTTP/1.1 client for tests.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A response as a test looks at it.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// The `x-backend` header: which demo backend answered.
    pub backend: Option<String>,
    /// The body as text.
    pub body: String,
}

// === impl Backend ===

impl Backend {
    /// Starts a demo backend named `name` on a port the OS picks.
    pub async fn start(name: &str) -> Result<Self> {
        Self::start_at(name, "127.0.0.1:0".parse()?).await
    }

    /// Starts a demo backend on `addr` (the port of one that was killed).
    pub async fn start_at(name: &str, addr: SocketAddr) -> Result<Self> {
        let mut cmd = Command::new(workspace_binary("demo-backend")?);
        cmd.args(["--name", name, "--listen", &addr.to_string()]);
        let mut process = Process::spawn(name, cmd)?;
        let line = process.next_line(START_TIMEOUT).await?;
        let addr = line
            .strip_prefix("listening http=")
            .ok_or_else(|| anyhow!("{name}: unexpected first line {line:?}"))?
            .trim()
            .parse()
            .with_context(|| format!("{name}: bad address in {line:?}"))?;
        Ok(Self {
            process,
            name: name.to_string(),
            addr,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name, as in `x-backend`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub async fn kill(self) -> Result<SocketAddr> {
        self.process.kill()?;
        self.process.wait_exit(Duration::from_secs(5)).await?;
        Ok(self.addr)
    }

    /// Sets the status its `/health` answers, and with it its gRPC health
    /// (`SERVING` for 2xx).
    pub async fn set_health(&self, client: &HttpClient, status: u16) -> Result<()> {
        let r = get(client, self.addr, &format!("/set-health/{status}")).await?;
        if r.status != 200 {
            bail!("{}: /set-health/{status} answered {}", self.name, r.status);
        }
        Ok(())
    }
}

// === impl Sidecar ===

impl Sidecar {
    /// Starts the sidecar with `config` (YAML; give the admin and every
    /// listener port 0) and waits for its `listening` line.
    pub async fn start(config: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tributary-sidecar-")
            .tempdir()?;
        let path = dir.path().join("sidecar.yaml");
        std::fs::write(&path, config)?;
        let mut cmd = Command::new(workspace_binary("sidecar")?);
        cmd.arg("--config").arg(&path).env("NO_COLOR", "1");
        let mut process = Process::spawn("sidecar", cmd)?;
        let line = process.next_line(START_TIMEOUT).await?;
        let rest = line
            .strip_prefix("listening ")
            .ok_or_else(|| anyhow!("sidecar: unexpected first line {line:?}"))?;
        let mut admin = None;
        let mut listeners = HashMap::new();
        for part in rest.split_whitespace() {
            let (name, addr) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("sidecar: bad listening line {line:?}"))?;
            let addr: SocketAddr = addr.parse()?;
            if name == "admin" {
                admin = Some(addr);
            } else {
                listeners.insert(name.to_string(), addr);
            }
        }
        Ok(Self {
            process,
            admin: admin.ok_or_else(|| anyhow!("sidecar: no admin address in {line:?}"))?,
            listeners,
            client: client(),
            config: path,
            _dir: dir,
        })
    }

    /// The address of listener `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners[name]
    }

    /// The process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Replaces the config file and reloads it (SIGHUP).
    pub fn reload(&self, config: &str) -> Result<()> {
        std::fs::write(&self.config, config)?;
        let status = Command::new("kill")
            .args(["-s", "HUP", &self.process.pid().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -s HUP failed: {status}");
        }
        Ok(())
    }

    /// `GET path` through listener `listener`.
    pub async fn get(&self, listener: &str, path: &str) -> Result<Reply> {
        get(&self.client, self.listener(listener), path).await
    }

    /// `/upstreams`, parsed.
    pub async fn upstreams(&self) -> Result<Value> {
        let r = get(&self.client, self.admin, "/upstreams").await?;
        serde_json::from_str(&r.body).context("/upstreams is not JSON")
    }

    /// The `/upstreams` entry of upstream `name`.
    pub async fn upstream(&self, name: &str) -> Result<Value> {
        let all = self.upstreams().await?;
        all["upstreams"]
            .as_array()
            .and_then(|ups| ups.iter().find(|u| u["name"] == name))
            .cloned()
            .ok_or_else(|| anyhow!("no upstream {name:?} in /upstreams: {all}"))
    }

    /// The `/upstreams` entry of the endpoint at `addr` in upstream `name`.
    pub async fn endpoint(&self, name: &str, addr: SocketAddr) -> Result<Value> {
        let up = self.upstream(name).await?;
        up["endpoints"]
            .as_array()
            .and_then(|eps| eps.iter().find(|e| e["address"] == addr.to_string()))
            .cloned()
            .ok_or_else(|| anyhow!("no endpoint {addr} in upstream {name:?}: {up}"))
    }

    /// Polls the endpoint until it is in the set and `pred` holds; returns
    /// its entry and how long that took. Fails after `timeout`, showing the
    /// last entry.
    pub async fn wait_endpoint(
        &self,
        name: &str,
        addr: SocketAddr,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(Value, Duration)> {
        let start = Instant::now();
        loop {
            let last = match self.endpoint(name, addr).await {
                Ok(e) if pred(&e) => return Ok((e, start.elapsed())),
                Ok(e) => format!("{e:#}"),
                Err(e) => format!("{e:#}"),
            };
            if start.elapsed() > timeout {
                bail!("{addr} not {what} within {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the upstream until `pred` holds. Fails after `timeout`.
    pub async fn wait_upstream(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let start = Instant::now();
        loop {
            let u = self.upstream(name).await?;
            if pred(&u) {
                return Ok(u);
            }
            if start.elapsed() > timeout {
                bail!("upstream {name} not {what} within {timeout:?}: {u:#}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Adds the tail of the sidecar's standard error to an error.
    pub fn explain<T>(&self, result: Result<T>) -> Result<T> {
        self.process.explain(result)
    }
}

/// A pooled HTTP/1.1 client.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET path` from `addr`, the whole body read, within 10 s.
pub async fn get(client: &HttpClient, addr: SocketAddr, path: &str) -> Result<Reply> {
    let uri: hyper::Uri = format!("http://{addr}{path}").parse()?;
    let exchange = async {
        let resp = client.get(uri.clone()).await?;
        let status = resp.status().as_u16();
        let backend = resp
            .headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok(Reply {
            status,
            backend,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow!("GET {uri}: no answer within 10 s"))?
        .with_context(|| format!("GET {uri}"))
}

/// The state of one check of an endpoint entry: `checks.<check>.verdict`,
/// or for `registry` its value.
pub fn verdict<'v>(endpoint: &'v Value, check: &str) -> &'v str {
    let v = &endpoint["checks"][check];
    v["verdict"].as_str().or(v.as_str()).unwrap_or("none")
}
