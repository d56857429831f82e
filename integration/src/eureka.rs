//! The real Eureka server for tests (Spring Cloud Netflix's, built by
//! `scripts/install-eureka`), started on a loopback port of its own, and a
//! client that changes it through its REST API as Eureka clients do:
//! register, heartbeat, status override, cancel. [`EurekaControl`] drives it
//! for the conformance suite.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use hyper::{Method, StatusCode};

use crate::{
    HttpClient, Process, Reply,
    conformance::{RegistryControl, TestEndpoint},
    http::{empty_body, full_body, http_request},
};

/// How long a starting server gets to answer `/eureka/apps`; the JVM is slow
/// on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running Eureka server, stopped (by pid) when dropped.
pub struct EurekaServer {
    process: Process,
    addr: SocketAddr,
    http: HttpClient,
}

/// An instance as a test registers it.
#[derive(Clone, Debug)]
pub struct EurekaInstance {
    /// The application (Eureka upper-cases it).
    pub app: String,
    /// `instanceId`.
    pub id: String,
    /// `ipAddr`; the host name is `host-<port>.test`.
    pub ip: String,
    /// The plain port.
    pub port: u16,
    /// `UP`, `DOWN`, `STARTING`, `OUT_OF_SERVICE` or `UNKNOWN`.
    pub status: String,
    /// `vipAddress`.
    pub vip: String,
    /// Metadata (the adapter's weight and zone keys are `weight` and `zone`).
    pub metadata: Vec<(String, String)>,
}

/// A [`RegistryControl`] over a Eureka server: the test service is an
/// application kept in existence by a placeholder instance (Eureka knows no
/// application without instances).
pub struct EurekaControl {
    server_addr: SocketAddr,
    http: HttpClient,
    service: String,
    missing: String,
}

/// The path of the Eureka server jar, built if needed by `scripts/install-eureka`.
pub fn eureka_jar() -> Result<String> {
    Ok(crate::install_tool("install-eureka")?
        .to_string_lossy()
        .into_owned())
}

// === impl EurekaServer ===

