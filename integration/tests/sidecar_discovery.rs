//! The sidecar following the `discovery-file` adapter: endpoints added and
//! removed under steady traffic without a failed request, and traffic that
//! keeps flowing on the last known endpoints while the adapter is down.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use integration::{
    Adapter, Backend, EndpointFile, HttpClient, Sidecar, Upstreams, service_file, web_config,
    workspace_binary,
};

/// How long one awaited change may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// The sidecar's back-off between reconnects grows to seconds; a restarted
/// adapter is reached within a few.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(20);

/// Concurrent clients of the steady stream.
const WORKERS: usize = 4;

/// The most requests the steady stream sends, whatever happens.
const MAX_REQUESTS: usize = 3000;

/// Upstream `web`: service `web` of the file adapter at `adapter`. With
/// `retries: 0`, a request sent to a wrong endpoint fails instead of being
/// retried out of sight.
fn config(adapter: SocketAddr) -> String {
    web_config(
        Some(adapter),
        "    discovery_type: file\n    service_name: web\n    retries: 0\n",
    )
}

async fn start_adapter(file: &EndpointFile) -> Result<Adapter> {
    let path = file.path().to_str().context("non-UTF-8 temp path")?;
    Adapter::start_binary("discovery-file", &["--file", path]).await
}

fn has(u: &Upstreams, backend: &Backend) -> bool {
    u.addresses("web").contains(&backend.addr().to_string())
}

/// A steady stream of `GET /` from [`WORKERS`] clients, each request tagged
/// with the phase in force when it started.
#[derive(Default)]
struct Stream {
    phase: usize,
    started: [usize; 3],
    done: [usize; 3],
    /// `(phase, backend name or error)` per finished request.
    log: Vec<(usize, Result<String, String>)>,
    stop: bool,
}

impl Stream {
    fn answers(&self, phase: usize, backend: &str) -> usize {
        self.log
            .iter()
            .filter(|(p, r)| *p == phase && r.as_deref() == Ok(backend))
            .count()
    }

    fn count(&self, phase: usize) -> usize {
        self.log.iter().filter(|(p, _)| *p == phase).count()
    }
}

fn spawn_workers(
    stream: &Arc<Mutex<Stream>>,
    addr: SocketAddr,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = HttpClient::http1();
    (0..WORKERS)
        .map(|_| {
            let stream = stream.clone();
            let client = client.clone();
            tokio::spawn(async move {
                loop {
                    let phase = {
                        let mut s = stream.lock().expect("stream lock poisoned");
                        let total: usize = s.started.iter().sum();
                        if s.stop || total >= MAX_REQUESTS {
                            return;
                        }
                        let phase = s.phase;
                        s.started[phase] += 1;
                        phase
                    };
                    let result = match client.get(addr, "/").await.and_then(|r| r.ok()) {
                        Ok(reply) => reply
                            .header("x-backend")
                            .map(str::to_string)
                            .ok_or_else(|| "no x-backend header".to_string()),
                        Err(e) => Err(format!("{e:#}")),
                    };
                    let mut s = stream.lock().expect("stream lock poisoned");
                    s.done[phase] += 1;
                    s.log.push((phase, result));
                }
            })
        })
        .collect()
}

