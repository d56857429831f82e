//! The HTTP/1.1 probe: a request encoded once per endpoint and sent on a
//! kept connection; of the answer, the status decides, and the framing
//! headers say how much body to skip before the connection can carry the
//! next probe.
//!
//! A health check needs the status line and nothing else, so this is
//! deliberately smaller than a client: no response headers kept, no body
//! kept. A body with a `Content-Length` is read and dropped; a chunked or
//! close-delimited body, or `Connection: close`, ends the connection once
//! the status is known, and the next probe connects again. That keeps a
//! probe to one write and usually one read, which is what lets a thousand
//! endpoints be probed every second for a few percent of a core (a general
//! client costs about half as much again per probe).

use std::net::SocketAddr;

use http::{HeaderMap, HeaderValue, Method, header, uri::PathAndQuery};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest response head read; a larger one fails the probe.
const MAX_HEAD: usize = 16 * 1024;

/// Headers parsed in a response head; more fail the probe.
const MAX_HEADERS: usize = 64;

/// One endpoint's HTTP probe and its kept connection.
#[derive(Debug)]
pub(crate) struct HttpProbe {
    /// The whole request, encoded once.
    request: Vec<u8>,
    /// A `HEAD` request: the answer has no body whatever it says.
    head: bool,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
}

/// What the request carries, from the check's config.
pub(crate) struct RequestParts<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a PathAndQuery,
    pub(crate) host: &'a HeaderValue,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
}

// === impl HttpProbe ===

impl HttpProbe {
    pub(crate) fn new(parts: RequestParts<'_>) -> Self {
        let mut r = Vec::with_capacity(128 + parts.body.len());
        r.extend_from_slice(parts.method.as_str().as_bytes());
        r.push(b' ');
        r.extend_from_slice(parts.path.as_str().as_bytes());
        r.extend_from_slice(b" HTTP/1.1\r\n");
        let mut line = |name: &[u8], value: &[u8]| {
            r.extend_from_slice(name);
            r.extend_from_slice(b": ");
            r.extend_from_slice(value);
            r.extend_from_slice(b"\r\n");
        };
        if !parts.headers.contains_key(header::HOST) {
            line(b"host", parts.host.as_bytes());
        }
        for (name, value) in parts.headers {
            // The probe frames its own body.
            if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
                line(name.as_str().as_bytes(), value.as_bytes());
            }
        }
        if !parts.body.is_empty() {
            line(b"content-length", parts.body.len().to_string().as_bytes());
        }
        r.extend_from_slice(b"\r\n");
        r.extend_from_slice(parts.body);
        HttpProbe {
            request: r,
            head: parts.method == Method::HEAD,
            conn: None,
            buf: Vec::new(),
        }
    }

    /// Sends the request and returns the answer's status: on the kept
    /// connection if there is one, and on a new one if that fails (the
    /// server may have closed it while idle). The caller bounds the time.
    pub(crate) async fn probe(&mut self, addr: SocketAddr) -> Result<u16, BoxError> {
        if let Some(mut stream) = self.conn.take()
            && let Ok((status, reuse)) = self.exchange(&mut stream).await
        {
            self.conn = reuse.then_some(stream);
            return Ok(status);
        }
        let mut stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let (status, reuse) = self.exchange(&mut stream).await?;
        self.conn = reuse.then_some(stream);
        Ok(status)
    }

    /// One request and its answer; returns the status and whether the
    /// connection can carry another request.
    async fn exchange(&mut self, stream: &mut TcpStream) -> Result<(u16, bool), BoxError> {
        stream.write_all(&self.request).await?;
        self.buf.clear();
        let head = loop {
            match parse_head(&self.buf)? {
                // An interim answer (100 Continue, 103 Early Hints) comes
                // before the real one.
                Some(h) if (100..200).contains(&h.status) && h.status != 101 => {
                    self.buf.drain(..h.len);
                }
                Some(h) => break h,
                None if self.buf.len() >= MAX_HEAD => {
                    return Err(format!("response head longer than {MAX_HEAD} bytes").into());
                }
                None => _ = read_some(stream, &mut self.buf).await?,
            }
        };
        let status = head.status;
        let body_len = match head.framing {
            _ if self.head || matches!(status, 101 | 204 | 304) => 0,
            Framing::Length(n) => n,
            // The length is unknown without decoding: the status is all we
            // need, and the connection goes.
            Framing::Chunked | Framing::UntilClose => return Ok((status, false)),
        };
        let have = (self.buf.len() - head.len) as u64;
        let mut left = body_len.saturating_sub(have);
        while left > 0 {
            self.buf.clear();
            left = left.saturating_sub(read_some(stream, &mut self.buf).await? as u64);
        }
        // Bytes past the answer mean the two sides disagree on framing.
        let reuse = !head.close && status != 101 && have <= body_len;
        Ok((status, reuse))
    }
}

/// What a complete response head says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    framing: Framing,
    /// `Connection: close`, or HTTP/1.0.
    close: bool,
    /// Its length in bytes.
    len: usize,
}

/// How an answer's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// The response head at the start of `buf`, or `None` while it is
/// incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, BoxError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.ok_or("response without a status")?;
    let mut framing = Framing::UntilClose;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or("bad content-length")?;
            framing = Framing::Length(n);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    Ok(Some(Head {
        status,
        framing,
        close,
        len,
    }))
}

