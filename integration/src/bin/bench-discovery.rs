//! Discovery figures for `bench/run` (a benchmark, not a test): each command
//! starts the real binaries built next to it, measures, prints a few lines
//! for a person and one JSON line for the script.
//!
//! - `change`: an endpoint file change (the file adapter) to the first
//!   request served by the new endpoint through the sidecar, repeated.
//! - `fanout`: one file adapter serving N subscribers of one service, each on
//!   its own connection as N sidecars would be: time from the first to the
//!   last subscriber receiving each update, and the adapter's RSS.
//! - `memory`: the sidecar's RSS with U upstreams of E static endpoints.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use integration::{Adapter, Backend, EndpointFile, HttpClient, Sidecar, Subscriber, web_config};
use tokio::sync::Barrier;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Endpoint file change to the first request on the new endpoint.
    Change {
        /// How many changes to time.
        #[arg(long, default_value_t = 50)]
        changes: usize,
    },
    /// One adapter, many subscribers of one service.
    Fanout {
        /// How many subscribers (one connection each).
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// How many updates to time.
        #[arg(long, default_value_t = 10)]
        updates: usize,
    },
    /// The sidecar's memory with many upstreams and endpoints.
    Memory {
        /// How many upstreams.
        #[arg(long, default_value_t = 100)]
        upstreams: usize,
        /// How many static endpoints each.
        #[arg(long, default_value_t = 100)]
        endpoints: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().what {
        What::Change { changes } => change(changes).await,
        What::Fanout {
            subscribers,
            updates,
        } => fanout(subscribers, updates).await,
        What::Memory {
            upstreams,
            endpoints,
        } => memory(upstreams, endpoints).await,
    }
}

fn file_text(endpoints: &[SocketAddr]) -> String {
    let mut s = String::from("services:\n  web:\n");
    for e in endpoints {
        let _ = writeln!(s, "    - {{address: {}, port: {}}}", e.ip(), e.port());
    }
    s
}

async fn change(changes: usize) -> Result<()> {
    let a = Backend::start("a").await?;
    let b = Backend::start("b").await?;
    let file = EndpointFile::new(&file_text(&[a.addr()]))?;
    let path = file.path().to_str().context("non-UTF-8 temp path")?;
    let adapter = Adapter::start_binary("discovery-file", &["--file", path]).await?;
    let sidecar = Sidecar::start(&web_config(
        Some(adapter.grpc()),
        "    discovery_type: file\n    service_name: web\n",
    ))
    .await?;
    let proxy = sidecar.listener("http")?;
    let client = HttpClient::http1();
    wait_for_backend(&client, proxy, "a", Duration::from_secs(10)).await?;

    let mut took = Vec::with_capacity(changes);
    for i in 0..changes {
        let (to, name) = if i % 2 == 0 { (&b, "b") } else { (&a, "a") };
        let started = Instant::now();
        file.write(&file_text(&[to.addr()]))?;
        wait_for_backend(&client, proxy, name, Duration::from_secs(10)).await?;
        took.push(started.elapsed());
    }
    took.sort();
    let ms = |q: f64| pick(&took, q).as_secs_f64() * 1e3;
    println!(
        "registry change -> first request on the new endpoint (file adapter, {changes} changes): \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(0.5),
        ms(0.99),
        ms(1.0)
    );
    println!(
        "{{\"changes\": {changes}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"max_ms\": {:.2}}}",
        ms(0.5),
        ms(0.99),
        ms(1.0)
    );
    Ok(())
}

/// Sends requests back to back until one is answered by `name`.
async fn wait_for_backend(
    client: &HttpClient,
    proxy: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(r) = client.get(proxy, "/").await
            && r.header("x-backend") == Some(name)
        {
            return Ok(());
        }
    }
    bail!("no request reached backend {name} within {timeout:?}")
}

