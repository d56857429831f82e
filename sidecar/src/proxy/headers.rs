//! Header rewriting between downstream and upstream: hop-by-hop headers
//! removed, `X-Forwarded-*` and `Forwarded` added.
//!
//! The client's part of those headers is formatted once per downstream
//! connection ([`ClientAddr`]), not once per request, and the hop-by-hop
//! check walks the header names once instead of hashing each candidate.
//! For the sidecar's own HTTP/1.1 client the forwarding fields are not put
//! in the request's header map at all: [`forwarding_lines`] gives them as
//! encoded lines, kept per connection, that follow the map's fields in the
//! request head (growing the map and hashing four names cost more than the
//! rest of the rewrite).

use std::{
    net::{IpAddr, SocketAddr},
    sync::OnceLock,
};

use bytes::{BufMut, Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{self, Entry},
};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// A downstream client's address and its forwarding header values,
/// formatted when its connection is accepted.
#[derive(Clone, Debug)]
pub(crate) struct ClientAddr {
    /// The client's socket address.
    pub(crate) addr: SocketAddr,
    /// The IP as text: `X-Forwarded-For` when the request has none.
    ip: HeaderValue,
    /// `for=<ip>;proto=http` (IPv6 quoted and bracketed, RFC 7239).
    forwarded: HeaderValue,
    /// The first host seen on the connection and `forwarded` with its
    /// `host=`: reused by the later requests naming the same host.
    with_host: OnceLock<(HeaderValue, HeaderValue)>,
    /// The first host seen on the connection (or none), whether `Host`
    /// was among the lines, and the encoded forwarding lines for it: see
    /// [`forwarding_lines`].
    lines: OnceLock<(Option<HeaderValue>, bool, Bytes)>,
}

impl ClientAddr {
    /// Formats the header values of a client at `addr`.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let ip = addr.ip();
        let forwarded = match ip {
            IpAddr::V4(ip) => format!("for={ip};proto=http"),
            IpAddr::V6(ip) => format!("for=\"[{ip}]\";proto=http"),
        };
        Self {
            addr,
            ip: HeaderValue::try_from(ip.to_string())
                .expect("invariant: an IP address formats as a valid header value"),
            forwarded: HeaderValue::try_from(forwarded)
                .expect("invariant: a Forwarded element of an IP is a valid header value"),
            with_host: OnceLock::new(),
            lines: OnceLock::new(),
        }
    }
}

/// The hop-by-hop fields: never forwarded (RFC 9110 §7.6.1). `TE` is
/// handled apart: `TE: trailers` is kept, gRPC needs it end to end.
/// `Trailer` is end to end (RFC 9110 §6.6.2): it declares the trailer
/// fields, and hyper's HTTP/1.1 server sends only those declared.
static HOP_BY_HOP: [&HeaderName; 7] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// Whether `name` is one of [`HOP_BY_HOP`].
#[inline]
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named in
/// `Connection`. `TE: trailers` is kept: gRPC needs it end to end.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names; most messages have nothing to remove.
    let mut found = false;
    let mut te = false;
    for name in headers.keys() {
        if is_hop_by_hop(name) {
            found = true;
        } else if name == header::TE {
            te = true;
        }
    }
    if te
        && headers
            .get_all(header::TE)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
    if !found {
        return;
    }
    if let Some(conn) = headers.get(header::CONNECTION)
        && !conn.is_empty()
    {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

/// Adds the client to `X-Forwarded-For` and `Forwarded`, and sets
/// `X-Forwarded-Proto` and `X-Forwarded-Host` when absent.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    client: &ClientAddr,
    host: Option<&HeaderValue>,
) {
    // Entries, not get-then-insert: one hash of the name each.
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Occupied(mut e) if !e.get().is_empty() => {
            let (prev, ip) = (e.get().as_bytes(), client.ip.as_bytes());
            let mut v = BytesMut::with_capacity(prev.len() + 2 + ip.len());
            v.put_slice(prev);
            v.put_slice(b", ");
            v.put_slice(ip);
            if let Ok(v) = HeaderValue::from_maybe_shared(v.freeze()) {
                e.insert(v);
            }
        }
        Entry::Occupied(mut e) => {
            e.insert(client.ip.clone());
        }
        Entry::Vacant(e) => {
            e.insert(client.ip.clone());
        }
    }
    let fwd = forwarded_value(client, host);
    headers.append(header::FORWARDED, fwd);
    headers
        .entry(&X_FORWARDED_PROTO)
        .or_insert_with(|| HeaderValue::from_static("http"));
    if let Some(h) = host
        && let Entry::Vacant(e) = headers.entry(&X_FORWARDED_HOST)
    {
        e.insert(h.clone());
    }
}

