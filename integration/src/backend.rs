//! The demo backend (`demo-backend`) as a test's upstream endpoint: it
//! answers `hello from NAME` with header `x-backend: NAME`, and offers
//! `/delay/<ms>`, `/status/<code>`, `/headers`, `/upload` and `/echo`.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    conformance::TestEndpoint,
    endpoint_file::render,
    process::{Process, workspace_binary},
};

/// How long a backend gets to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running demo backend, stopped when dropped.
#[derive(Debug)]
pub struct Backend {
    name: String,
    addr: SocketAddr,
    process: Process,
}

// === impl Backend ===

impl Backend {
    /// Starts a backend named `name` on a port the OS chooses.
    pub async fn start(name: &str) -> Result<Self> {
        Self::start_with(name, &[]).await
    }

    /// Starts a demo backend named `name` with extra flags (for example
    /// `["--delay-ms", "20"]`).
    pub async fn start_with(name: &str, args: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(workspace_binary("demo-backend")?);
        cmd.args(["--name", name, "--listen", "127.0.0.1:0"])
            .args(args);
        let mut process = Process::spawn(&format!("demo-backend {name}"), cmd)?;
        let line = process.next_line(START_TIMEOUT).await?;
        let addr = line
            .trim()
            .strip_prefix("listening http=")
            .with_context(|| format!("unexpected first line {line:?} from demo-backend"))?
            .parse()
            .with_context(|| format!("bad address in {line:?}"))?;
        Ok(Self {
            name: name.to_string(),
            addr,
            process,
        })
    }

    /// Starts one backend per name.
    pub async fn start_all(names: &[&str]) -> Result<Vec<Self>> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.push(Self::start(name).await?);
        }
        Ok(out)
    }

    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The backend as an endpoint of weight 1, with the id `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> TestEndpoint {
        TestEndpoint::new(self.addr.port(), 1)
    }
}

/// The text of a `discovery-file` endpoint file whose one service, `service`,
/// holds these backends.
pub fn service_file<'a>(service: &str, backends: impl IntoIterator<Item = &'a Backend>) -> String {
    let endpoints = backends.into_iter().map(Backend::endpoint).collect();
    render(&BTreeMap::from([(service.to_string(), endpoints)]))
}

/// A loopback address where nothing listens: a port the OS handed out and
/// that was closed again at once (so connecting is refused).
pub fn closed_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a probe socket")?;
    let addr = listener.local_addr()?;
    drop(listener);
    if std::net::TcpStream::connect(addr).is_ok() {
        bail!("{addr} still accepts connections");
    }
    Ok(addr)
}
