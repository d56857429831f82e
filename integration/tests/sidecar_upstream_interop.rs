//! The sidecar's own HTTP/1.1 client against an upstream nobody on this
//! team wrote: Python's `http.server`. It answers in HTTP/1.0 with a body
//! that ends when it closes the connection, in HTTP/1.1 with a chunked body
//! and trailers (which reach a client that asked for them), with no body
//! for HEAD, 204 and 304, and echoes a POST.
//! Each case runs several times in a row, so a pooled connection in the
//! wrong state (closed, or with a body left unread) would show.

use std::{net::SocketAddr, process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use hyper::{Method, header};
use integration::{
    HttpClient, Process, Sidecar, empty_body, full_body, http_request, web_config, web_nodes,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How long one awaited exchange may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// The upstream: Python's threading HTTP server on a port the OS chose,
/// printed on the first line. Response writing (status line, fields,
/// connection handling) is the standard library's.
const SERVER: &str = r#"
import http.server, sys

PATTERN = bytes(range(256)) * 400

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/close":
            # HTTP/1.0 without a length: the body ends at the close.
            self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(PATTERN)
            self.close_connection = True
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "x-count")
            self.end_headers()
            for i in range(5):
                data = str(i).encode() * 1000
                self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
            self.wfile.write(b"0\r\nx-count: 5\r\n\r\n")
        elif self.path == "/304":
            self.send_response(304)
            self.send_header("ETag", '"v1"')
            self.end_headers()
        elif self.path == "/204":
            self.send_response(204)
            self.end_headers()
        else:
            self.send_error(404)

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// Python's server, stopped when dropped.
struct PythonUpstream {
    addr: SocketAddr,
    _process: Process,
}

impl PythonUpstream {
    async fn start() -> Result<Self> {
        let mut cmd = Command::new("python3");
        cmd.arg("-c").arg(SERVER);
        let mut process = Process::spawn("python3 http.server", cmd)
            .context("this test needs python3 on PATH (Debian: apt-get install python3)")?;
        let port: u16 = process
            .next_line(DEADLINE)
            .await?
            .trim()
            .parse()
            .context("python3 http.server printed no port")?;
        Ok(Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _process: process,
        })
    }
}

/// Sends `GET path` with `extra` fields on a connection of its own and
/// reads the raw answer until the sidecar closes it.
async fn raw_get(addr: SocketAddr, path: &str, extra: &str) -> Result<String> {
    let mut conn = TcpStream::connect(addr).await?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: interop\r\n{extra}Connection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut raw))
        .await
        .context("the sidecar did not close the connection")??;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// The body `/close` sends: 0..=255, 400 times.
fn pattern() -> Vec<u8> {
    (0..400).flat_map(|_| 0..=255u8).collect()
}

#[tokio::test]
async fn python_http_server_upstream_in_every_framing() -> Result<()> {
    let upstream = PythonUpstream::start().await?;
    let sidecar = Sidecar::start(&web_config(None, &web_nodes(&[upstream.addr]))).await?;
    let http = sidecar.listener("http")?;
    let client = HttpClient::http1();

    for i in 0..3 {
        let reply = client.get(http, "/close").await?.ok()?;
        ensure!(
            reply.body.as_ref() == pattern().as_slice(),
            "close-delimited body {i}: {} bytes, not the {} sent",
            reply.body.len(),
            pattern().len()
        );
    }

    // A client that takes trailers gets the upstream's: its `Trailer`
    // field is forwarded, and hyper's server sends only declared ones.
    let raw = raw_get(http, "/chunked", "TE: trailers\r\n").await?;
    ensure!(
        raw.contains("\r\n0\r\nx-count: 5\r\n\r\n"),
        "no x-count trailer after the last chunk: {:?}",
        &raw[raw.len().saturating_sub(120)..]
    );

    let chunked: Vec<u8> = (0..5u8).flat_map(|i| [b'0' + i; 1000]).collect();
    for i in 0..3 {
        let reply = client.get(http, "/chunked").await?.ok()?;
        ensure!(
            reply.body.as_ref() == chunked.as_slice(),
            "chunked body {i}: {} bytes",
            reply.body.len()
        );
    }

    for i in 0..2 {
        let req = http_request(Method::HEAD, http, "/any").body(empty_body())?;
        let reply = client.send(req).await?.ok()?;
        ensure!(
            reply
                .headers
                .get(header::CONTENT_LENGTH)
                .map(|v| v.as_bytes())
                == Some(b"12345"),
            "HEAD {i}: content-length {:?}",
            reply.headers.get(header::CONTENT_LENGTH)
        );
        ensure!(
            reply.body.is_empty(),
            "HEAD {i}: a body of {}",
            reply.body.len()
        );
        for (path, status) in [("/204", 204), ("/304", 304)] {
            let reply = client.get(http, path).await?;
            ensure!(
                reply.status == status && reply.body.is_empty(),
                "{path} {i}: {} with {} bytes",
                reply.status,
                reply.body.len()
            );
        }
    }
    let reply = client.get(http, "/304").await?;
    ensure!(
        reply.headers.get(header::ETAG).map(|v| v.as_bytes()) == Some(br#""v1""#),
        "304 without its ETag: {:?}",
        reply.headers
    );

    let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for i in 0..2 {
        let req = http_request(Method::POST, http, "/echo").body(full_body(sent.clone()))?;
        let reply = client.send(req).await?.ok()?;
        ensure!(
            reply.body.as_ref() == sent.as_slice(),
            "echo {i}: {} bytes back of {}",
            reply.body.len(),
            sent.len()
        );
    }

    // After all of that, the close-delimited case once more.
    let reply = client.get(http, "/close").await?.ok()?;
    ensure!(
        reply.body.len() == pattern().len(),
        "last /close: {} bytes",
        reply.body.len()
    );
    Ok(())
}
