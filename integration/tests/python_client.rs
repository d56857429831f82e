//! The contract is language-neutral: a Python `grpcio` subscriber whose code
//! is generated at test time from the `.proto` text alone watches the real
//! `discovery-file` adapter and sees the snapshot, then deltas, with every
//! endpoint field as the file says.
//!
//! The Python toolchain is installed by `scripts/install-python-grpc` (into a
//! cache outside the checkout) when it is missing; this test never skips.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use integration::{Adapter, EndpointFile, Process};
use serde_json::{Value, json};

/// A first install downloads grpcio and grpcio-tools.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the Python client gets for one message, code generation included.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

const FIRST: &str = "services:
  web:
    - id: w1
      address: 127.0.0.1
      port: 8081
      weight: 2
      health: draining
      zone: z1
      metadata: {version: '1.4', track: canary}
";

const SECOND: &str = "services:
  web:
    - id: w1
      address: 127.0.0.1
      port: 8081
      weight: 2
      health: draining
      zone: z1
      metadata: {version: '1.4', track: canary}
    - id: w2
      address: '::1'
      port: 8082
      health: unhealthy
";

const THIRD: &str = "services:
  web:
    - id: w2
      address: '::1'
      port: 8082
      health: unhealthy
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_subscriber_built_from_the_proto_alone() -> Result<()> {
    let python = install_python().await?;
    let proto_dir = tempfile::tempdir()?;
    let proto = proto_dir.path().join("discovery.proto");
    std::fs::write(&proto, tributary_proto::PROTO_SOURCE)?;

    let file = EndpointFile::new(FIRST)?;
    let path = file.path().to_str().context("non-UTF-8 temp path")?;
    let adapter = Adapter::start_binary("discovery-file", &["--file", path]).await?;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/watch.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg("--proto")
        .arg(&proto)
        .args(["--target", &adapter.grpc().to_string()])
        .args(["--service", "web", "--count", "3", "--timeout", "60"]);
    let mut client = Process::spawn("watch.py", cmd)?;
    let result = watch(&mut client, &file).await;
    adapter.explain(client.explain(result))
}

async fn watch(client: &mut Process, file: &EndpointFile) -> Result<()> {
    let w1 = json!({
        "id": "w1", "address": "127.0.0.1", "port": 8081, "weight": 2,
        "health": "HEALTH_DRAINING", "zone": "z1",
        "metadata": {"version": "1.4", "track": "canary"},
    });
    let w2 = json!({
        "id": "w2", "address": "::1", "port": 8082, "weight": null,
        "health": "HEALTH_UNHEALTHY", "zone": "", "metadata": {},
    });

    let first = next_update(client).await?;
    ensure!(
        first["kind"] == "snapshot"
            && first["not_found"] == false
            && first["endpoints"] == json!([w1]),
        "first message: {first}"
    );
    let v = first["version"]
        .as_u64()
        .context("version is not a number")?;

    file.write(SECOND)?;
    let add = next_update(client).await?;
    ensure!(
        add == json!({"version": v + 1, "kind": "delta", "upserts": [w2], "removals": []}),
        "after adding w2: {add}"
    );

    file.write(THIRD)?;
    let remove = next_update(client).await?;
    ensure!(
        remove == json!({"version": v + 2, "kind": "delta", "upserts": [], "removals": ["w1"]}),
        "after removing w1: {remove}"
    );

    let status = client.wait_exit(Duration::from_secs(10)).await?;
    ensure!(status.success(), "watch.py exited with {status}");
    Ok(())
}

/// The next snapshot or delta the client printed; status lines are skipped.
async fn next_update(client: &mut Process) -> Result<Value> {
    loop {
        let line = client.next_line(LINE_TIMEOUT).await?;
        let value: Value =
            serde_json::from_str(&line).with_context(|| format!("not JSON: {line:?}"))?;
        if value["kind"] != "status" {
            return Ok(value);
        }
    }
}

/// Runs `scripts/install-python-grpc` and returns the python it printed.
async fn install_python() -> Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-python-grpc");
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(&script).kill_on_drop(true);
    let out = tokio::time::timeout(INSTALL_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{} ran longer than {INSTALL_TIMEOUT:?}", script.display()))?
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8(out.stdout)?;
    let python = stdout.lines().last().unwrap_or_default().trim().to_string();
    ensure!(
        Path::new(&python).is_file(),
        "the install script printed {stdout:?}"
    );
    Ok(python)
}
