//! A real BIND 9 `named` for the DNS tests: authoritative for one zone,
//! started in the foreground on a loopback port chosen for it, with its
//! config, zone and journal in a temporary directory, and changed at run
//! time with `nsupdate` (dynamic updates allowed from 127.0.0.1).
//!
//! `named` logs every query it answers (`querylog`) to its standard error,
//! so a test can see which queries came over TCP. [`DnsControl`] drives the
//! conformance suite through it.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener, UdpSocket},
    path::PathBuf,
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use tokio::io::AsyncWriteExt;
use tributary_proto::v1 as pb;

use crate::{
    conformance::{RegistryControl, TestEndpoint},
    process::{Adapter, Process},
    subscriber::Subscriber,
};

/// The zone every [`Bind`] serves.
pub const ZONE: &str = "tributary.test.";

/// How long `named` gets to load its zone and listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one `nsupdate` run may take.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `named`, stopped (by its pid) when dropped.
#[derive(Debug)]
pub struct Bind {
    process: Option<Process>,
    named: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
}

// === impl Bind ===

impl Bind {
    /// Starts `named` serving [`ZONE`] with these records (zone-file lines,
    /// names relative to the zone; `$TTL` 1 unless a line says otherwise).
    /// The zone's SOA gives negative answers a TTL of 1 s.
    pub async fn start(records: &str) -> Result<Self> {
        let named = crate::install_tool("install-bind")?;
        let dir = tempfile::Builder::new()
            .prefix("tributary-bind-")
            .tempdir()
            .context("cannot create a directory for named")?;
        let zone = format!(
            "$TTL 1\n\
             @ IN SOA ns.{ZONE} admin.{ZONE} 1 60 60 600 1\n\
             @ IN NS ns.{ZONE}\n\
             ns IN A 127.0.0.1\n\
             {records}\n"
        );
        std::fs::write(dir.path().join("zone.db"), zone).context("cannot write the zone")?;
        let mut bind = Self {
            process: None,
            named,
            port: 0,
            dir,
        };
        bind.restart().await?;
        Ok(bind)
    }

