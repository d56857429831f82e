//! The upstream side of HTTP/1.1 for requests whose body is in hand: the
//! request written with one write, the response head parsed with httparse
//! and its body framed (RFC 9112 §6.3) and read by the request's own task.
//!
//! hyper's client runs every connection as a task of its own behind a
//! request channel and a response oneshot; for a proxy that already holds
//! the whole request, that hand-off and the second task's wake-ups cost more
//! than the exchange itself. Streamed request bodies still go through hyper,
//! which writes the body while it reads the answer.

use std::{
    io,
    mem::MaybeUninit,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use tokio::{io::AsyncWriteExt, net::TcpStream, time::Sleep};

use super::client::{ConnectionStats, OpenConn};

/// Largest response head (status line and fields) accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Most fields in a response head (hyper's default limit is 100).
const MAX_FIELDS: usize = 100;

/// Longest chunk-size line or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Largest request body copied into the head's write.
const INLINE_BODY: usize = 4096;

/// Room asked of the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;

/// One upstream connection and its buffers.
pub(crate) struct H1Conn {
    io: TcpStream,
    /// Bytes read and not yet used.
    buf: BytesMut,
    /// The request being written; reused.
    out: Vec<u8>,
    /// The timer of the exchange's deadline, kept between requests: moving
    /// a registered timer's deadline later is an atomic store, where a new
    /// one per request takes the timer wheel's lock twice.
    pub(crate) deadline: Option<Pin<Box<Sleep>>>,
    _open: OpenConn,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before a response")]
    Closed,
    #[error("invalid response from upstream: {0}")]
    Invalid(String),
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 1xx, 204, 304, or a length of 0).
    Empty,
    /// This many bytes still to come.
    Length(u64),
    /// Chunked: what comes next.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line.
    Size,
    /// This many bytes of chunk data.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
}

/// A response body read from an [`H1Conn`]; the connection is handed back
/// by [`H1Body::take_conn`] once the body has ended cleanly.
pub(crate) struct H1Body {
    /// Boxed: it moves between the idle stack and bodies whole.
    conn: Option<Box<H1Conn>>,
    /// Requests the connection has carried, this one included.
    pub(crate) served: u32,
    framing: Framing,
    /// Whether the connection may carry another request after this body.
    keep_alive: bool,
    done: bool,
}

// === impl H1Conn ===

impl H1Conn {
    /// A connection on `io`, counted in `stats` while it lives.
    pub(crate) fn new(io: TcpStream, stats: &Arc<ConnectionStats>) -> Box<Self> {
        Box::new(Self {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            deadline: None,
            _open: OpenConn::new(stats),
        })
    }