/// The forwarding fields [`add_forwarded`] would add to `headers`, as
/// encoded header lines (`name: value\r\n`) for an HTTP/1.1 request head,
/// after a `Host` line for `host` when `with_host`; `None` when the request
/// already carries `X-Forwarded-For`, `-Proto` or `-Host`, whose values the
/// map must then merge or keep.
pub(crate) fn forwarding_lines(
    headers: &HeaderMap,
    client: &ClientAddr,
    host: Option<&HeaderValue>,
    with_host: bool,
) -> Option<Bytes> {
    // One walk over the few names beats hashing three custom ones.
    if headers
        .keys()
        .any(|n| n == X_FORWARDED_FOR || n == X_FORWARDED_PROTO || n == X_FORWARDED_HOST)
    {
        return None;
    }
    match client.lines.get() {
        Some((seen, w, lines)) if seen.as_ref() == host && *w == with_host => Some(lines.clone()),
        seen => {
            let lines = encode_forwarding(client, host, with_host);
            if seen.is_none() {
                let _ = client.lines.set((host.cloned(), with_host, lines.clone()));
            }
            Some(lines)
        }
    }
}

fn encode_forwarding(client: &ClientAddr, host: Option<&HeaderValue>, with_host: bool) -> Bytes {
    let fwd = forwarded_value(client, host);
    let mut out = BytesMut::with_capacity(160);
    let mut line = |name: &HeaderName, value: &HeaderValue| {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    };
    if with_host && let Some(h) = host {
        line(&header::HOST, h);
    }
    line(&X_FORWARDED_FOR, &client.ip);
    line(&header::FORWARDED, &fwd);
    line(&X_FORWARDED_PROTO, &HeaderValue::from_static("http"));
    if let Some(h) = host {
        line(&X_FORWARDED_HOST, h);
    }
    out.freeze()
}

/// The client's `Forwarded` element, with the connection's cached `host=`
/// form when `host` is the one seen first.
fn forwarded_value(client: &ClientAddr, host: Option<&HeaderValue>) -> HeaderValue {
    match host {
        Some(h) => match client.with_host.get() {
            Some((seen, v)) if seen == h => v.clone(),
            seen => {
                let v = forwarded_with_host(client, h);
                if seen.is_none() {
                    let _ = client.with_host.set((h.clone(), v.clone()));
                }
                v
            }
        },
        None => client.forwarded.clone(),
    }
}

