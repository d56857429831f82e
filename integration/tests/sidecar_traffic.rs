//! The sidecar's data plane with real backends: round robin over discovered
//! endpoints on HTTP/1.1 and h2c, forwarded and hop-by-hop headers, large
//! bodies streamed both ways without buffering, TCP listeners, and retries
//! of refused connections.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use hyper::{Method, Version, header};
use integration::{
    Adapter, Backend, EndpointFile, HttpClient, Sidecar, closed_port, empty_body, full_body,
    http_request, read_body, scrape, service_file, streamed_body, web_config, web_nodes,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How long one awaited change or exchange may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// An HTTP listener whose every request goes to upstream `web`, the service
/// `web` of the file adapter at `adapter`.
fn discovered_config(adapter: SocketAddr) -> String {
    web_config(
        Some(adapter),
        "    discovery_type: file\n    service_name: web\n",
    )
}

/// An HTTP listener whose every request goes to upstream `web` of static
/// `nodes`, with `extra` (indented upstream fields) added to the upstream.
fn static_config(nodes: &[SocketAddr], extra: &str) -> String {
    web_config(None, &format!("{extra}{}", web_nodes(nodes)))
}

async fn start_adapter(file: &EndpointFile) -> Result<Adapter> {
    let path = file.path().to_str().context("non-UTF-8 temp path")?;
    Adapter::start_binary("discovery-file", &["--file", path]).await
}

/// Sends `n` sequential `GET /` and counts the answers by `x-backend`.
async fn count_backends(
    client: &HttpClient,
    addr: SocketAddr,
    n: usize,
    version: Version,
) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let reply = client
            .get(addr, "/")
            .await
            .and_then(|r| r.ok())
            .with_context(|| format!("request {i}"))?;
        ensure!(
            reply.version == version,
            "request {i}: answered in {:?}, not {version:?}",
            reply.version
        );
        let name = reply
            .header("x-backend")
            .with_context(|| format!("request {i}: no x-backend header"))?
            .to_string();
        ensure!(
            reply.text() == format!("hello from {name}\n"),
            "request {i}: body {:?} from {name}",
            reply.text()
        );
        *counts.entry(name).or_default() += 1;
    }
    Ok(counts)
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_reaches_every_discovered_endpoint_over_http1_and_h2c() -> Result<()> {
    let backends = Backend::start_all(&["a", "b", "c"]).await?;
    let file = EndpointFile::new(&service_file("web", &backends))?;
    let adapter = start_adapter(&file).await?;
    // One worker runs the single-threaded runtime, two the multi-threaded one.
    for workers in ["1", "2"] {
        let sidecar =
            Sidecar::start_with(&discovered_config(adapter.grpc()), &["--workers", workers])
                .await?;
        round_robin_over_three(&sidecar)
            .await
            .with_context(|| format!("--workers {workers}"))?;
    }
    Ok(())
}

async fn round_robin_over_three(sidecar: &Sidecar) -> Result<()> {
    sidecar.explain(
        async {
            sidecar.wait_ready(DEADLINE).await?;
            let http = sidecar.listener("http")?;
            for (client, version) in [
                (HttpClient::http1(), Version::HTTP_11),
                (HttpClient::h2c(), Version::HTTP_2),
            ] {
                let got = count_backends(&client, http, 30, version).await?;
                ensure!(
                    got == counts(&[("a", 10), ("b", 10), ("c", 10)]),
                    "{version:?}: 30 requests over three endpoints of equal weight \
                     spread as {got:?}"
                );
            }
            Ok(())
        }
        .await,
    )
}

/// `/headers` of the demo backend: one `name: value` line per header.
fn header_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect()
}