    /// Whether an idle connection is still open with nothing unread: one
    /// non-blocking read, as hyper's idle connection task would make.
    pub(crate) fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes the request: `method`, `target` (origin form), `headers` (a
    /// `Content-Length` among them is replaced by the body's), then `lines`
    /// (more fields, each already encoded as `name: value\r\n`) and `body`.
    pub(crate) async fn write_request(
        &mut self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        lines: &[&[u8]],
        body: Option<&Bytes>,
    ) -> io::Result<()> {
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut had_length = false;
        for (name, value) in headers {
            if name == header::CONTENT_LENGTH {
                had_length = true;
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for l in lines {
            out.extend_from_slice(l);
        }
        let len = body.map_or(0, Bytes::len);
        if len > 0 || had_length || expects_body(method) {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        // A small body rides in the same write; a large one follows it
        // rather than be copied (and keep the buffer that large).
        match body {
            Some(b) if b.len() <= INLINE_BODY => out.extend_from_slice(b),
            Some(b) => {
                self.io.write_all(&self.out).await?;
                return self.io.write_all(b).await;
            }
            None => {}
        }
        self.io.write_all(&self.out).await
    }

    /// Reads the response head to a request with `method`, skipping
    /// interim (1xx) responses. [`H1Error::Closed`] when the connection
    /// ended or was reset before any byte of it: an idle connection the
    /// upstream had closed, where the request may go again on another.
    pub(crate) async fn read_head(
        mut self: Box<Self>,
        method: &Method,
    ) -> Result<Response<H1Body>, H1Error> {
        let mut got_any = false;
        loop {
            if let Some((mut resp, version, seen)) = parse_head(&mut self.buf)? {
                let status = resp.status();
                if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                    continue;
                }
                let framing = framing(method, status, resp.headers(), seen)?;
                if seen.transfer_encoding && seen.content_length {
                    // The transfer coding decides the length (RFC 9112 §6.3);
                    // a length beside it would mislead the client.
                    resp.headers_mut().remove(header::CONTENT_LENGTH);
                }
                let keep_alive = framing != Framing::Close
                    && status != StatusCode::SWITCHING_PROTOCOLS
                    && keeps_alive(version, resp.headers(), seen);
                let body = H1Body {
                    served: 0,
                    done: framing == Framing::Empty,
                    conn: Some(self),
                    framing,
                    keep_alive,
                };
                return Ok(resp.map(|()| body));
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(H1Error::Invalid(format!(
                    "response head over {MAX_HEAD} bytes"
                )));
            }
            match self.read_more().await {
                Ok(0) if got_any => {
                    return Err(H1Error::Invalid(
                        "connection closed inside the response head".into(),
                    ));
                }
                Ok(0) => return Err(H1Error::Closed),
                Ok(_) => got_any = true,
                Err(e)
                    if !got_any
                        && matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                        ) =>
                {
                    return Err(H1Error::Closed);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_more(cx)).await
    }

    /// Reads what the socket has into `buf`; `Ok(0)` at the end.
    ///
    /// Through `AsyncRead`, not `try_read_buf`: a read shorter than the room
    /// given clears the socket's readiness, so [`Self::is_reusable`]'s probe
    /// on the next request costs no system call unless an event came since.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// Which of the fields that frame a response its head has: noted while
/// the head is parsed, so that the common response (a length, nothing
/// else) costs no lookups for the others.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    transfer_encoding: bool,
    content_length: bool,
    connection: bool,
}

/// Parses a complete response head off the front of `buf`; `None` if more
/// bytes are needed.
fn parse_head(buf: &mut BytesMut) -> Result<Option<(Response<()>, u8, Seen)>, H1Error> {
    // Left uninitialised for httparse to fill: zeroing room for every
    // possible field cost more than parsing the few there are.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let n = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(H1Error::Invalid(e.to_string())),
    };
    let code = resp.code.unwrap_or_default();
    let version = resp.version.unwrap_or(1);
    let status =
        StatusCode::from_u16(code).map_err(|_| H1Error::Invalid(format!("status code {code}")))?;
    // Where each field's name and value sit in the head, to share its bytes.
    let base = buf.as_ptr() as usize;
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_FIELDS];
    let count = resp.headers.len();
    for (span, h) in spans.iter_mut().zip(resp.headers.iter()) {
        // Offsets within a head of at most MAX_HEAD bytes fit in u32.
        let name = (h.name.as_ptr() as usize - base) as u32;
        let value = (h.value.as_ptr() as usize - base) as u32;
        *span = (name, h.name.len() as u32, value, h.value.len() as u32);
    }
    let head = buf.split_to(n).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let mut seen = Seen::default();
    for &(name, name_len, value, value_len) in &spans[..count] {
        let (name, name_len) = (name as usize, name_len as usize);
        let (value, value_len) = (value as usize, value_len as usize);
        let name = HeaderName::from_bytes(&head[name..name + name_len])
            .map_err(|_| H1Error::Invalid("a field name".into()))?;
        if name == header::CONTENT_LENGTH {
            seen.content_length = true;
        } else if name == header::TRANSFER_ENCODING {
            seen.transfer_encoding = true;
        } else if name == header::CONNECTION {
            seen.connection = true;
        }
        let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_len))
            .map_err(|_| H1Error::Invalid(format!("the value of {name}")))?;
        headers.append(name, value);
    }
    let mut out = Response::new(());
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(Some((out, version, seen)))
}

/// How the body of a response with `status` to `method` is delimited.
fn framing(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
    seen: Seen,
) -> Result<Framing, H1Error> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if seen.transfer_encoding
        && let Some(te) = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
    {
        let last = te
            .as_bytes()
            .rsplit(|&b| b == b',')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        return Ok(if last.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        });
    }
    if !seen.content_length {
        return Ok(Framing::Close);
    }
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let n = std::str::from_utf8(part.trim_ascii())
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| H1Error::Invalid("content-length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Invalid("conflicting content-length".into()));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// Whether the connection stays open after this response.
fn keeps_alive(version: u8, headers: &HeaderMap, seen: Seen) -> bool {
    let mut close = version == 0;
    if !seen.connection {
        return !close;
    }
    for v in headers.get_all(header::CONNECTION) {
        for token in v.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                close = false;
            }
        }
    }
    !close
}

/// Methods whose requests say their length even when empty.
fn expects_body(m: &Method) -> bool {
    matches!(*m, Method::POST | Method::PUT | Method::PATCH)
}

// === impl H1Body ===

