//! The request key for consistent hashing (APISIX `hash_on` / `key`), hashed
//! to a `u64`. A missing key falls back to the client address.

use std::net::SocketAddr;

use http::request::Parts;

use crate::{balance::hash_key, config};

/// The hash of the request's key under the upstream's `hash_on`/`key`.
pub(crate) fn request_hash(cfg: &config::Upstream, req: &Parts, client: SocketAddr) -> u64 {
    let key = &cfg.key;
    let found = match cfg.hash_on {
        config::HashOn::Vars => var(key, req, client).map(|v| hash_key(v.as_bytes())),
        config::HashOn::Header => header(req, key).map(|v| hash_key(v.as_bytes())),
        config::HashOn::Cookie => cookie(req, key).map(|v| hash_key(v.as_bytes())),
        config::HashOn::VarsCombinations => {
            combination(key, req, client).map(|v| hash_key(v.as_bytes()))
        }
    };
    found.unwrap_or_else(|| client_hash(client))
}

fn client_hash(client: SocketAddr) -> u64 {
    match client.ip() {
        std::net::IpAddr::V4(ip) => hash_key(&ip.octets()),
        std::net::IpAddr::V6(ip) => hash_key(&ip.octets()),
    }
}

/// An nginx-style variable by name (without `$`).
fn var(name: &str, req: &Parts, client: SocketAddr) -> Option<String> {
    let name = name.strip_prefix('$').unwrap_or(name);
    match name {
        "remote_addr" => Some(client.ip().to_string()),
        "uri" => Some(req.uri.path().to_string()),
        "request_uri" => Some(
            req.uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
        ),
        "host" => super::route::request_host(req).map(str::to_string),
        "query_string" | "args" => req.uri.query().map(str::to_string),
        _ => {
            if let Some(arg) = name.strip_prefix("arg_") {
                query_arg(req, arg).map(str::to_string)
            } else if let Some(h) = name.strip_prefix("http_") {
                header(req, &h.replace('_', "-")).map(str::to_string)
            } else if let Some(c) = name.strip_prefix("cookie_") {
                cookie(req, c).map(str::to_string)
            } else {
                None
            }
        }
    }
}

/// Expands a `vars_combinations` key such as `$host$request_uri`; `None` when
/// every variable in it is missing.
fn combination(template: &str, req: &Parts, client: SocketAddr) -> Option<String> {
    let mut out = String::new();
    let mut any = false;
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if let Some(v) = var(&after[..end], req, client) {
            out.push_str(&v);
            any = true;
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    any.then_some(out)
}

fn header<'a>(req: &'a Parts, name: &str) -> Option<&'a str> {
    req.headers.get(name)?.to_str().ok()
}

fn query_arg<'a>(req: &'a Parts, name: &str) -> Option<&'a str> {
    req.uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

fn cookie<'a>(req: &'a Parts, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn variables_resolve() {
        let c: SocketAddr = "10.1.2.3:999".parse().unwrap();
        let p = parts(
            "/a/b?x=1&user=bob",
            &[
                ("host", "ex.com:80"),
                ("x-user", "u1"),
                ("cookie", "a=1; sid=s9"),
            ],
        );
        assert_eq!(var("remote_addr", &p, c).unwrap(), "10.1.2.3");
        assert_eq!(var("uri", &p, c).unwrap(), "/a/b");
        assert_eq!(var("request_uri", &p, c).unwrap(), "/a/b?x=1&user=bob");
        assert_eq!(var("arg_user", &p, c).unwrap(), "bob");
        assert_eq!(var("http_x_user", &p, c).unwrap(), "u1");
        assert_eq!(var("cookie_sid", &p, c).unwrap(), "s9");
        assert_eq!(var("host", &p, c).unwrap(), "ex.com");
        assert_eq!(combination("$host$uri", &p, c).unwrap(), "ex.com/a/b");
        assert!(combination("$arg_missing", &p, c).is_none());
    }
}