/// Waits until `done` holds for the stream, for at most `DEADLINE`.
async fn wait_stream(
    stream: &Mutex<Stream>,
    what: &str,
    done: impl Fn(&Stream) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        {
            let s = stream.lock().expect("stream lock poisoned");
            if done(&s) {
                return Ok(());
            }
            if let Some((p, Err(e))) = s.log.iter().find(|(_, r)| r.is_err()) {
                bail!("while waiting for {what}: a request of phase {p} failed: {e}");
            }
            if Instant::now() >= deadline || s.started.iter().sum::<usize>() >= MAX_REQUESTS {
                bail!(
                    "{what}: not seen within {DEADLINE:?} ({} requests sent)",
                    s.log.len()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_join_and_leave_under_traffic_without_a_failed_request() -> Result<()> {
    let [a, b, c] = <[Backend; 3]>::try_from(Backend::start_all(&["a", "b", "c"]).await?)
        .expect("three backends");
    let file = EndpointFile::new(&service_file("web", [&a, &b]))?;
    let adapter = start_adapter(&file).await?;
    let sidecar = Sidecar::start(&config(adapter.grpc())).await?;
    sidecar.wait_ready(DEADLINE).await?;
    let http = sidecar.listener("http")?;

    let stream = Arc::new(Mutex::new(Stream::default()));
    let workers = spawn_workers(&stream, http);
    let set_phase = |p| stream.lock().expect("stream lock poisoned").phase = p;
    let result = async {
        wait_stream(&stream, "the first 40 answers", |s| s.log.len() >= 40).await?;

        // Phase 1: c joins; once the sidecar shows it, it takes traffic.
        file.write(&service_file("web", [&a, &b, &c]))?;
        sidecar
            .wait_upstreams(DEADLINE, "c in the set", |u| has(u, &c))
            .await?;
        set_phase(1);
        wait_stream(&stream, "10 answers from c", |s| s.answers(1, "c") >= 10).await?;

        // Phase 2: a leaves; once the sidecar shows it gone, requests that
        // start get no answer from it. When the requests that started before
        // have ended, a is stopped: a request sent to it now would fail.
        file.write(&service_file("web", [&b, &c]))?;
        sidecar
            .wait_upstreams(DEADLINE, "a gone from the set", |u| !has(u, &a))
            .await?;
        set_phase(2);
        wait_stream(&stream, "the requests of phases 0 and 1 to end", |s| {
            s.started[..2] == s.done[..2]
        })
        .await?;
        drop(a);
        wait_stream(&stream, "100 answers after a left", |s| s.count(2) >= 100).await?;
        Ok(())
    }
    .await;
    stream.lock().expect("stream lock poisoned").stop = true;
    for w in workers {
        w.await?;
    }
    sidecar.explain(result)?;

    let s = stream.lock().expect("stream lock poisoned");
    let failed: Vec<_> = s.log.iter().filter(|(_, r)| r.is_err()).collect();
    ensure!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        s.log.len()
    );
    let mut by_phase: BTreeMap<(usize, &str), usize> = BTreeMap::new();
    for (p, r) in &s.log {
        if let Ok(name) = r {
            *by_phase.entry((*p, name.as_str())).or_default() += 1;
        }
    }
    ensure!(
        s.answers(2, "a") == 0 && s.answers(2, "b") > 0 && s.answers(2, "c") > 0,
        "after a left, answers by phase and backend were {by_phase:?}"
    );
    println!(
        "{} requests, answers by phase and backend: {by_phase:?}",
        s.log.len()
    );
    Ok(())
}

/// Sends `n` sequential `GET /` and counts the answers by `x-backend`.
async fn count_backends(
    client: &HttpClient,
    addr: SocketAddr,
    n: usize,
) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let reply = client
            .get(addr, "/")
            .await
            .and_then(|r| r.ok())
            .with_context(|| format!("request {i}"))?;
        let name = reply.header("x-backend").unwrap_or("?").to_string();
        *counts.entry(name).or_default() += 1;
    }
    Ok(counts)
}

fn stale(u: &Upstreams) -> Option<bool> {
    match u.sources("web") {
        [source] => source["stale"].as_bool(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_survives_the_adapter_and_a_restarted_adapter_is_followed() -> Result<()> {
    let [a, b, c] = <[Backend; 3]>::try_from(Backend::start_all(&["a", "b", "c"]).await?)
        .expect("three backends");
    let file = EndpointFile::new(&service_file("web", [&a, &b]))?;
    let adapter = start_adapter(&file).await?;
    let grpc = adapter.grpc();
    let sidecar = Sidecar::start(&config(grpc)).await?;
    sidecar.wait_ready(DEADLINE).await?;
    let http = sidecar.listener("http")?;
    let client = HttpClient::http1();

    // The adapter dies: the sidecar marks the source stale and keeps
    // balancing over the last endpoints it knew.
    adapter.process().kill()?;
    adapter.process().wait_exit(DEADLINE).await?;
    drop(adapter);
    sidecar
        .wait_upstreams(DEADLINE, "the source marked stale", |u| {
            stale(u) == Some(true)
        })
        .await?;
    let got = sidecar.explain(count_backends(&client, http, 20).await)?;
    ensure!(
        got == BTreeMap::from([("a".into(), 10), ("b".into(), 10)]),
        "with the adapter down, 20 requests were answered as {got:?}"
    );

    // Back on the same port, it is found again, and followed.
    let path = file.path().to_str().context("non-UTF-8 temp path")?;
    let mut cmd = Command::new(workspace_binary("discovery-file")?);
    cmd.args(["--file", path, "--listen", &grpc.to_string()])
        .args(["--metrics-listen", "127.0.0.1:0"]);
    let adapter = Adapter::start("discovery-file", cmd).await?;
    ensure!(adapter.grpc() == grpc, "restarted on {}", adapter.grpc());
    sidecar.explain(
        sidecar
            .wait_upstreams(RECONNECT_DEADLINE, "the source in sync again", |u| {
                stale(u) == Some(false)
            })
            .await,
    )?;
    file.write(&service_file("web", [&a, &b, &c]))?;
    sidecar
        .wait_upstreams(DEADLINE, "c, added after the restart, in the set", |u| {
            has(u, &c)
        })
        .await?;
    let got = sidecar.explain(count_backends(&client, http, 30).await)?;
    ensure!(
        got == BTreeMap::from([("a".into(), 10), ("b".into(), 10), ("c".into(), 10)]),
        "after the restart and the edit, 30 requests were answered as {got:?}"
    );
    Ok(())
}