async fn fanout(subscribers: usize, updates: usize) -> Result<()> {
    let mut endpoints: Vec<SocketAddr> = vec!["127.0.0.1:47001".parse()?];
    let file = EndpointFile::new(&file_text(&endpoints))?;
    let path = file.path().to_str().context("non-UTF-8 temp path")?;
    let adapter = Adapter::start_binary("discovery-file", &["--file", path]).await?;
    let grpc = adapter.grpc();

    let mut subs = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let mut s = Subscriber::watch(grpc, "web").await?;
        s.recv(Duration::from_secs(30)).await?;
        subs.push(s);
    }
    let pid = adapter.process().pid();
    let mut spreads = Vec::with_capacity(updates);
    let mut lasts = Vec::with_capacity(updates);
    for u in 0..updates {
        endpoints.push(SocketAddr::from(([127, 0, 0, 1], 47002 + u as u16)));
        let barrier = Arc::new(Barrier::new(subscribers + 1));
        let mut tasks = Vec::with_capacity(subscribers);
        for mut s in subs.drain(..) {
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let r = s.recv_change(Duration::from_secs(30)).await;
                (s, r.map(|_| Instant::now()))
            }));
        }
        barrier.wait().await;
        let written = Instant::now();
        file.write(&file_text(&endpoints))?;
        let mut times = Vec::with_capacity(subscribers);
        for t in tasks {
            let (s, at) = t.await?;
            times.push(at?);
            subs.push(s);
        }
        let first = *times.iter().min().context("no subscriber")?;
        let last = *times.iter().max().context("no subscriber")?;
        spreads.push(last - first);
        lasts.push(last - written);
    }
    spreads.sort();
    lasts.sort();
    let rss = rss_kib(pid)?;
    let ms = |v: &[Duration], q: f64| pick(v, q).as_secs_f64() * 1e3;
    println!(
        "fan-out: {subscribers} subscribers of one service, {updates} updates: first -> last \
         subscriber p50 {:.1} ms, max {:.1} ms; file write -> last subscriber p50 {:.1} ms, \
         max {:.1} ms; adapter RSS {:.1} MB",
        ms(&spreads, 0.5),
        ms(&spreads, 1.0),
        ms(&lasts, 0.5),
        ms(&lasts, 1.0),
        rss as f64 / 1024.0
    );
    println!(
        "{{\"subscribers\": {subscribers}, \"updates\": {updates}, \"spread_p50_ms\": {:.2}, \
         \"spread_max_ms\": {:.2}, \"write_to_last_p50_ms\": {:.2}, \
         \"write_to_last_max_ms\": {:.2}, \"adapter_rss_mb\": {:.1}}}",
        ms(&spreads, 0.5),
        ms(&spreads, 1.0),
        ms(&lasts, 0.5),
        ms(&lasts, 1.0),
        rss as f64 / 1024.0
    );
    Ok(())
}

async fn memory(upstreams: usize, endpoints: usize) -> Result<()> {
    ensure!(
        upstreams > 0 && upstreams <= 250,
        "--upstreams must be 1..=250"
    );
    ensure!(
        endpoints > 0 && endpoints <= 250,
        "--endpoints must be 1..=250"
    );
    let mut cfg = String::from(
        "admin: {address: 127.0.0.1:0}\nlisteners:\n  - {name: http, address: 127.0.0.1:0}\n\
         telemetry: {log_level: warn}\nroutes:\n",
    );
    for u in 0..upstreams {
        let _ = writeln!(cfg, "  - {{name: r{u}, uri: /u{u}/*, upstream: u{u}}}");
    }
    cfg.push_str("upstreams:\n");
    for u in 0..upstreams {
        let _ = writeln!(cfg, "  - name: u{u}\n    nodes:");
        for e in 0..endpoints {
            // Distinct loopback addresses; nothing needs to listen there.
            let _ = writeln!(cfg, "      \"127.1.{u}.{}:8080\": 1", e + 1);
        }
    }
    let sidecar = Sidecar::start(&cfg).await?;
    let pid = sidecar.process().pid();
    let rss = rss_kib(pid)?;
    println!(
        "sidecar with {upstreams} upstreams x {endpoints} endpoints: RSS {:.1} MB",
        rss as f64 / 1024.0
    );
    println!(
        "{{\"upstreams\": {upstreams}, \"endpoints\": {endpoints}, \"rss_mb\": {:.1}}}",
        rss as f64 / 1024.0
    );
    Ok(())
}

fn pick(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i]
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}