impl EurekaServer {
    /// Starts a server on a free loopback port (another one if that port is
    /// taken before the server binds it) and waits until it answers.
    pub async fn start() -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            match Self::start_on(port).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts were made"))
    }

    /// Starts a server on `port` (to restart one where its clients expect
    /// it) and waits until it answers.
    pub async fn start_on(port: u16) -> Result<Self> {
        let jar = eureka_jar()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new("java");
        cmd.args([
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Xss512k",
            "-Xmx256m",
            "-XX:-UsePerfData",
            "-jar",
            &jar,
        ])
        .arg(format!("--server.port={port}"))
        .arg("--server.address=127.0.0.1")
        // Its own URL as the only peer: standalone, no replication attempts
        // to the default localhost:8761 (which may be another test's).
        .arg(format!(
            "--eureka.client.service-url.defaultZone=http://{addr}/eureka/"
        ))
        .arg("--spring.main.banner-mode=off");
        let process = Process::spawn("eureka", cmd)?;
        let server = Self {
            process,
            addr,
            http: HttpClient::http1().with_timeout(Duration::from_secs(5)),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.process.try_exit()? {
                return self.process.explain(Err(anyhow!(
                    "the Eureka server on {} exited during start ({status})",
                    self.addr
                )));
            }
            if self
                .get("/eureka/apps")
                .await
                .is_ok_and(|r| r.status == StatusCode::OK)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return self.process.explain(Err(anyhow!(
                    "the Eureka server on {} did not answer within {START_TIMEOUT:?}",
                    self.addr
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://ADDR/eureka`, for `--eureka-url`.
    pub fn url(&self) -> String {
        format!("http://{}/eureka", self.addr)
    }

    /// The process, to kill it or read its log.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// `GET {path}` with `Accept: application/json`.
    pub async fn get(&self, path: &str) -> Result<Reply> {
        get(&self.http, self.addr, path).await
    }

    /// Registers (or registers again, replacing) an instance.
    pub async fn register(&self, i: &EurekaInstance) -> Result<()> {
        register(&self.http, self.addr, i).await
    }

    /// Renews an instance's lease; `false` when the server does not know it
    /// (a real client then registers again).
    pub async fn heartbeat(&self, app: &str, id: &str) -> Result<bool> {
        let path = format!("/eureka/apps/{}/{id}", app.to_uppercase());
        let r = send(&self.http, self.addr, Method::PUT, &path).await?;
        match r.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => bail!("heartbeat of {app}/{id}: Eureka answered {s}: {}", r.text()),
        }
    }

    /// Overrides an instance's status (`OUT_OF_SERVICE`, `UP`...).
    pub async fn set_status(&self, app: &str, id: &str, status: &str) -> Result<()> {
        let path = format!(
            "/eureka/apps/{}/{id}/status?value={status}",
            app.to_uppercase()
        );
        expect_ok(
            send(&self.http, self.addr, Method::PUT, &path).await?,
            &path,
        )
    }

    /// Cancels (deregisters) an instance.
    pub async fn cancel(&self, app: &str, id: &str) -> Result<()> {
        cancel(&self.http, self.addr, app, id).await
    }

    /// A control for the conformance suite over this server.
    pub async fn control(&self, service: &str, missing: &str) -> Result<EurekaControl> {
        let placeholder = EurekaInstance::new(service, "placeholder", 47_000);
        self.register(&placeholder).await?;
        Ok(EurekaControl {
            server_addr: self.addr,
            http: self.http.clone(),
            service: service.to_string(),
            missing: missing.to_string(),
        })
    }
}

// === impl EurekaInstance ===

impl EurekaInstance {
    /// An `UP` instance of `app` at `127.0.0.1:port`, VIP `<app>.vip`.
    pub fn new(app: &str, id: &str, port: u16) -> Self {
        Self {
            app: app.to_string(),
            id: id.to_string(),
            ip: "127.0.0.1".into(),
            port,
            status: "UP".into(),
            vip: format!("{}.vip", app.to_lowercase()),
            metadata: Vec::new(),
        }
    }

    /// The registration body, as Eureka's Java client writes it. The lease
    /// lasts an hour, so that no test has to heartbeat to keep it.
    pub fn to_json(&self) -> String {
        let metadata: serde_json::Map<String, serde_json::Value> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({"instance": {
            "instanceId": self.id,
            "hostName": format!("host-{}.test", self.port),
            "app": self.app.to_uppercase(),
            "ipAddr": self.ip,
            "status": self.status,
            "overriddenStatus": "UNKNOWN",
            "port": {"$": self.port, "@enabled": "true"},
            "securePort": {"$": 443, "@enabled": "false"},
            "countryId": 1,
            "dataCenterInfo": {
                "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                "name": "MyOwn"
            },
            "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 3600},
            "metadata": metadata,
            "vipAddress": self.vip,
            "secureVipAddress": self.vip,
            "lastDirtyTimestamp": now_ms().to_string(),
        }})
        .to_string()
    }
}

// === impl EurekaControl ===

impl EurekaControl {
    fn instance(&self, ep: &TestEndpoint) -> EurekaInstance {
        let mut i = EurekaInstance::new(&self.service, &ep.id, ep.port);
        i.ip = ep.address.clone();
        i.metadata = vec![("weight".into(), ep.weight.to_string())];
        i
    }
}

impl RegistryControl for EurekaControl {
    fn service(&self) -> &str {
        &self.service
    }

    fn missing_service(&self) -> &str {
        &self.missing
    }

    async fn add(&self, endpoint: &TestEndpoint) -> Result<()> {
        register(&self.http, self.server_addr, &self.instance(endpoint)).await
    }

    /// A changed instance registers again, as Eureka's client does when its
    /// metadata changes.
    async fn change(&self, endpoint: &TestEndpoint) -> Result<()> {
        register(&self.http, self.server_addr, &self.instance(endpoint)).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        cancel(&self.http, self.server_addr, &self.service, id).await
    }
}

async fn get(http: &HttpClient, addr: SocketAddr, path: &str) -> Result<Reply> {
    let req = http_request(Method::GET, addr, path)
        .header("accept", "application/json")
        .body(empty_body())?;
    http.send(req).await
}

async fn send(http: &HttpClient, addr: SocketAddr, method: Method, path: &str) -> Result<Reply> {
    http.send(http_request(method, addr, path).body(empty_body())?)
        .await
}

async fn register(http: &HttpClient, addr: SocketAddr, i: &EurekaInstance) -> Result<()> {
    let path = format!("/eureka/apps/{}", i.app.to_uppercase());
    let req = http_request(Method::POST, addr, &path)
        .header("content-type", "application/json")
        .body(full_body(i.to_json()))?;
    let r = http.send(req).await?;
    if r.status != StatusCode::NO_CONTENT {
        bail!(
            "POST {path} ({}): Eureka answered {}: {}",
            i.id,
            r.status,
            r.text()
        );
    }
    Ok(())
}

async fn cancel(http: &HttpClient, addr: SocketAddr, app: &str, id: &str) -> Result<()> {
    let path = format!("/eureka/apps/{}/{id}", app.to_uppercase());
    expect_ok(send(http, addr, Method::DELETE, &path).await?, &path)
}

fn expect_ok(r: Reply, what: &str) -> Result<()> {
    r.ok().map(drop).with_context(|| what.to_string())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
