//! The `sidecar` binary for end-to-end tests: started from a config text kept
//! in a temporary directory, its `listening admin=ADDR NAME=ADDR ...` line
//! read, and its admin API (`/ready`, `/upstreams`, `/config`) at hand.
//!
//! Configs give every address as `127.0.0.1:0`, the admin's too; the
//! listening line says which ports the sidecar got.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::{
    http::{HttpClient, Reply},
    process::{Process, workspace_binary},
    temp_file::TempFile,
};

/// How long a sidecar gets to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Time between two polls of the admin API.
const POLL: Duration = Duration::from_millis(25);

/// A sidecar config file in its own temporary directory, replaced atomically.
#[derive(Debug)]
pub struct ConfigFile {
    file: TempFile,
}

/// A running sidecar, stopped when dropped.
#[derive(Debug)]
pub struct Sidecar {
    process: Process,
    config: ConfigFile,
    admin: SocketAddr,
    listeners: BTreeMap<String, SocketAddr>,
    client: HttpClient,
}

/// A sidecar config with one HTTP listener `http` that routes every request
/// to upstream `web`, whose fields are `upstream` (YAML lines indented four
/// spaces), and, when given, the file adapter `file` at `adapter`. Every
/// address, the admin's too, is `127.0.0.1:0`.
pub fn web_config(adapter: Option<SocketAddr>, upstream: &str) -> String {
    let adapters = adapter.map_or_else(String::new, |a| {
        format!("adapters:\n  file:\n    address: http://{a}\n")
    });
    format!(
        "\
admin:
  address: 127.0.0.1:0
listeners:
  - name: http
    address: 127.0.0.1:0
{adapters}routes:
  - name: default
    uri: /*
    upstream: web
upstreams:
  - name: web
{upstream}"
    )
}

/// `nodes:` of weight 1 at these addresses, indented for [`web_config`].
pub fn web_nodes(nodes: &[SocketAddr]) -> String {
    let list: Vec<String> = nodes.iter().map(|a| format!("\"{a}\": 1")).collect();
    format!("    nodes: {{{}}}\n", list.join(", "))
}

// === impl ConfigFile ===

impl ConfigFile {
    /// A new directory holding `sidecar.yaml` with `text`.
    pub fn new(text: &str) -> Result<Self> {
        Ok(Self {
            file: TempFile::new("tributary-sidecar-", "sidecar.yaml", text)?,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Replaces the file's content atomically.
    pub fn write(&self, text: &str) -> Result<()> {
        self.file.write(text)
    }

    /// Starts `sidecar --config FILE` with `args` and returns at once, for a
    /// test that expects it to fail.
    pub fn spawn(&self, args: &[&str]) -> Result<Process> {
        self.spawn_with_env(args, &[])
    }

    /// [`Self::spawn`] with extra environment variables (such as `OTEL_*`).
    pub fn spawn_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Process> {
        let mut cmd = Command::new(workspace_binary("sidecar")?);
        cmd.arg("--config")
            .arg(self.file.path())
            .args(args)
            // Plain log lines in the standard error file.
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied());
        Process::spawn("sidecar", cmd)
    }
}

// === impl Sidecar ===

impl Sidecar {
    /// Starts a sidecar with `config` and waits for its listening line.
    pub async fn start(config: &str) -> Result<Self> {
        Self::start_with(config, &[]).await
    }

    /// Starts a sidecar with `config` and extra flags (such as
    /// `--drain-timeout 5s`) and waits for its listening line.
    pub async fn start_with(config: &str, args: &[&str]) -> Result<Self> {
        Self::start_with_env(config, args, &[]).await
    }

    /// [`Self::start_with`] with extra environment variables (such as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub async fn start_with_env(config: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let config = ConfigFile::new(config)?;
        let mut process = config.spawn_with_env(args, env)?;
        let deadline = Instant::now() + START_TIMEOUT;
        let (admin, listeners) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = process.next_line(left).await?;
            if let Some(parsed) = process.explain(parse_listening(&line))? {
                break parsed;
            }
        };
        Ok(Self {
            process,
            config,
            admin,
            listeners,
            client: HttpClient::http1().with_timeout(ADMIN_TIMEOUT),
        })
    }

    /// The admin API's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The bound address of the listener `name`.
    pub fn listener(&self, name: &str) -> Result<SocketAddr> {
        self.listeners.get(name).copied().ok_or_else(|| {
            anyhow!(
                "the sidecar announced no listener {name:?} (it has {:?})",
                self.listeners.keys().collect::<Vec<_>>()
            )
        })
    }

    /// The process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The config file it was started with.
    pub fn config_file(&self) -> &ConfigFile {
        &self.config
    }

    /// Replaces the config file and sends SIGHUP.
    pub fn reload(&self, text: &str) -> Result<()> {
        self.config.write(text)?;
        self.process.hangup()
    }

    /// Adds the tail of the sidecar's standard error to an error.
    pub fn explain<T>(&self, result: Result<T>) -> Result<T> {
        self.process.explain(result)
    }

    /// `GET http://{admin}{path}`.
    pub async fn admin_get(&self, path: &str) -> Result<Reply> {
        self.client.get(self.admin, path).await
    }

    /// Waits until `/ready` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let reply = self.admin_get("/ready").await?;
            if reply.status == 200 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the sidecar was not ready within {timeout:?}: /ready answered {}: {}",
                    reply.status,
                    reply.text().trim()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `/upstreams`, parsed.
    pub async fn upstreams(&self) -> Result<Upstreams> {
        let reply = self.admin_get("/upstreams").await?.ok()?;
        let json = serde_json::from_slice(&reply.body).context("/upstreams is not JSON")?;
        Ok(Upstreams(json))
    }

    /// Polls `/upstreams` until `done` holds, for at most `timeout`; the
    /// error names `what` was awaited and shows the last answer.
    pub async fn wait_upstreams(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Upstreams) -> bool,
    ) -> Result<Upstreams> {
        let deadline = Instant::now() + timeout;
        loop {
            let u = self.upstreams().await?;
            if done(&u) {
                return Ok(u);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{what}: not seen within {timeout:?}; /upstreams shows {}",
                    u.0
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Reads `listening admin=ADDR NAME=ADDR ...`; `None` for any other line.
fn parse_listening(line: &str) -> Result<Option<(SocketAddr, BTreeMap<String, SocketAddr>)>> {
    let Some(rest) = line.trim().strip_prefix("listening ") else {
        return Ok(None);
    };
    let mut admin = None;
    let mut listeners = BTreeMap::new();
    for part in rest.split_whitespace() {
        let (name, addr) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("bad part {part:?} in {line:?}"))?;
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("bad address {addr:?} in {line:?}"))?;
        if name == "admin" {
            admin = Some(addr);
        } else {
            listeners.insert(name.to_string(), addr);
        }
    }
    let admin = admin.ok_or_else(|| anyhow!("no admin address in {line:?}"))?;
    Ok(Some((admin, listeners)))
}

/// The sidecar's `/upstreams` answer.
#[derive(Clone, Debug)]
pub struct Upstreams(pub Value);

// === impl Upstreams ===

impl Upstreams {
    /// The upstream `name`, if the sidecar has it.
    pub fn upstream(&self, name: &str) -> Option<&Value> {
        self.0["upstreams"]
            .as_array()?
            .iter()
            .find(|u| u["name"] == name)
    }

    /// The endpoints of upstream `name` (none if it is unknown).
    pub fn endpoints(&self, name: &str) -> &[Value] {
        self.upstream(name)
            .and_then(|u| u["endpoints"].as_array())
            .map_or(&[], Vec::as_slice)
    }

    /// The addresses of upstream `name`'s endpoints, sorted.
    pub fn addresses(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .endpoints(name)
            .iter()
            .filter_map(|e| e["address"].as_str().map(str::to_string))
            .collect();
        out.sort();
        out
    }

    /// Requests in flight over every endpoint of upstream `name`.
    pub fn in_flight(&self, name: &str) -> u64 {
        self.endpoints(name)
            .iter()
            .filter_map(|e| e["in_flight"].as_u64())
            .sum()
    }

    /// The discovery sources of upstream `name`.
    pub fn sources(&self, name: &str) -> &[Value] {
        self.upstream(name)
            .and_then(|u| u["sources"].as_array())
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_parse() {
        let (admin, listeners) =
            parse_listening("listening admin=127.0.0.1:9901 http=127.0.0.1:8080 db=[::1]:5432")
                .unwrap()
                .unwrap();
        assert_eq!(admin.port(), 9901);
        assert_eq!(listeners["http"].port(), 8080);
        assert_eq!(listeners["db"].port(), 5432);
        assert!(parse_listening("starting").unwrap().is_none());
        assert!(parse_listening("listening http=127.0.0.1:1").is_err());
        assert!(parse_listening("listening admin=nope").is_err());
    }
}
