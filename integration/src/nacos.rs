//! A real Nacos server for tests: `rnacos` (installed by
//! `scripts/install-rnacos`), started on loopback ports chosen here with its
//! data in a temporary directory, stopped and restarted on the same ports,
//! and changed through its v1 open API (register, update, beat, deregister)
//! like an application would. [`NacosControl`] drives the conformance suite
//! through the same API.

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

use crate::{
    conformance::{RegistryControl, TestEndpoint},
    process::Process,
};

/// How long the server gets to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A running rnacos server (or a stopped one that can start again).
pub struct Nacos {
    bin: PathBuf,
    dir: tempfile::TempDir,
    http_port: u16,
    grpc_port: u16,
    console_port: u16,
    env: Vec<(String, String)>,
    process: Option<Process>,
    client: reqwest::Client,
    admin: Option<(String, String)>,
    token: Mutex<Option<String>>,
    /// Whether it ever started well (its data is then worth keeping).
    started: bool,
}

/// One instance, as the open API registers it.
#[derive(Clone, Debug)]
pub struct NacosInstance {
    /// Namespace id; empty for the default namespace.
    pub namespace: String,
    /// Group; empty for `DEFAULT_GROUP`.
    pub group: String,
    /// Service name.
    pub service: String,
    /// IP address.
    pub ip: String,
    /// Port.
    pub port: u16,
    /// Weight.
    pub weight: f64,
    /// Enabled (takes traffic).
    pub enabled: bool,
    /// Ephemeral (expires without beats) or persistent.
    pub ephemeral: bool,
    /// Cluster; empty for `DEFAULT`.
    pub cluster: String,
    /// Metadata, as a JSON object text; empty for none.
    pub metadata: String,
}

/// The conformance suite's [`RegistryControl`] over a [`Nacos`] server: the
/// test service holds a persistent placeholder instance (`127.0.0.1:47000`)
/// so that it exists, and the suite's endpoints are persistent instances.
pub struct NacosControl<'a> {
    nacos: &'a Nacos,
    service: String,
    missing: String,
}

// === impl Nacos ===

impl Nacos {
    /// Starts rnacos with the test defaults (persistent-instance probing
    /// off, so that instances at addresses where nothing listens keep their
    /// health) and `env` on top. With `RNACOS_ENABLE_OPEN_API_AUTH=true`, the
    /// test's own calls log in as `RNACOS_INIT_ADMIN_USERNAME`/`PASSWORD`.
    pub async fn start(env: &[(&str, &str)]) -> Result<Self> {
        let bin = crate::install_tool("install-rnacos")?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("tributary-rnacos-")
            .tempdir()
            .context("cannot create rnacos' data directory")?;
        let mut n = Self {
            bin,
            dir,
            http_port: free_port()?,
            grpc_port: free_port()?,
            console_port: free_port()?,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            process: None,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(CALL_TIMEOUT)
                .build()?,
            admin: None,
            token: Mutex::new(None),
            started: false,
        };
        let var = |k: &str| {
            env.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        };
        if var("RNACOS_ENABLE_OPEN_API_AUTH").as_deref() == Some("true") {
            n.admin = Some((
                var("RNACOS_INIT_ADMIN_USERNAME").unwrap_or_else(|| "admin".into()),
                var("RNACOS_INIT_ADMIN_PASSWORD").unwrap_or_else(|| "admin".into()),
            ));
        }
        n.restart().await?;
        Ok(n)
    }

