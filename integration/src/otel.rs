//! The real OpenTelemetry Collector (built by `scripts/install-otelcol`) for
//! trace tests: an OTLP receiver on loopback gRPC and HTTP ports and a file
//! exporter whose JSON lines a test reads back as [`ExportedSpan`]s; and
//! `promtool check metrics` (from `scripts/install-promtool`).

use std::{
    io::Write,
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::process::Process;

/// How long the collector gets to open its receivers.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running collector, stopped when dropped.
#[derive(Debug)]
pub struct Collector {
    process: Process,
    grpc: SocketAddr,
    http: SocketAddr,
    spans_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// One span as the collector's file exporter wrote it.
#[derive(Clone, Debug)]
pub struct ExportedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// Span name.
    pub name: String,
    /// OTLP span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i64,
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// Parent span id, empty for a root.
    pub parent_span_id: String,
    /// Attributes, their values as OTLP JSON (`{"stringValue": ...}`).
    pub attributes: Vec<(String, Value)>,
    /// When the span ended, nanoseconds since the Unix epoch (0 if absent).
    pub end_unix_nanos: u64,
}

/// Runs `promtool check metrics` on `text`; fails with promtool's words on
/// any problem or lint warning.
pub fn promtool_check(text: &str) -> Result<()> {
    let promtool = crate::install_tool("install-promtool")?;
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", promtool.display()))?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.trim().is_empty() {
        bail!("promtool check metrics ({}): {said}", out.status);
    }
    Ok(())
}

fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

// === impl Collector ===

impl Collector {
    /// Starts the collector with an OTLP receiver (gRPC and HTTP on ports
    /// the OS chose) and a file exporter, and waits until both listen.
    pub async fn start() -> Result<Self> {
        Self::start_on(free_port()?).await
    }

    /// Starts the collector with its OTLP/HTTP receiver on `http` (a port
    /// something was told to export to, over the default transport, before
    /// the collector ran) and its gRPC one on a port the OS chose.
    pub async fn start_on(http: SocketAddr) -> Result<Self> {
        let bin = crate::install_tool("install-otelcol")?;
        let dir = tempfile::Builder::new()
            .prefix("tributary-otelcol-")
            .tempdir()?;
        let grpc = free_port()?;
        let spans_file = dir.path().join("spans.json");
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "\
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: \"{grpc}\"}}
      http: {{endpoint: \"{http}\"}}
processors:
  batch: {{timeout: 100ms}}
exporters:
  file: {{path: \"{}\", flush_interval: 100ms}}
service:
  telemetry:
    metrics: {{level: none}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [file]}}
",
                spans_file.display()
            ),
        )?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(format!("file:{}", config.display()));
        let process = Process::spawn("otelcol", cmd)?;
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(grpc).is_err() || TcpStream::connect(http).is_err() {
            if let Some(status) = process.try_exit()? {
                bail!(
                    "otelcol exited ({status}) before listening:\n{}",
                    process.stderr_tail(30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "otelcol did not listen on {grpc} and {http} within {START_TIMEOUT:?}:\n{}",
                    process.stderr_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            process,
            grpc,
            http,
            spans_file,
            _dir: dir,
        })
    }

    /// The OTLP/gRPC receiver's address.
    pub fn grpc(&self) -> SocketAddr {
        self.grpc
    }

    /// The OTLP/HTTP receiver's address.
    pub fn http(&self) -> SocketAddr {
        self.http
    }

    /// The collector process (its standard error, for failures).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Every span the file exporter has written so far.
    pub fn spans(&self) -> Result<Vec<ExportedSpan>> {
        let text = match std::fs::read_to_string(&self.spans_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut spans = Vec::new();
        // The last line may be half written.
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(doc) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            parse_export(&doc, &mut spans);
        }
        Ok(spans)
    }

    /// Waits until `done` holds for the spans written, for at most `timeout`.
    pub async fn wait_for_spans(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[ExportedSpan]) -> bool,
    ) -> Result<Vec<ExportedSpan>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans()?;
            if done(&spans) {
                return Ok(spans);
            }
            if Instant::now() > deadline {
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{}:{}", s.service, s.name))
                    .collect();
                bail!(
                    "{what}: not seen within {timeout:?}; spans so far: {names:?}\ncollector:\n{}",
                    self.process.stderr_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn parse_export(doc: &Value, out: &mut Vec<ExportedSpan>) {
    let list = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let text = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    for rs in list(doc, "resourceSpans") {
        let resource = rs.get("resource").cloned().unwrap_or_default();
        let service = list(&resource, "attributes")
            .iter()
            .find(|a| a.get("key").and_then(Value::as_str) == Some("service.name"))
            .and_then(|a| a.pointer("/value/stringValue"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for ss in list(&rs, "scopeSpans") {
            for span in list(&ss, "spans") {
                out.push(ExportedSpan {
                    service: service.clone(),
                    name: text(&span, "name"),
                    kind: span.get("kind").and_then(Value::as_i64).unwrap_or(0),
                    trace_id: text(&span, "traceId"),
                    span_id: text(&span, "spanId"),
                    parent_span_id: text(&span, "parentSpanId"),
                    attributes: list(&span, "attributes")
                        .into_iter()
                        .map(|a| (text(&a, "key"), a.get("value").cloned().unwrap_or_default()))
                        .collect(),
                    end_unix_nanos: text(&span, "endTimeUnixNano").parse().unwrap_or(0),
                });
            }
        }
    }
}

// === impl ExportedSpan ===

impl ExportedSpan {
    /// The attribute `key` as text: strings as they are, integers (which
    /// OTLP JSON writes as strings) and booleans as written.
    pub fn attr(&self, key: &str) -> Option<String> {
        let v = &self.attributes.iter().find(|(k, _)| k == key)?.1;
        if let Some(s) = v.get("stringValue").and_then(Value::as_str) {
            return Some(s.to_owned());
        }
        if let Some(i) = v.get("intValue") {
            return Some(i.as_str().map_or_else(|| i.to_string(), str::to_owned));
        }
        v.get("boolValue").map(Value::to_string)
    }

    /// The attribute `key` as a list of strings (an OTLP array value).
    pub fn attr_list(&self, key: &str) -> Vec<String> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.pointer("/arrayValue/values"))
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter_map(|v| v.get("stringValue").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}
