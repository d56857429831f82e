//! Header rewriting between downstream and upstream: hop-by-hop headers
//! removed, `X-Forwarded-*` and `Forwarded` added.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named in
/// `Connection`. `TE: trailers` is kept: gRPC needs it end to end.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.get(header::CONNECTION) {
        if !conn.is_empty() {
            let named: Vec<HeaderName> = conn
                .to_str()
                .unwrap_or("")
                .split(',')
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                .collect();
            for n in named {
                headers.remove(n);
            }
        }
        headers.remove(header::CONNECTION);
    }
    for h in [&KEEP_ALIVE, &PROXY_CONNECTION] {
        headers.remove(h);
    }
    for h in [
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(h);
    }
    if let Some(te) = headers.get(header::TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.remove(header::TE);
    }
}

/// Adds the client to `X-Forwarded-For` and `Forwarded`, and sets
/// `X-Forwarded-Proto` and `X-Forwarded-Host` when absent.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    client: SocketAddr,
    host: Option<&HeaderValue>,
) {
    use std::fmt::Write;

    let ip = client.ip();
    let mut xff = String::with_capacity(48);
    if let Some(prev) = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok())
        && !prev.is_empty()
    {
        xff.push_str(prev);
        xff.push_str(", ");
    }
    let _ = write!(xff, "{ip}");
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    let mut fwd = xff;
    fwd.clear();
    let _ = match ip {
        std::net::IpAddr::V4(ip) => write!(fwd, "for={ip};proto=http"),
        std::net::IpAddr::V6(ip) => write!(fwd, "for=\"[{ip}]\";proto=http"),
    };
    if let Some(h) = host.and_then(|h| h.to_str().ok())
        && h.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b';' && b != b',')
    {
        fwd.push_str(";host=");
        fwd.push_str(h);
    }
    if let Ok(v) = HeaderValue::from_str(&fwd) {
        headers.append(header::FORWARDED, v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(h) = host
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(&X_FORWARDED_HOST, h.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none() && h.get(header::UPGRADE).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-keep").unwrap(), "1");
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.9"));
        let host = HeaderValue::from_static("example.com");
        add_forwarded(&mut h, "127.0.0.1:5555".parse().unwrap(), Some(&host));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.9, 127.0.0.1");
        assert_eq!(
            h.get(header::FORWARDED).unwrap(),
            "for=127.0.0.1;proto=http;host=example.com"
        );
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        add_forwarded(&mut h, "[::1]:5555".parse().unwrap(), None);
        assert_eq!(h.get_all(header::FORWARDED).iter().count(), 2);
    }
}
