//! `discovery-consul` over HTTPS to a real Consul agent that requires client
//! certificates (`verify_incoming_https`), with certificates made by
//! `consul tls`: it follows the service with `--ca-file`, `--client-cert` and
//! `--client-key`, and an agent whose CA it was not given is refused with a
//! clear error.

use std::{net::TcpListener, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use integration::{Adapter, Consul, Subscriber, consul_binary};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(15);

fn consul_tls(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(consul_binary()?)
        .arg("tls")
        .args(args)
        .current_dir(dir)
        .output()
        .context("cannot run consul tls")?;
    ensure!(
        out.status.success(),
        "consul tls {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_reads_consul_over_https_with_a_client_certificate() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let d = certs.path();
    consul_tls(d, &["ca", "create"])?;
    consul_tls(d, &["cert", "create", "-server", "-dc", "dc1"])?;
    consul_tls(d, &["cert", "create", "-client", "-dc", "dc1"])?;
    let https = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let file = |name: &str| d.join(name).display().to_string();
    let consul = Consul::start_with(json!({
        "ca_file": file("consul-agent-ca.pem"),
        "cert_file": file("dc1-server-consul-0.pem"),
        "key_file": file("dc1-server-consul-0-key.pem"),
        "verify_incoming_https": true,
        "ports": {"https": https},
    }))
    .await?;
    consul
        .register_ttl("web", "web-1", "127.0.0.1", 46_001, 1)
        .await?;
    let url = format!("https://127.0.0.1:{https}");

    let adapter = Adapter::start_binary(
        "discovery-consul",
        &[
            "--consul-addr",
            &url,
            "--ca-file",
            &file("consul-agent-ca.pem"),
            "--client-cert",
            &file("dc1-client-consul-0.pem"),
            "--client-key",
            &file("dc1-client-consul-0-key.pem"),
        ],
    )
    .await?;
    let mut sub = Subscriber::watch(adapter.grpc(), "web").await?;
    adapter.explain(
        sub.wait_for(DEADLINE, false, "web-1 over https", |s| {
            s.contains_key("tributary-test/web-1")
        })
        .await,
    )?;

    // Without the CA the agent's certificate is not trusted; without a
    // client certificate the agent refuses the adapter. Each error says so.
    let ca = file("consul-agent-ca.pem");
    for (what, args, want) in [
        ("no --ca-file", vec!["--consul-addr", &url], "UnknownIssuer"),
        (
            "no client certificate",
            vec!["--consul-addr", &url, "--ca-file", &ca],
            // TLS 1.3: the agent's refusal comes after the handshake, as a
            // closed connection.
            "error sending request",
        ),
    ] {
        let adapter = Adapter::start_binary("discovery-consul", &args).await?;
        let _sub = Subscriber::watch(adapter.grpc(), "web").await?;
        let line = wait_log_line(&adapter, "GET /v1/health/service/web").await?;
        ensure!(line.contains(want), "{what}: {line}");
        println!("{what}: {line}");
    }
    Ok(())
}

/// The first line of the adapter's log that contains `needle`.
async fn wait_log_line(adapter: &Adapter, needle: &str) -> Result<String> {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let log = adapter.process().stderr();
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            return Ok(line.to_string());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no line with {needle:?} logged:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
