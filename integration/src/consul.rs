//! A real Consul agent for tests (`consul agent -dev`, installed by
//! `scripts/install-consul`): every port chosen by the test and written to a
//! JSON config in a temporary directory, update checks off, data in that
//! directory; services registered and TTL checks flipped through the agent's
//! HTTP API. [`ConsulControl`] drives it for the conformance suite.
//!
//! The agent can be stopped and started again on the same ports with fresh
//! data ([`Consul::restart_fresh`]), so that its index goes back.

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    conformance::{RegistryControl, TestEndpoint},
    process::Process,
};

/// How long an agent gets to elect itself leader.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The node name of every test agent; endpoint ids are `NODE/service-id`.
pub const CONSUL_NODE: &str = "tributary-test";

/// A running dev agent, stopped (by its pid) when dropped.
#[derive(Debug)]
pub struct Consul {
    process: Option<Process>,
    ports: ConsulPorts,
    /// Config entries given by the test; `ports` entries add to the ports.
    extra: Value,
    dir: tempfile::TempDir,
    generation: u32,
    http: reqwest::Client,
}

/// The agent's ports, all on 127.0.0.1.
#[derive(Clone, Copy, Debug)]
pub struct ConsulPorts {
    /// HTTP API.
    pub http: u16,
    /// DNS interface.
    pub dns: u16,
    /// Server RPC.
    pub server: u16,
    /// LAN gossip.
    pub serf_lan: u16,
    /// WAN gossip.
    pub serf_wan: u16,
}

/// A [`RegistryControl`] over a [`Consul`] agent: the test service holds a
/// placeholder instance (a Consul service exists only while it has one), and
/// suite endpoints are registered with their `address:port` as service id.
#[derive(Debug)]
pub struct ConsulControl<'a> {
    consul: &'a Consul,
    service: String,
    missing: String,
}

/// The `consul` binary, installed by `scripts/install-consul` when missing.
pub fn consul_binary() -> Result<PathBuf> {
    crate::install_tool("install-consul")
}

// === impl ConsulPorts ===

impl ConsulPorts {
    /// Five loopback ports that were free a moment ago.
    pub fn free() -> Result<Self> {
        let mut held = Vec::new();
        let mut port = || -> Result<u16> {
            let l = TcpListener::bind("127.0.0.1:0").context("cannot bind a probe socket")?;
            let p = l.local_addr()?.port();
            held.push(l);
            Ok(p)
        };
        Ok(Self {
            http: port()?,
            dns: port()?,
            server: port()?,
            serf_lan: port()?,
            serf_wan: port()?,
        })
    }
}

// === impl Consul ===

impl Consul {
    /// Starts an agent on free ports and waits until it leads.
    pub async fn start() -> Result<Self> {
        Self::start_with(json!({})).await
    }