impl H1Body {
    /// The connection, once the body ended cleanly and it may carry
    /// another request.
    pub(crate) fn take_conn(&mut self) -> Option<Box<H1Conn>> {
        if self.done && self.keep_alive {
            self.conn.take()
        } else {
            None
        }
    }

    /// Gives the connection back its deadline timer, for its next request.
    pub(crate) fn keep_deadline(&mut self, timer: Pin<Box<Sleep>>) {
        if let Some(c) = &mut self.conn {
            c.deadline = Some(timer);
        }
    }

    /// Ends the body with `e`; the connection closes.
    fn broken(&mut self, e: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.conn = None;
        self.done = true;
        self.keep_alive = false;
        Poll::Ready(Some(Err(e)))
    }

    /// The next frame from the connection's buffer, or `None` when more
    /// bytes are needed (or the body is done).
    fn decode(&mut self) -> Result<Option<Frame<Bytes>>, H1Error> {
        match self.conn.as_mut() {
            Some(conn) => decode(&mut self.framing, &mut self.done, &mut conn.buf),
            None => Ok(None),
        }
    }
}

/// The next frame of a body delimited by `framing` from `buf`; sets `done`
/// at its end.
fn decode(
    framing: &mut Framing,
    done: &mut bool,
    buf: &mut BytesMut,
) -> Result<Option<Frame<Bytes>>, H1Error> {
    loop {
        match *framing {
            Framing::Empty => {
                *done = true;
                return Ok(None);
            }
            Framing::Length(rem) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let (data, left) = take_up_to(buf, rem);
                *framing = if left == 0 {
                    *done = true;
                    Framing::Empty
                } else {
                    Framing::Length(left)
                };
                return Ok(Some(Frame::data(data)));
            }
            Framing::Close => {
                if buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Frame::data(buf.split().freeze())));
            }
            Framing::Chunked(Chunk::Size) => {
                let Some(end) = find_crlf(buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(H1Error::Invalid("chunk size line too long".into()));
                    }
                    return Ok(None);
                };
                let line = &buf[..end];
                let digits = line
                    .split(|&b| b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                if digits.is_empty() || digits.len() > 15 {
                    return Err(H1Error::Invalid("chunk size".into()));
                }
                let mut size = 0u64;
                for &d in digits {
                    let v = (d as char)
                        .to_digit(16)
                        .ok_or_else(|| H1Error::Invalid("chunk size".into()))?;
                    size = size * 16 + u64::from(v);
                }
                buf.advance(end + 2);
                *framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
            }
            Framing::Chunked(Chunk::Data(rem)) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let (data, left) = take_up_to(buf, rem);
                *framing = Framing::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                return Ok(Some(Frame::data(data)));
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(H1Error::Invalid("chunk data not ended by CRLF".into()));
                }
                buf.advance(2);
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(Chunk::Trailers) => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    *framing = Framing::Empty;
                    continue;
                }
                let mut fields = [httparse::EMPTY_HEADER; 32];
                match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((n, fields))) => {
                        let mut trailers = HeaderMap::new();
                        for f in fields.iter() {
                            if let (Ok(name), Ok(value)) = (
                                HeaderName::from_bytes(f.name.as_bytes()),
                                HeaderValue::from_bytes(f.value),
                            ) {
                                trailers.append(name, value);
                            }
                        }
                        buf.advance(n);
                        *framing = Framing::Empty;
                        *done = true;
                        return Ok(Some(Frame::trailers(trailers)));
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_CHUNK_LINE => {
                        return Ok(None);
                    }
                    _ => return Err(H1Error::Invalid("chunked trailer section".into())),
                }
            }
        }
    }
}

