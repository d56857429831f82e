//! The sidecar's life: a bad config at start, reloads on SIGHUP (a bad file
//! refused, a good one applied with a request in flight across it), and a
//! SIGTERM that drains a request in flight before exiting.

use std::{
    io::ErrorKind,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use integration::{Backend, ConfigFile, HttpClient, Reply, Sidecar};
use tokio::{net::TcpStream, task::JoinHandle};

/// How long one awaited change may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// The backend's delay for a request that must still be in flight while
/// the sidecar reloads or stops.
const SLOW_MS: u64 = 1500;

/// One listener; `/*` to upstream `web` (backend `a`). `web_extra` adds
/// indented fields to `web`; `more` adds routes and upstreams.
fn config(a: SocketAddr, web_extra: &str, more_routes: &str, more_upstreams: &str) -> String {
    format!(
        "\
listeners:
  - name: http
    address: 127.0.0.1:0
routes:
  - name: default
    uri: /*
    upstream: web
{more_routes}upstreams:
  - name: web
{web_extra}    nodes:
      \"{a}\": 1
{more_upstreams}admin:
  address: 127.0.0.1:0
"
    )
}

/// The 1-based line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> Result<usize> {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .with_context(|| format!("{needle:?} is not in the config"))
}

/// Starts `GET /delay/SLOW_MS` and returns once the sidecar counts it in
/// flight on upstream `web`.
async fn start_slow(sidecar: &Sidecar, http: SocketAddr) -> Result<JoinHandle<Result<Reply>>> {
    let client = HttpClient::http1();
    let slow = tokio::spawn(async move { client.get(http, &format!("/delay/{SLOW_MS}")).await });
    sidecar
        .wait_upstreams(DEADLINE, "the slow request in flight", |u| {
            u.in_flight("web") == 1
        })
        .await?;
    Ok(slow)
}

async fn finish_slow(slow: JoinHandle<Result<Reply>>) -> Result<()> {
    let reply = slow.await??.ok().context("the slow request")?;
    ensure!(
        reply.text() == format!("a waited {SLOW_MS} ms\n"),
        "the slow request was answered {:?}",
        reply.text()
    );
    Ok(())
}

/// Waits until the sidecar's standard error contains `needle`.
async fn wait_stderr(sidecar: &Sidecar, needle: &str) -> Result<String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let stderr = sidecar.process().stderr();
        if stderr.contains(needle) {
            return Ok(stderr);
        }
        if Instant::now() >= deadline {
            bail!("the sidecar logged no {needle:?} within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_a_bad_config_and_applies_a_good_one_under_traffic() -> Result<()> {
    let [a, b] =
        <[Backend; 2]>::try_from(Backend::start_all(&["a", "b"]).await?).expect("two backends");
    let first = config(a.addr(), "", "", "");
    let sidecar = Sidecar::start(&first).await?;
    let http = sidecar.listener("http")?;
    let client = HttpClient::http1();
    sidecar.explain(
        async {
            let backend = |r: Reply| r.header("x-backend").unwrap_or("?").to_string();
            ensure!(backend(client.get(http, "/").await?.ok()?) == "a");

            // A route to an upstream that does not exist: refused whole, with
            // the field and its line in the log, and the running config stays.
            let bad = config(
                a.addr(),
                "",
                "  - name: v2\n    uri: /v2/*\n    upstream: nope\n",
                "",
            );
            let line = line_of(&bad, "upstream: nope")?;
            sidecar.reload(&bad)?;
            let stderr = wait_stderr(&sidecar, "reload refused").await?;
            let want = format!("sidecar.yaml:{line}:");
            ensure!(
                stderr.lines().any(|l| l.contains("reload refused")
                    && l.contains(&want)
                    && l.contains("routes[1].upstream: unknown upstream `nope`")),
                "the refusal should name the file's line {line} and the field \
                 routes[1].upstream; the sidecar logged:\n{stderr}"
            );
            let shown = sidecar.admin_get("/config").await?.ok()?;
            ensure!(
                shown.text() == first,
                "/config after a refused reload shows:\n{}",
                shown.text()
            );
            ensure!(backend(client.get(http, "/").await?.ok()?) == "a");
            ensure!(backend(client.get(http, "/v2/x").await?.ok()?) == "a");

            // A good config: a new route and upstream, and `web` itself
            // changed (so rebuilt) while a request to it is in flight.
            let slow = start_slow(&sidecar, http).await?;
            let good = config(
                a.addr(),
                "    retries: 1\n",
                "  - name: v2\n    uri: /v2/*\n    upstream: v2\n",
                &format!("  - name: v2\n    nodes:\n      \"{}\": 1\n", b.addr()),
            );
            sidecar.reload(&good)?;
            let deadline = Instant::now() + DEADLINE;
            loop {
                let reply = client.get(http, "/v2/x").await?.ok()?;
                if backend(reply) == "b" {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("the new route did not answer within {DEADLINE:?}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ensure!(
                !slow.is_finished(),
                "the slow request ended before the reload took effect: \
                 nothing was in flight across it"
            );
            let shown = sidecar.admin_get("/config").await?.ok()?;
            ensure!(
                shown.text() == good,
                "/config after the reload shows:\n{}",
                shown.text()
            );
            ensure!(backend(client.get(http, "/").await?.ok()?) == "a");
            finish_slow(slow).await
        }
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_request_in_flight_then_exits_0() -> Result<()> {
    let a = Backend::start("a").await?;
    let sidecar =
        Sidecar::start_with(&config(a.addr(), "", "", ""), &["--drain-timeout", "20s"]).await?;
    let http = sidecar.listener("http")?;
    sidecar.explain(
        async {
            let slow = start_slow(&sidecar, http).await?;
            sidecar.process().terminate()?;

            // The listener closes at once; the request in flight goes on.
            let deadline = Instant::now() + DEADLINE;
            loop {
                match TcpStream::connect(http).await {
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
                    // Caught in the backlog as the listener closed: try again.
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                    Err(e) => bail!("connecting after SIGTERM failed oddly: {e}"),
                    Ok(_) => {}
                }
                if Instant::now() >= deadline {
                    bail!("the listener still took connections {DEADLINE:?} after SIGTERM");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if slow.is_finished() {
                bail!(
                    "the slow request ended before the listener closed ({:?}); \
                     the sidecar's exit: {:?}",
                    slow.await?,
                    sidecar.process().try_exit()?
                );
            }
            finish_slow(slow).await?;

            // Drained well before the 20 s drain deadline.
            let status = sidecar.process().wait_exit(Duration::from_secs(5)).await?;
            ensure!(
                status.code() == Some(0),
                "the sidecar exited with {status} after draining"
            );
            Ok(())
        }
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_at_start_exits_2_naming_the_field_and_line() -> Result<()> {
    let node = "127.0.0.1:9";
    let cases = [
        (
            "an unknown upstream",
            config(
                node.parse()?,
                "",
                "  - name: v2\n    uri: /v2/*\n    upstream: nope\n",
                "",
            ),
            "upstream: nope",
            "routes[1].upstream: unknown upstream `nope` (upstreams: web)",
        ),
        (
            "a value of the wrong type",
            config(node.parse()?, "    retries: many\n", "", ""),
            "retries: many",
            "upstreams[0].retries: invalid type",
        ),
    ];
    for (case, text, at, want) in cases {
        let file = ConfigFile::new(&text)?;
        let mut process = file.spawn(&[])?;
        let status = process.wait_exit(DEADLINE).await.context(case)?;
        ensure!(status.code() == Some(2), "{case}: exited with {status}");
        let line = line_of(&text, at)?;
        let prefix = format!("sidecar: {}:{line}:", file.path().display());
        let stderr = process.stderr();
        ensure!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(want)),
            "{case}: expected a line starting {prefix:?} and naming {want:?}; \
             standard error was:\n{stderr}"
        );
        if let Ok(line) = process.next_line(Duration::from_secs(1)).await {
            bail!("{case}: the sidecar printed {line:?}");
        }
    }
    Ok(())
}