    /// Starts an agent with these config entries added (for example TLS
    /// files and `"ports": {"https": N}`) and waits until it leads.
    pub async fn start_with(extra: Value) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        let mut consul = Self {
            process: None,
            ports: ConsulPorts::free()?,
            extra,
            dir: tempfile::Builder::new()
                .prefix("tributary-consul-")
                .tempdir()?,
            generation: 0,
            http,
        };
        // A port chosen free can be taken (by another test's outgoing
        // connection) before the agent binds it: then try other ports.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match consul.launch().await {
                Ok(()) => return Ok(consul),
                Err(e) if attempts < 3 => {
                    eprintln!("consul did not start ({e:#}); trying other ports");
                    consul.stop();
                    consul.ports = ConsulPorts::free()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The HTTP API address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.http))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The ports.
    pub fn ports(&self) -> ConsulPorts {
        self.ports
    }

    /// Stops the agent (SIGTERM, then SIGKILL) and waits until it is gone.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Stops the agent and starts a new one on the same ports with a fresh
    /// data directory: every registration is gone and the index starts over.
    pub async fn restart_fresh(&mut self) -> Result<()> {
        self.stop();
        self.launch().await
    }

    /// Starts an agent again after [`stop`](Self::stop), with fresh data.
    pub async fn start_again(&mut self) -> Result<()> {
        self.launch().await
    }

    async fn launch(&mut self) -> Result<()> {
        self.generation += 1;
        let data = self.dir.path().join(format!("data-{}", self.generation));
        std::fs::create_dir_all(&data)?;
        let p = self.ports;
        let mut config = json!({
            "node_name": CONSUL_NODE,
            "data_dir": data,
            "disable_update_check": true,
            "log_level": "warn",
            "ports": {
                "http": p.http, "dns": p.dns, "server": p.server,
                "serf_lan": p.serf_lan, "serf_wan": p.serf_wan,
                "grpc": -1, "https": -1,
            },
        });
        if let (Some(config), Some(extra)) = (config.as_object_mut(), self.extra.as_object()) {
            for (k, v) in extra {
                match (k.as_str(), config.get_mut("ports"), v.as_object()) {
                    ("ports", Some(Value::Object(ports)), Some(more)) => {
                        ports.extend(more.clone());
                    }
                    _ => {
                        config.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let config_path = self
            .dir
            .path()
            .join(format!("consul-{}.json", self.generation));
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let mut cmd = Command::new(consul_binary()?);
        cmd.args([
            "agent",
            "-dev",
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
        ])
        .arg("-config-file")
        .arg(&config_path);
        let process = Process::spawn("consul", cmd)?;
        self.process = Some(process);
        self.wait_leader().await?;
        self.wait_node_reconciled().await
    }

    /// Polls `/v1/catalog/node/<node>` until the leader has written the
    /// node's own metadata (`consul-network-segment`) to the catalog. It
    /// does so on its own schedule after the election; a test that took an
    /// adapter's endpoint set before then saw every endpoint's `node.*`
    /// metadata change under it.
    async fn wait_node_reconciled(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("{}/v1/catalog/node/{CONSUL_NODE}", self.url());
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && let Ok(text) = r.text().await
                && let Ok(body) = serde_json::from_str::<Value>(&text)
                && body
                    .pointer("/Node/Meta")
                    .and_then(Value::as_object)
                    .is_some_and(|m| m.contains_key("consul-network-segment"))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "consul at {} did not list node {CONSUL_NODE} with its metadata \
                     within {START_TIMEOUT:?}",
                    self.url()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/v1/status/leader` until the agent names a leader.
    async fn wait_leader(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("{}/v1/status/leader", self.url());
        loop {
            if let Some(p) = &self.process
                && let Some(status) = p.try_exit()?
            {
                bail!(
                    "consul exited with {status} before it was ready:\n{}",
                    p.stderr_tail(40)
                );
            }
            if let Ok(r) = self.http.get(&url).send().await
                && let Ok(text) = r.text().await
                && text.trim().trim_matches('"').contains(':')
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "consul at {} had no leader within {START_TIMEOUT:?}",
                    self.url()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `PUT /v1/agent/…` with an optional JSON body; fails on any status
    /// but 200, with Consul's message.
    pub async fn agent_put(&self, path: &str, body: Option<&Value>) -> Result<()> {
        let url = format!("{}/v1/agent/{path}", self.url());
        let mut req = self.http.put(&url);
        if let Some(b) = body {
            req = req.body(serde_json::to_vec(b)?);
        }
        let resp = req.send().await.with_context(|| format!("PUT {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("PUT {url} answered {status}: {text}");
        }
        Ok(())
    }

    /// Registers a service instance with the agent (`Service` JSON as the
    /// agent API takes it).
    pub async fn register(&self, service: &Value) -> Result<()> {
        self.agent_put("service/register", Some(service)).await
    }

    /// Registers instance `id` of `name` at `address:port` with weight
    /// `weight` and a TTL check `<id>-ttl`, which starts `passing`.
    pub async fn register_ttl(
        &self,
        name: &str,
        id: &str,
        address: &str,
        port: u16,
        weight: u32,
    ) -> Result<()> {
        self.register(&json!({
            "ID": id, "Name": name, "Address": address, "Port": port,
            "Weights": {"Passing": weight, "Warning": 1},
            "Check": {"CheckID": format!("{id}-ttl"), "TTL": "10m", "Status": "passing"},
        }))
        .await
    }

    /// Deregisters service instance `id`.
    pub async fn deregister(&self, id: &str) -> Result<()> {
        self.agent_put(&format!("service/deregister/{id}"), None)
            .await
    }

    /// Sets TTL check `check_id` to `pass`, `warn` or `fail`.
    pub async fn set_check(&self, check_id: &str, state: &str) -> Result<()> {
        self.agent_put(&format!("check/{state}/{check_id}"), None)
            .await
    }

    /// The agent's standard error so far, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map_or_else(|| "(consul is stopped)".into(), |p| p.stderr_tail(40))
    }
}

// === impl ConsulControl ===

impl<'a> ConsulControl<'a> {
    /// A control of service `service` (given a placeholder instance, id
    /// `placeholder`, at 127.0.0.1:47000) and a `missing` service.
    pub async fn new(consul: &'a Consul, service: &str, missing: &str) -> Result<Self> {
        consul
            .register_ttl(service, "placeholder", "127.0.0.1", 47_000, 1)
            .await?;
        Ok(Self {
            consul,
            service: service.into(),
            missing: missing.into(),
        })
    }
}

impl RegistryControl for ConsulControl<'_> {
    fn service(&self) -> &str {
        &self.service
    }

    fn missing_service(&self) -> &str {
        &self.missing
    }

    fn endpoint_id(&self, endpoint: &TestEndpoint) -> String {
        format!("{CONSUL_NODE}/{}", endpoint.id)
    }

    async fn add(&self, ep: &TestEndpoint) -> Result<()> {
        self.consul
            .register_ttl(&self.service, &ep.id, &ep.address, ep.port, ep.weight)
            .await
    }

    async fn change(&self, ep: &TestEndpoint) -> Result<()> {
        self.add(ep).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.consul.deregister(id).await
    }
}