    /// The HTTP API's address.
    pub fn http(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// gRPC port minus HTTP port, for `--grpc-port-offset`.
    pub fn grpc_port_offset(&self) -> i32 {
        i32::from(self.grpc_port) - i32::from(self.http_port)
    }

    /// `--nacos-addr` and `--grpc-port-offset` for `discovery-nacos`.
    pub fn adapter_args(&self) -> Vec<String> {
        vec![
            "--nacos-addr".into(),
            self.http().to_string(),
            format!("--grpc-port-offset={}", self.grpc_port_offset()),
        ]
    }

    /// Logs the test's own API calls in as this user (servers started with
    /// `RNACOS_ENABLE_OPEN_API_AUTH=true`).
    pub fn set_admin(&mut self, user: &str, password: &str) {
        self.admin = Some((user.into(), password.into()));
    }

    /// Stops the server (SIGTERM, then SIGKILL), keeping its ports and data.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the server again on the same ports with the same data, and
    /// waits until both APIs answer.
    pub async fn restart(&mut self) -> Result<()> {
        // rnacos 0.8.8 sometimes panics in its raft state machine while it
        // starts (an actor used before it is wired up); that server never
        // stores persistent data or logs anyone in. Start it again then.
        let mut last = None;
        for _ in 0..8 {
            self.spawn_once().await?;
            match self.probe().await {
                Ok(()) => {
                    self.started = true;
                    return Ok(());
                }
                Err(e) => {
                    eprintln!("rnacos started broken ({e:#}); starting it again");
                    last = Some(e);
                    if !self.started {
                        // Nothing to keep yet, and its half-made raft store
                        // would not elect a leader again.
                        self.process = None;
                        let data = self.dir.path().join("data");
                        if data.exists() {
                            std::fs::remove_dir_all(&data)
                                .with_context(|| format!("cannot remove {}", data.display()))?;
                        }
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("rnacos did not start")))
    }

    /// Registers and deregisters a persistent instance in a namespace of its
    /// own: it goes through the server's raft store (and its login).
    async fn probe(&self) -> Result<()> {
        let mut i = NacosInstance::new("tributary-probe", "127.0.0.1", 1);
        i.namespace = "tributary-probe".into();
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let r = async {
                self.register(&i).await?;
                self.deregister(&i).await
            }
            .await;
            match r {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn spawn_once(&mut self) -> Result<()> {
        self.process = None;
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(self.dir.path())
            .env("RNACOS_HTTP_PORT", self.http_port.to_string())
            .env("RNACOS_GRPC_PORT", self.grpc_port.to_string())
            .env("RNACOS_HTTP_CONSOLE_PORT", self.console_port.to_string())
            .env(
                "RNACOS_RAFT_NODE_ADDR",
                format!("127.0.0.1:{}", self.grpc_port),
            )
            .env("RNACOS_DATA_DIR", self.dir.path().join("data"))
            .env("RNACOS_SDK_HOST", "127.0.0.1")
            .env("RNACOS_CONSOLE_HOST", "127.0.0.1")
            .env("RNACOS_HTTP_WORKERS", "2")
            .env("RNACOS_ENABLE_METRICS", "false")
            .env(
                "RNACOS_NAMING_PERPETUAL_INSTANCE_PROBE_INTERVAL_SECOND",
                "0",
            )
            .env("RUST_LOG", "warn");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let process = Process::spawn("rnacos", cmd)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = process.try_exit()? {
                return process.explain(Err(anyhow!("rnacos exited at start: {status}")));
            }
            let grpc_up =
                std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], self.grpc_port)))
                    .is_ok();
            let http_up = self
                .client
                .get(format!(
                    "http://{}/nacos/v1/ns/instance/list?serviceName=tributary-probe",
                    self.http()
                ))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200 || r.status().as_u16() == 403);
            if grpc_up && http_up {
                break;
            }
            if Instant::now() >= deadline {
                return process.explain(Err(anyhow!(
                    "rnacos did not answer on {} within {START_TIMEOUT:?}",
                    self.http()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.process = Some(process);
        *self.token.lock().expect("token lock") = None;
        Ok(())
    }

    /// The server process, while it runs.
    pub fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    /// Registers (or re-registers) an instance: `POST /nacos/v1/ns/instance`.
    pub async fn register(&self, i: &NacosInstance) -> Result<()> {
        self.instance_call(reqwest::Method::POST, "/nacos/v1/ns/instance", i)
            .await
    }

    /// Changes an instance's weight, enabled flag or metadata:
    /// `PUT /nacos/v1/ns/instance`.
    pub async fn update(&self, i: &NacosInstance) -> Result<()> {
        self.instance_call(reqwest::Method::PUT, "/nacos/v1/ns/instance", i)
            .await
    }

    /// Deregisters an instance: `DELETE /nacos/v1/ns/instance`.
    pub async fn deregister(&self, i: &NacosInstance) -> Result<()> {
        self.instance_call(reqwest::Method::DELETE, "/nacos/v1/ns/instance", i)
            .await
    }

    /// One heartbeat of an ephemeral instance: `PUT /nacos/v1/ns/instance/beat`.
    pub async fn beat(&self, i: &NacosInstance) -> Result<()> {
        self.instance_call(reqwest::Method::PUT, "/nacos/v1/ns/instance/beat", i)
            .await
    }

    /// `GET path` (with the query), returning status and body.
    pub async fn get(&self, path_and_query: &str) -> Result<(u16, String)> {
        self.call(reqwest::Method::GET, path_and_query).await
    }

    async fn instance_call(
        &self,
        method: reqwest::Method,
        path: &str,
        i: &NacosInstance,
    ) -> Result<()> {
        let query = i.query();
        // Right after start the server may still be electing itself leader
        // for persistent data: retry briefly.
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let (status, body) = self
                .call(method.clone(), &format!("{path}?{query}"))
                .await?;
            if status == 200 {
                return Ok(());
            }
            if status == 403 {
                // The test's own token expired: log in again.
                *self.token.lock().expect("token lock") = None;
            }
            if Instant::now() >= deadline {
                bail!("{method} {path}?{query}: HTTP {status}: {body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn call(&self, method: reqwest::Method, path_and_query: &str) -> Result<(u16, String)> {
        let url = format!("http://{}{path_and_query}", self.http());
        let mut req = self.client.request(method.clone(), &url);
        if let Some(token) = self.admin_token().await? {
            req = req.header("accessToken", token);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    async fn admin_token(&self) -> Result<Option<String>> {
        let Some((user, password)) = &self.admin else {
            return Ok(None);
        };
        if let Some(t) = self.token.lock().expect("token lock").clone() {
            return Ok(Some(t));
        }
        // The server creates its first user a moment after it starts.
        let deadline = Instant::now() + CALL_TIMEOUT;
        let token = loop {
            let resp = self
                .client
                .post(format!("http://{}/nacos/v1/auth/login", self.http()))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "username={}&password={}",
                    encode(user),
                    encode(password)
                ))
                .send()
                .await?;
            let status = resp.status();
            let text = resp.text().await?;
            if status.is_success() {
                let json: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("login answer {text:?}"))?;
                break json["accessToken"]
                    .as_str()
                    .ok_or_else(|| anyhow!("login as {user:?}: no token in {json}"))?
                    .to_string();
            }
            if Instant::now() >= deadline || !text.contains("unknown user") {
                bail!("login as {user:?} failed: HTTP {status}: {text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        *self.token.lock().expect("token lock") = Some(token.clone());
        Ok(Some(token))
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// === impl NacosInstance ===

impl NacosInstance {
    /// A persistent instance of weight 1 in the default namespace, group and
    /// cluster.
    pub fn new(service: &str, ip: &str, port: u16) -> Self {
        Self {
            namespace: String::new(),
            group: String::new(),
            service: service.into(),
            ip: ip.into(),
            port,
            weight: 1.0,
            enabled: true,
            ephemeral: false,
            cluster: String::new(),
            metadata: String::new(),
        }
    }

    /// `ip:port`, the id the adapter gives it.
    pub fn id(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    fn query(&self) -> String {
        let mut q = vec![
            ("serviceName", self.service.clone()),
            ("ip", self.ip.clone()),
            ("port", self.port.to_string()),
            ("weight", self.weight.to_string()),
            ("enabled", self.enabled.to_string()),
            ("ephemeral", self.ephemeral.to_string()),
        ];
        for (k, v) in [
            ("namespaceId", &self.namespace),
            ("groupName", &self.group),
            ("clusterName", &self.cluster),
            ("metadata", &self.metadata),
        ] {
            if !v.is_empty() {
                q.push((k, v.clone()));
            }
        }
        q.iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

// === impl NacosControl ===

impl<'a> NacosControl<'a> {
    /// Creates the test service `service` (with its placeholder instance).
    pub async fn new(nacos: &'a Nacos, service: &str, missing: &str) -> Result<Self> {
        nacos
            .register(&NacosInstance::new(service, "127.0.0.1", 47_000))
            .await?;
        Ok(Self {
            nacos,
            service: service.into(),
            missing: missing.into(),
        })
    }

    fn instance(&self, ep: &TestEndpoint) -> NacosInstance {
        let mut i = NacosInstance::new(&self.service, &ep.address, ep.port);
        i.weight = f64::from(ep.weight);
        i
    }
}

impl RegistryControl for NacosControl<'_> {
    fn service(&self) -> &str {
        &self.service
    }

    fn missing_service(&self) -> &str {
        &self.missing
    }

    async fn add(&self, ep: &TestEndpoint) -> Result<()> {
        self.nacos.register(&self.instance(ep)).await
    }

    async fn change(&self, ep: &TestEndpoint) -> Result<()> {
        self.nacos.update(&self.instance(ep)).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let (ip, port) = id
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("endpoint id {id:?} is not ip:port"))?;
        let port = port.parse().with_context(|| format!("port of {id:?}"))?;
        self.nacos
            .deregister(&NacosInstance::new(&self.service, ip, port))
            .await
    }
}