/// Reads what is there into `buf`; fails on end of stream.
async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, BoxError> {
    buf.reserve(1024);
    match stream.read_buf(buf).await? {
        0 => Err("the server closed the connection before answering".into()),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{io::AsyncReadExt, net::TcpListener, sync::mpsc};

    use super::*;

    /// Closes the connection after this answer.
    const CLOSE: bool = true;
    const KEEP: bool = false;

    /// A server that answers each request with the next of `answers`,
    /// written `piece` bytes at a time, and reports each connection it
    /// accepts and each request it reads.
    async fn server(
        answers: Vec<(&'static [u8], bool)>,
        piece: usize,
    ) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = tx.send("connection".into());
                let mut req = vec![0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut req).await {
                    let _ = tx.send(String::from_utf8_lossy(&req[..n]).into_owned());
                    let Some((answer, close)) = answers.next() else {
                        return;
                    };
                    for chunk in answer.chunks(piece) {
                        let _ = s.write_all(chunk).await;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    if close {
                        break;
                    }
                }
            }
        });
        (addr, rx)
    }

    fn probe(method: Method, body: &'static [u8]) -> HttpProbe {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", HeaderValue::from_static("probe"));
        headers.insert("content-length", HeaderValue::from_static("99"));
        HttpProbe::new(RequestParts {
            method: &method,
            path: &PathAndQuery::from_static("/health?x=1"),
            host: &HeaderValue::from_static("svc.local"),
            headers: &headers,
            body,
        })
    }

    fn connections(rx: &mut mpsc::UnboundedReceiver<String>) -> (usize, Vec<String>) {
        let log: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let n = log.iter().filter(|l| *l == "connection").count();
        (n, log)
    }

    #[tokio::test]
    async fn the_request_is_encoded_once_with_its_own_framing() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let (addr, mut seen) = server(vec![(answer, KEEP)], 7).await;
        let mut p = probe(Method::GET, b"");
        assert_eq!(p.probe(addr).await.expect("probe"), 200);
        assert!(p.conn.is_some(), "a sized body keeps the connection");
        let (_, log) = connections(&mut seen);
        let want = "GET /health?x=1 HTTP/1.1\r\nhost: svc.local\r\nuser-agent: probe\r\n\r\n";
        assert_eq!(log[1], want);
        let post = probe(Method::POST, b"ping");
        assert!(post.request.ends_with(b"content-length: 4\r\n\r\nping"));
    }

    #[tokio::test]
    async fn split_heads_and_interim_answers_on_one_connection() {
        let (addr, mut seen) = server(
            vec![
                (
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nx: y\r\n\r\n",
                    KEEP,
                ),
                (
                    b"HTTP/1.1 302 Found\r\nlocation: /\r\ncontent-length: 3\r\n\r\nabc",
                    KEEP,
                ),
                (b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", KEEP),
            ],
            3,
        )
        .await;
        let mut p = probe(Method::GET, b"");
        assert_eq!(p.probe(addr).await.expect("probe"), 204);
        assert_eq!(p.probe(addr).await.expect("probe"), 302);
        let mut head = probe(Method::HEAD, b"");
        head.conn = p.conn.take();
        // A HEAD answer's length describes a body that is not sent.
        assert_eq!(head.probe(addr).await.expect("probe"), 200);
        assert!(head.conn.is_some());
        assert_eq!(connections(&mut seen).0, 1);
    }

    #[tokio::test]
    async fn chunked_closing_or_overlong_answers_end_the_connection() {
        let (addr, mut seen) = server(
            vec![
                (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", KEEP),
                (b"HTTP/1.1 500 Oops\r\nConnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n", KEEP),
                (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", KEEP),
                (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nextra", KEEP),
                (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", KEEP),
            ],
            64,
        )
        .await;
        let mut p = probe(Method::GET, b"");
        for want in [200, 500, 200, 200, 200] {
            assert_eq!(p.probe(addr).await.expect("probe"), want);
        }
        assert_eq!(connections(&mut seen).0, 5);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_made_again() {
        let (addr, mut seen) = server(
            vec![
                (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", CLOSE),
                (b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n", KEEP),
            ],
            64,
        )
        .await;
        let mut p = probe(Method::GET, b"");
        assert_eq!(p.probe(addr).await.expect("probe"), 200);
        // Kept, but closed by the server meanwhile.
        assert!(p.conn.is_some());
        assert_eq!(p.probe(addr).await.expect("probe"), 201);
        assert_eq!(connections(&mut seen).0, 2);
    }

    #[tokio::test]
    async fn bad_answers_fail_the_probe() {
        let (addr, _seen) = server(vec![(b"SSH-2.0-OpenSSH\r\n\r\n", KEEP)], 64).await;
        assert!(probe(Method::GET, b"").probe(addr).await.is_err());

        let big = format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let big: &'static [u8] = Vec::leak(big.into_bytes());
        let (addr, _seen) = server(vec![(big, KEEP)], 4096).await;
        let err = probe(Method::GET, b"").probe(addr).await.unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");

        let (addr, _seen) = server(
            vec![(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc", CLOSE)],
            64,
        )
        .await;
        assert!(
            probe(Method::GET, b"").probe(addr).await.is_err(),
            "a cut body"
        );

        let refused = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        assert!(probe(Method::GET, b"").probe(refused).await.is_err());
    }
}