    /// The server's address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Applies `nsupdate` commands (`update add NAME TTL TYPE DATA`,
    /// `update delete NAME TYPE`...) to the zone in one update; returns once
    /// the server accepted it.
    pub async fn update(&self, commands: &str) -> Result<()> {
        let script = format!(
            "server 127.0.0.1 {}\nzone {ZONE}\n{commands}\nsend\n",
            self.port
        );
        let mut child = tokio::process::Command::new("nsupdate")
            .args(["-t", "5"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot run nsupdate (scripts/install-bind installs it)")?;
        let mut stdin = child.stdin.take().context("nsupdate stdin is piped")?;
        stdin.write_all(script.as_bytes()).await?;
        drop(stdin);
        let out = tokio::time::timeout(UPDATE_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("nsupdate did not finish within {UPDATE_TIMEOUT:?}"))??;
        if !out.status.success() {
            bail!(
                "nsupdate failed ({}): {}{}\nscript:\n{script}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Stops `named` (SIGTERM, then SIGKILL), keeping its directory and port
    /// for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts `named` again on its port (a new one the first time, or when
    /// the old one was taken meanwhile); the zone keeps its updates.
    pub async fn restart(&mut self) -> Result<()> {
        self.process = None;
        let mut last_error = None;
        for attempt in 0..5 {
            if self.port == 0 || attempt > 0 {
                self.port = free_port()?;
            }
            match self.spawn().await {
                Ok(p) => {
                    self.process = Some(p);
                    return Ok(());
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("named did not start")))
    }

    /// Everything `named` logged so far (its query log included).
    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(Process::stderr)
            .unwrap_or_default()
    }

    /// Adds the tail of `named`'s log to an error.
    pub fn explain<T>(&self, result: Result<T>) -> Result<T> {
        match &self.process {
            Some(p) => p.explain(result),
            None => result,
        }
    }

    async fn spawn(&self) -> Result<Process> {
        let d = self.dir.path().display();
        let conf = format!(
            r#"options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  managed-keys-directory "{d}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  notify no;
  dnssec-validation no;
  querylog yes;
}};
controls {{ }};
zone "{ZONE}" {{
  type primary;
  file "{d}/zone.db";
  allow-update {{ 127.0.0.1; }};
}};
"#,
            port = self.port
        );
        let conf_path = self.dir.path().join("named.conf");
        std::fs::write(&conf_path, conf).context("cannot write named.conf")?;
        let mut cmd = Command::new(&self.named);
        cmd.arg("-g").arg("-c").arg(&conf_path);
        let process = Process::spawn("named", cmd)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = process.stderr();
            // Not the first line's "running on Linux": the line that says
            // the zones are loaded and the server answers.
            if log.lines().any(|l| l.ends_with(" running")) && !log.contains("could not listen") {
                return Ok(process);
            }
            if log.contains("not loaded due to errors") {
                bail!("named refused the zone:\n{log}");
            }
            if log.contains("address in use") || log.contains("could not listen") {
                bail!("named could not listen on port {}:\n{log}", self.port);
            }
            if let Some(status) = process.try_exit()? {
                bail!("named exited at start ({status}):\n{log}");
            }
            if Instant::now() >= deadline {
                bail!("named did not start within {START_TIMEOUT:?}:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A loopback port free for both UDP and TCP at the time of asking.
fn free_port() -> Result<u16> {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").context("cannot bind a UDP socket")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("found no loopback port free for both UDP and TCP")
}

/// Starts `discovery-dns` asking only `server`, with short query timeouts
/// (a stopped server shows within a second) and `extra` flags.
pub async fn start_dns_adapter(server: SocketAddr, extra: &[&str]) -> Result<Adapter> {
    let server = server.to_string();
    let mut args = vec![
        "--nameserver",
        &server,
        "--query-timeout",
        "500ms",
        "--attempts",
        "1",
        "--log-level",
        "info,discovery_dns=debug",
    ];
    args.extend_from_slice(extra);
    Adapter::start_binary("discovery-dns", &args).await
}

/// The conformance suite's registry: SRV records of `_web._tcp` in the
/// [`Bind`] zone, changed with `nsupdate`. Every endpoint's address is
/// 127.0.0.1, the address of the target `lo` (so its id, `address:port`,
/// is the suite's); the service starts with one seed record (port 9001).
pub struct DnsControl<'a> {
    bind: &'a Bind,
    service: String,
    missing: String,
    weights: Mutex<BTreeMap<String, (u16, u32)>>,
}

/// The zone records [`DnsControl`] needs.
pub const DNS_CONTROL_RECORDS: &str = "lo IN A 127.0.0.1\n_web._tcp IN SRV 0 1 9001 lo\n";

impl<'a> DnsControl<'a> {
    /// A control over `bind`, started with [`DNS_CONTROL_RECORDS`].
    pub fn new(bind: &'a Bind) -> Self {
        Self {
            bind,
            service: format!("_web._tcp.{ZONE}"),
            missing: format!("_missing._tcp.{ZONE}"),
            weights: Mutex::default(),
        }
    }

    fn record(&self, port: u16, weight: u32) -> String {
        format!("{} 1 SRV 0 {weight} {port} lo.{ZONE}", self.service)
    }
}

impl RegistryControl for DnsControl<'_> {
    fn service(&self) -> &str {
        &self.service
    }

    fn missing_service(&self) -> &str {
        &self.missing
    }

    async fn add(&self, ep: &TestEndpoint) -> Result<()> {
        ensure!(
            ep.address == "127.0.0.1",
            "the DNS control serves 127.0.0.1 only"
        );
        self.bind
            .update(&format!("update add {}", self.record(ep.port, ep.weight)))
            .await?;
        let mut w = self.weights.lock().expect("weights lock poisoned");
        w.insert(ep.id.clone(), (ep.port, ep.weight));
        Ok(())
    }

    async fn change(&self, ep: &TestEndpoint) -> Result<()> {
        let old = self
            .weights
            .lock()
            .expect("weights lock poisoned")
            .get(&ep.id)
            .copied();
        let (port, weight) = old.with_context(|| format!("{} was never added", ep.id))?;
        self.bind
            .update(&format!(
                "update delete {}\nupdate add {}",
                self.record(port, weight),
                self.record(ep.port, ep.weight)
            ))
            .await?;
        let mut w = self.weights.lock().expect("weights lock poisoned");
        w.insert(ep.id.clone(), (ep.port, ep.weight));
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let old = self
            .weights
            .lock()
            .expect("weights lock poisoned")
            .remove(id);
        let Some((port, weight)) = old else {
            return Ok(());
        };
        self.bind
            .update(&format!("update delete {}", self.record(port, weight)))
            .await
    }
}

/// Reads messages until a status in `state` arrives.
pub async fn wait_for_status(
    sub: &mut Subscriber,
    state: pb::SyncState,
    timeout: Duration,
) -> Result<pb::Status> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = sub
            .recv(left)
            .await
            .with_context(|| format!("waiting for a {state:?} status"))?;
        if let Some(pb::endpoint_update::Kind::Status(s)) = m.kind
            && s.state == state as i32
        {
            return Ok(s);
        }
    }
}