fn header<'a>(lines: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_reach_the_backend_and_hop_by_hop_headers_do_not() -> Result<()> {
    let backend = Backend::start("a").await?;
    let sidecar = Sidecar::start(&static_config(&[backend.addr()], "")).await?;
    sidecar.explain(
        async {
            let http = sidecar.listener("http")?;
            let req = http_request(Method::GET, http, "/headers")
                .header(header::HOST, "app.example:8080")
                .header(header::CONNECTION, "x-foo")
                .header("x-foo", "secret")
                .header("keep-alive", "timeout=5")
                .header("proxy-authorization", "Basic Zm9vOmJhcg==")
                .header("x-keep", "1")
                .header("x-forwarded-for", "10.1.2.3")
                .body(empty_body())?;
            let reply = HttpClient::http1().send(req).await?.ok()?;
            let lines = header_lines(&reply.text());
            let shown = reply.text();
            ensure!(
                header(&lines, "x-forwarded-for") == ["10.1.2.3, 127.0.0.1"],
                "X-Forwarded-For should append the client to the one sent; \
                 the backend saw:\n{shown}"
            );
            ensure!(
                header(&lines, "host") == ["app.example:8080"],
                "with pass_host: pass, the client's Host should reach the backend as it \
                 was sent, port included; the backend saw:\n{shown}"
            );
            ensure!(
                header(&lines, "x-keep") == ["1"],
                "an end-to-end header was lost; the backend saw:\n{shown}"
            );
            for hop in ["x-foo", "keep-alive", "proxy-authorization"] {
                ensure!(
                    header(&lines, hop).is_empty(),
                    "hop-by-hop header {hop} reached the backend:\n{shown}"
                );
            }
            ensure!(
                !header(&lines, "connection")
                    .iter()
                    .any(|v| v.contains("x-foo")),
                "the client's Connection header reached the backend:\n{shown}"
            );

            // Without forwarding fields of its own, a request gets each
            // once; a Forwarded element it brings stays, before ours.
            let req = http_request(Method::GET, http, "/headers")
                .header(header::HOST, "app.example")
                .header(header::FORWARDED, "for=192.0.2.7")
                .body(empty_body())?;
            let reply = HttpClient::http1().send(req).await?.ok()?;
            let lines = header_lines(&reply.text());
            let shown = reply.text();
            for (name, want) in [
                ("x-forwarded-for", vec!["127.0.0.1"]),
                ("x-forwarded-proto", vec!["http"]),
                ("x-forwarded-host", vec!["app.example"]),
                (
                    "forwarded",
                    vec!["for=192.0.2.7", "for=127.0.0.1;proto=http;host=app.example"],
                ),
                ("host", vec!["app.example"]),
            ] {
                ensure!(
                    header(&lines, name) == want,
                    "{name} should be {want:?}; the backend saw:\n{shown}"
                );
            }

            // Over h2c the client is added as well.
            let reply = HttpClient::h2c().get(http, "/headers").await?.ok()?;
            let lines = header_lines(&reply.text());
            ensure!(
                header(&lines, "x-forwarded-for") == ["127.0.0.1"],
                "h2c: the backend saw:\n{}",
                reply.text()
            );
            // The client's authority becomes the one Host.
            ensure!(
                header(&lines, "host") == [http.to_string()],
                "h2c: Host should be the client's authority {http}; the backend saw:\n{}",
                reply.text()
            );
            Ok(())
        }
        .await,
    )
}

/// Peak resident memory of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .context("no VmHWM line in /proc/PID/status")?;
    Ok(kb * 1024)
}

const MIB: u64 = 1024 * 1024;

/// The upload's size, and the largest peak RSS that shows it was streamed.
const UPLOAD: u64 = 100 * MIB;
const RSS_BOUND: u64 = 64 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_upload_streams_through_without_being_buffered() -> Result<()> {
    let backend = Backend::start("a").await?;
    let sidecar = Sidecar::start(&static_config(&[backend.addr()], "")).await?;
    sidecar.explain(
        async {
            let http = sidecar.listener("http")?;
            // One 64 KiB chunk, shared by every frame: the test holds no
            // more than that, whatever the body's length.
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let frames = UPLOAD / chunk.len() as u64;
            let body = streamed_body(futures_util::stream::iter(
                (0..frames).map(move |_| chunk.clone()),
            ));
            let req = http_request(Method::POST, http, "/upload").body(body)?;
            let before = peak_rss(sidecar.process().pid())?;
            let reply = HttpClient::http1()
                .with_timeout(Duration::from_secs(60))
                .send(req)
                .await?
                .ok()?;
            ensure!(
                reply.text().trim() == UPLOAD.to_string(),
                "the backend counted {:?} bytes, not {UPLOAD}",
                reply.text().trim()
            );
            let peak = peak_rss(sidecar.process().pid())?;
            ensure!(
                peak < RSS_BOUND,
                "the sidecar's peak RSS reached {} MiB (from {} MiB before the upload): \
                 it held the body rather than streaming it",
                peak / MIB,
                before / MIB
            );
            Ok(())
        }
        .await,
    )
}