/// The client's `Forwarded` element with `host=`, or without it when the
/// host would break the element's syntax.
fn forwarded_with_host(client: &ClientAddr, host: &HeaderValue) -> HeaderValue {
    let h = host.as_bytes();
    if h.is_empty()
        || !h
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b';' && b != b',')
    {
        return client.forwarded.clone();
    }
    let base = client.forwarded.as_bytes();
    let mut v = BytesMut::with_capacity(base.len() + 6 + h.len());
    v.put_slice(base);
    v.put_slice(b";host=");
    v.put_slice(h);
    HeaderValue::from_maybe_shared(Bytes::from(v)).unwrap_or_else(|_| client.forwarded.clone())
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
        h.insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none() && h.get(header::UPGRADE).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-keep").unwrap(), "1");
        // End to end: it declares the trailer fields that follow the body.
        assert_eq!(h.get(header::TRAILER).unwrap(), "x-checksum");
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.9"));
        let host = HeaderValue::from_static("example.com");
        add_forwarded(
            &mut h,
            &ClientAddr::new("127.0.0.1:5555".parse().unwrap()),
            Some(&host),
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.9, 127.0.0.1");
        assert_eq!(
            h.get(header::FORWARDED).unwrap(),
            "for=127.0.0.1;proto=http;host=example.com"
        );
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        add_forwarded(
            &mut h,
            &ClientAddr::new("[::1]:5555".parse().unwrap()),
            None,
        );
        let all: Vec<_> = h.get_all(header::FORWARDED).iter().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1], "for=\"[::1]\";proto=http");
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "10.0.0.9, 127.0.0.1, ::1"
        );
    }

    #[test]
    fn a_connection_reuses_its_first_host_and_formats_others() {
        let client = ClientAddr::new("10.0.0.1:1".parse().unwrap());
        let fwd = |host: &'static str| {
            let mut h = HeaderMap::new();
            add_forwarded(&mut h, &client, Some(&HeaderValue::from_static(host)));
            h.get(header::FORWARDED).unwrap().clone()
        };
        let first = fwd("a.example");
        assert_eq!(first, "for=10.0.0.1;proto=http;host=a.example");
        let again = fwd("a.example");
        // The very same bytes, shared rather than formatted again.
        assert_eq!(again.as_bytes().as_ptr(), first.as_bytes().as_ptr());
        assert_eq!(fwd("b.example"), "for=10.0.0.1;proto=http;host=b.example");
        assert_eq!(fwd("a.example"), first);
    }

    /// The fields `add_forwarded` adds, encoded as request head lines.
    fn added_lines(before: &HeaderMap, client: &ClientAddr, host: Option<&HeaderValue>) -> String {
        let mut after = before.clone();
        add_forwarded(&mut after, client, host);
        let mut out = String::new();
        for name in after.keys() {
            let old = before.get_all(name).iter().count();
            for v in after.get_all(name).iter().skip(old) {
                out += &format!("{name}: {}\r\n", v.to_str().unwrap());
            }
        }
        out
    }

    #[test]
    fn forwarding_lines_are_the_fields_the_map_would_get() {
        let client = ClientAddr::new("10.0.0.7:1".parse().unwrap());
        let v6 = ClientAddr::new("[::1]:1".parse().unwrap());
        let host = HeaderValue::from_static("a.example");
        let other = HeaderValue::from_static("b.example");
        let mut plain = HeaderMap::new();
        plain.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let mut with_forwarded = plain.clone();
        with_forwarded.insert(header::FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        for (headers, c, h) in [
            (&plain, &client, Some(&host)),
            (&plain, &client, Some(&host)),
            (&plain, &client, Some(&other)),
            (&plain, &client, None),
            (&with_forwarded, &client, Some(&host)),
            (&plain, &v6, None),
        ] {
            let lines =
                forwarding_lines(headers, c, h, false).expect("no X-Forwarded-* in the request");
            let lines = std::str::from_utf8(&lines).unwrap();
            let want = added_lines(headers, c, h);
            let mut got: Vec<_> = lines.split_inclusive("\r\n").collect();
            let mut want: Vec<_> = want.split_inclusive("\r\n").collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "host {h:?}");
        }
        // With the host as a field of its own (an HTTP/2 client's authority),
        // first; the connection's cached lines follow the choice.
        let with = forwarding_lines(&plain, &v6, Some(&host), true).expect("lines");
        assert!(with.starts_with(b"host: a.example\r\nx-forwarded-for: ::1\r\n"));
        let without = forwarding_lines(&plain, &v6, Some(&host), false).expect("lines");
        assert_eq!(&with[b"host: a.example\r\n".len()..], &without[..]);
        // Values the map must merge or keep: no lines.
        for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
            let mut h = plain.clone();
            h.insert(name, HeaderValue::from_static("x"));
            assert!(
                forwarding_lines(&h, &client, Some(&host), false).is_none(),
                "{name}"
            );
        }
    }

    #[test]
    fn first_forwarded_values_and_unsafe_hosts() {
        let mut h = HeaderMap::new();
        let odd = HeaderValue::from_static("a\"b");
        add_forwarded(
            &mut h,
            &ClientAddr::new("10.1.2.3:1".parse().unwrap()),
            Some(&odd),
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        // A host that would break the Forwarded syntax is left out of it.
        assert_eq!(h.get(header::FORWARDED).unwrap(), "for=10.1.2.3;proto=http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "a\"b");
    }

    #[test]
    fn te_other_than_trailers_goes_and_clean_messages_stay_as_they_are() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert!(h.get(header::TE).is_none());
        assert_eq!(h.len(), 1);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("x"));
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-a"));
        h.insert("x-a", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }
}