/// Up to `rem` bytes off the front of `buf` (not empty), and how many of
/// `rem` are left after them.
fn take_up_to(buf: &mut BytesMut, rem: u64) -> (Bytes, u64) {
    let n = rem.min(buf.len() as u64);
    (buf.split_to(n as usize).freeze(), rem - n)
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.decode() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) if this.done => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => return this.broken(e),
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_read_more(cx)) {
                Ok(0) if this.framing == Framing::Close => {
                    this.done = true;
                    this.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.broken(H1Error::Invalid(
                        "connection closed inside the response body".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) => return this.broken(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head `write_request` sends for `method`, `headers` and `body`.
    async fn written(method: Method, headers: &[(&str, &str)], body: Option<&str>) -> String {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let io = TcpStream::connect(addr).await.expect("connect on loopback");
        let (mut peer, _) = listener.accept().await.expect("accept");
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("valid name"),
                HeaderValue::from_str(v).expect("valid value"),
            );
        }
        let body = body.map(|b| Bytes::copy_from_slice(b.as_bytes()));
        let stats = Arc::new(ConnectionStats::default());
        let mut conn = H1Conn::new(io, &stats);
        conn.write_request(&method, "/x", &map, &[b"x-line: 1\r\n"], body.as_ref())
            .await
            .expect("write to loopback");
        drop(conn);
        let mut text = String::new();
        peer.read_to_string(&mut text)
            .await
            .expect("read the request");
        text
    }

    #[tokio::test]
    async fn the_body_decides_content_length() {
        // A client's length goes; the body's is written once, after the lines.
        let text = written(
            Method::POST,
            &[("host", "h"), ("content-length", "99")],
            Some("hello"),
        )
        .await;
        assert_eq!(
            text,
            "POST /x HTTP/1.1\r\nhost: h\r\nx-line: 1\r\ncontent-length: 5\r\n\r\nhello"
        );
        // An empty body the client announced as such keeps `0`.
        let text = written(Method::GET, &[("content-length", "0")], None).await;
        assert_eq!(
            text,
            "GET /x HTTP/1.1\r\nx-line: 1\r\ncontent-length: 0\r\n\r\n"
        );
        // A GET without one gets none; a POST without a body says `0`.
        let text = written(Method::GET, &[], None).await;
        assert_eq!(text, "GET /x HTTP/1.1\r\nx-line: 1\r\n\r\n");
        let text = written(Method::POST, &[], None).await;
        assert_eq!(
            text,
            "POST /x HTTP/1.1\r\nx-line: 1\r\ncontent-length: 0\r\n\r\n"
        );
    }

    fn head(text: &str) -> (Response<()>, u8, Seen) {
        let mut buf = BytesMut::from(text.as_bytes());
        parse_head(&mut buf).expect("valid").expect("complete")
    }

    #[test]
    fn heads_parse_and_frame() {
        let (r, v, s) = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello");
        assert_eq!((r.status(), v), (StatusCode::OK, 1));
        assert_eq!(r.headers()["x-a"], "b");
        assert_eq!(
            framing(&Method::GET, r.status(), r.headers(), s).unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            framing(&Method::HEAD, r.status(), r.headers(), s).unwrap(),
            Framing::Empty
        );
        let (r, v, s) = head("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(
            framing(&Method::GET, r.status(), r.headers(), s).unwrap(),
            Framing::Close
        );
        assert!(!keeps_alive(v, r.headers(), s));
        let (r, v, s) = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!(
            framing(&Method::GET, r.status(), r.headers(), s).unwrap(),
            Framing::Chunked(Chunk::Size)
        );
        assert!(keeps_alive(v, r.headers(), s));
        let (r, _, s) = head("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n");
        assert_eq!(
            framing(&Method::GET, r.status(), r.headers(), s).unwrap(),
            Framing::Empty
        );
        let (r, _, s) = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n");
        assert!(framing(&Method::GET, r.status(), r.headers(), s).is_err());
        let (r, v, s) = head("HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 1\r\n\r\n");
        assert!(!keeps_alive(v, r.headers(), s));
        // Field names in any case are the same fields.
        let (r, v, s) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTRANSFER-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(
            framing(&Method::GET, r.status(), r.headers(), s).unwrap(),
            Framing::Chunked(Chunk::Size)
        );
        assert!(s.content_length && !keeps_alive(v, r.headers(), s));
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-le"[..]);
        assert!(parse_head(&mut partial).expect("valid so far").is_none());
        let mut bad = BytesMut::from(&b"HTTP/1.1 2x0 OK\r\n\r\n"[..]);
        assert!(parse_head(&mut bad).is_err());
    }

    /// Decodes `wire` as a chunked body fed `step` bytes at a time.
    fn chunked(wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), H1Error> {
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut done = false;
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = BytesMut::new();
        let mut rest = wire;
        loop {
            let frame = decode(&mut framing, &mut done, &mut fed)?;
            match frame {
                Some(f) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                None if done => return Ok((data, trailers)),
                None if rest.is_empty() => return Err(H1Error::Closed),
                None => {
                    let n = step.min(rest.len());
                    fed.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, trailers) = chunked(wire, step).expect("valid");
            assert_eq!(data, b"hello, world", "step {step}");
            assert_eq!(trailers.expect("trailers")["x-sum"], "12", "step {step}");
        }
        let (data, trailers) = chunked(b"3\r\nabc\r\n0\r\n\r\n", 1).expect("valid");
        assert_eq!((data.as_slice(), trailers), (&b"abc"[..], None));
        assert!(chunked(b"zz\r\n", 4).is_err());
        assert!(chunked(b"3\r\nabcX\r\n", 4).is_err());
    }
}