/// The byte at `pos` of the echoed body: each 64 KiB block has its own value,
/// so a lost, repeated or reordered block shows.
fn pattern(pos: u64) -> u8 {
    ((pos / (64 * 1024)) % 251) as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_streams_a_body_back_intact() -> Result<()> {
    const LEN: u64 = 8 * MIB;
    const CHUNK: u64 = 64 * 1024;
    let backend = Backend::start("a").await?;
    let sidecar = Sidecar::start(&static_config(&[backend.addr()], "")).await?;
    sidecar.explain(
        async {
            let http = sidecar.listener("http")?;
            let body = streamed_body(futures_util::stream::iter(
                (0..LEN / CHUNK).map(|i| Bytes::from(vec![pattern(i * CHUNK); CHUNK as usize])),
            ));
            let req = http_request(Method::POST, http, "/echo")
                .header(header::CONTENT_LENGTH, LEN)
                .body(body)?;
            let resp = HttpClient::http1().start(req).await?;
            ensure!(resp.status() == 200, "/echo answered {}", resp.status());
            let mut pos = 0u64;
            read_body(resp.into_body(), Duration::from_secs(30), |data| {
                for (i, b) in data.iter().enumerate() {
                    let at = pos + i as u64;
                    if *b != pattern(at) {
                        bail!("byte {at} is {b}, not {}", pattern(at));
                    }
                }
                pos += data.len() as u64;
                Ok(())
            })
            .await?;
            ensure!(pos == LEN, "echoed {pos} bytes of {LEN}");
            Ok(())
        }
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_balances_connections_over_its_upstream() -> Result<()> {
    let backends = Backend::start_all(&["a", "b"]).await?;
    let nodes: String = backends
        .iter()
        .map(|b| format!("      \"{}\": 1\n", b.addr()))
        .collect();
    let config = format!(
        "\
listeners:
  - name: raw
    address: 127.0.0.1:0
    protocol: tcp
    upstream: pool
upstreams:
  - name: pool
    nodes:
{nodes}admin:
  address: 127.0.0.1:0
"
    );
    let sidecar = Sidecar::start(&config).await?;
    sidecar.explain(
        async {
            let raw = sidecar.listener("raw")?;
            let mut got = BTreeMap::new();
            for i in 0..6 {
                let answer = tokio::time::timeout(DEADLINE, raw_http_get(raw))
                    .await
                    .with_context(|| format!("connection {i}: no answer within {DEADLINE:?}"))?
                    .with_context(|| format!("connection {i}"))?;
                ensure!(
                    answer.starts_with("HTTP/1.1 200"),
                    "connection {i}: {answer:?}"
                );
                let name = answer
                    .lines()
                    .find_map(|l| l.strip_prefix("hello from "))
                    .with_context(|| format!("connection {i}: no greeting in {answer:?}"))?;
                *got.entry(name.to_string()).or_default() += 1;
            }
            ensure!(
                got == counts(&[("a", 3), ("b", 3)]),
                "6 connections spread as {got:?}"
            );
            Ok(())
        }
        .await,
    )
}

/// An HTTP/1.1 request written by hand on a raw TCP connection; the whole
/// answer, read until the server closes.
async fn raw_http_get(addr: SocketAddr) -> Result<String> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(b"GET / HTTP/1.1\r\nHost: pool\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// With `pass_host: node`, every attempt names its own endpoint in `Host`:
/// a request retried after a refused connection reaches the live endpoint
/// with that endpoint's address, not the refused one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_names_the_endpoint_that_answers_in_host() -> Result<()> {
    let backend = Backend::start("a").await?;
    let nodes = [backend.addr(), closed_port()?];
    let extra = "    retries: 1\n    pass_host: node\n";
    let sidecar = Sidecar::start(&static_config(&nodes, extra)).await?;
    sidecar.explain(
        async {
            let http = sidecar.listener("http")?;
            let client = HttpClient::http1();
            // Round robin over the two: every other request tries the
            // closed port first.
            for i in 0..6 {
                let req = http_request(Method::GET, http, "/headers")
                    .header(header::HOST, "app.example")
                    .body(empty_body())?;
                let reply = client.send(req).await?.ok()?;
                let lines = header_lines(&reply.text());
                ensure!(
                    header(&lines, "host") == [backend.addr().to_string()],
                    "request {i}: with pass_host: node the backend should see its own \
                     address as Host; it saw:\n{}",
                    reply.text()
                );
            }
            let retries = scrape(sidecar.admin())
                .await?
                .get("sidecar_upstream_retries_total", &[("upstream", "web")]);
            ensure!(
                retries.is_some_and(|r| r >= 3.0),
                "{retries:?} retries: the closed port was not tried first as often as expected"
            );
            Ok(())
        }
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_on_another_endpoint() -> Result<()> {
    let backends = Backend::start_all(&["a", "b"]).await?;
    let nodes = [backends[0].addr(), backends[1].addr(), closed_port()?];

    // With retries, every request is answered, by the two live endpoints.
    let sidecar = Sidecar::start(&static_config(&nodes, "    retries: 2\n")).await?;
    sidecar.explain(
        async {
            let http = sidecar.listener("http")?;
            let client = HttpClient::http1();
            let got = count_backends(&client, http, 30, Version::HTTP_11).await?;
            ensure!(
                got.keys().collect::<Vec<_>>() == ["a", "b"] && got.values().sum::<usize>() == 30,
                "30 requests were answered as {got:?}"
            );
            // A small body is kept for the retry and sent again whole.
            for i in 0..6 {
                let req = http_request(Method::POST, http, "/upload").body(full_body("hello"))?;
                let reply = client.send(req).await?.ok()?;
                ensure!(
                    reply.text().trim() == "5",
                    "upload {i}: the backend counted {:?} bytes",
                    reply.text()
                );
            }
            Ok(())
        }
        .await,
    )?;

    // The control: without retries, the closed port's turns fail.
    let sidecar = Sidecar::start(&static_config(&nodes, "    retries: 0\n")).await?;
    sidecar.explain(
        async {
            let http = sidecar.listener("http")?;
            let client = HttpClient::http1();
            let mut failed = 0;
            for _ in 0..30 {
                let reply = client.get(http, "/").await?;
                match reply.status.as_u16() {
                    200 => {}
                    502 => failed += 1,
                    other => bail!("answered {other}: {}", reply.text()),
                }
            }
            ensure!(
                failed == 10,
                "with retries: 0, {failed} of 30 requests failed, not the closed port's 10"
            );
            Ok(())
        }
        .await,
    )
}

/// An upstream that answers each request with canned bytes chosen by its
/// path, to see every way a response can be framed cross the sidecar.
async fn canned_upstream() -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let (reply, close): (&[u8], bool) = match path.as_str() {
                        "/chunked" => (
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
                            false,
                        ),
                        "/both" => (
                            b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n4\r\nboth\r\n0\r\n\r\n",
                            false,
                        ),
                        "/continue" => (
                            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                            false,
                        ),
                        "/close" => (
                            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nread to the end",
                            true,
                        ),
                        "/short" => (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", true),
                        "/empty" => (b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n", false),
                        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain", false),
                    };
                    if conn.write_all(reply).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_framing_crosses_the_sidecar() -> Result<()> {
    let (upstream, task) = canned_upstream().await?;
    let sidecar = Sidecar::start(&web_config(None, &web_nodes(&[upstream]))).await?;
    let addr = sidecar.listener("http")?;
    let client = HttpClient::http1().with_timeout(Duration::from_secs(10));
    for round in 0..2 {
        for (path, status, body) in [
            ("/plain", 200, "plain"),
            ("/chunked", 200, "hello world"),
            ("/both", 200, "both"),
            ("/continue", 200, "ok"),
            ("/close", 200, "read to the end"),
            ("/empty", 204, ""),
        ] {
            let reply = client.get(addr, path).await?;
            ensure!(
                reply.status == status && reply.text() == body,
                "round {round} {path}: {} {:?}",
                reply.status,
                reply.text()
            );
        }
        // A body cut short reaches the client as a failure, not as a
        // complete answer, and the next request still goes through.
        let short = client.get(addr, "/short").await;
        ensure!(
            short.as_ref().map_or(true, |r| r.body.len() < 10),
            "a cut body arrived whole: {:?}",
            short.map(|r| r.text())
        );
    }
    task.abort();
    Ok(())
}
