//! Routes: which HTTP requests go to which upstream.
//!
//! The fields follow an APISIX route's (`uri`/`uris`, `host`/`hosts`,
//! `methods`, `priority`, `upstream_id`), with an exact-value `headers`
//! match of our own in place of APISIX's `vars` expressions.

use std::fmt;

use http::{HeaderName, Method};
use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::de as helpers;

/// A rule that sends matching HTTP requests to an upstream.
///
/// A request matches when every given condition holds: one of `hosts`, one
/// of `uris`, one of `methods`, and all of `headers`. Among the routes that
/// match, the highest `priority` wins, then the first in the file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RouteSpec")]
pub struct Route {
    /// Unique name, used in logs and metrics. Required.
    pub name: String,
    /// Free text for people; unused by the sidecar. APISIX `desc`.
    pub desc: Option<String>,
    /// The HTTP listeners the route applies to, by name. Default: empty,
    /// meaning every HTTP listener. Our addition.
    pub listeners: Vec<String>,
    /// Hosts the `Host` header (or `:authority`) must be one of, lower case;
    /// `*.example.com` matches any subdomain. Default: empty, any host.
    /// APISIX `hosts`, or `host` for one.
    pub hosts: Vec<String>,
    /// Paths the request must match one of. Default: `[Prefix("/")]`, any
    /// path. APISIX `uris`, or `uri` for one.
    pub uris: Vec<UriMatch>,
    /// Methods the request must be one of. Default: empty, any method.
    pub methods: Vec<Method>,
    /// Headers the request must carry, each with exactly this value.
    /// Default: none. Our addition (APISIX matches headers with `vars`).
    pub headers: Vec<(HeaderName, String)>,
    /// The upstream to send matching requests to, by name. Required; APISIX
    /// calls it `upstream_id`, and either key is accepted.
    pub upstream: String,
    /// Higher wins among matching routes. Default 0, as in APISIX.
    pub priority: i32,
}

/// How a route matches a request's path, APISIX style: `/api/*` is a
/// prefix, anything else is exact.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UriMatch {
    /// The path equals this string.
    Exact(String),
    /// The path starts with this string: `/api/*` gives `Prefix("/api/")`,
    /// `/*` gives `Prefix("/")`.
    Prefix(String),
}

/// A route as written, before its alternatives are resolved.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    name: String,
    #[serde(default)]
    desc: Option<String>,
    #[serde(default)]
    listeners: Vec<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    hosts: Option<Vec<String>>,
    #[serde(default)]
    uri: Option<UriMatch>,
    #[serde(default)]
    uris: Option<Vec<UriMatch>>,
    #[serde(default, deserialize_with = "helpers::methods")]
    methods: Vec<Method>,
    #[serde(default, deserialize_with = "helpers::header_map")]
    headers: Vec<(HeaderName, String)>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    upstream_id: Option<String>,
    #[serde(default)]
    priority: i32,
}

// === impl Route ===

impl TryFrom<RouteSpec> for Route {
    type Error = String;

    fn try_from(spec: RouteSpec) -> Result<Self, String> {
        let upstream = match (spec.upstream, spec.upstream_id) {
            (Some(up), None) | (None, Some(up)) => up,
            (Some(_), Some(_)) => return Err("give `upstream` or `upstream_id`, not both".into()),
            (None, None) => return Err("missing field `upstream` (or `upstream_id`)".into()),
        };
        let uris = match (spec.uri, spec.uris) {
            (Some(_), Some(_)) => return Err("give `uri` or `uris`, not both".into()),
            (Some(uri), None) => vec![uri],
            (None, Some(uris)) if uris.is_empty() => return Err("`uris` is empty".into()),
            (None, Some(uris)) => uris,
            (None, None) => vec![UriMatch::Prefix("/".to_owned())],
        };
        let hosts = match (spec.host, spec.hosts) {
            (Some(_), Some(_)) => return Err("give `host` or `hosts`, not both".into()),
            (Some(host), None) => vec![host],
            (None, Some(hosts)) if hosts.is_empty() => return Err("`hosts` is empty".into()),
            (None, Some(hosts)) => hosts,
            (None, None) => Vec::new(),
        };
        Ok(Route {
            name: spec.name,
            desc: spec.desc,
            listeners: spec.listeners,
            hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            uris,
            methods: spec.methods,
            headers: spec.headers,
            upstream,
            priority: spec.priority,
        })
    }
}

// === impl UriMatch ===

impl UriMatch {
    /// Parses an APISIX `uri`: a path starting with `/`, optionally ending in `*`.
    pub fn parse(uri: &str) -> Result<Self, String> {
        if !uri.starts_with('/') {
            return Err(format!("`{uri}` does not start with `/`"));
        }
        if uri.contains(['?', '#']) {
            return Err(format!(
                "`{uri}` has a query or fragment; routes match the path only"
            ));
        }
        if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{}` contains white space", uri.escape_debug()));
        }
        if uri.split('/').any(|segment| segment.starts_with(':')) {
            return Err(format!(
                "`{uri}` has a `:parameter` segment, which is not supported; use a prefix such as `/users/*`"
            ));
        }
        match uri.strip_suffix('*') {
            Some(prefix) if prefix.contains('*') => Err(format!(
                "`{uri}` has a `*` before its end; only a final `*` is allowed"
            )),
            Some(prefix) => Ok(UriMatch::Prefix(prefix.to_owned())),
            None if uri.contains('*') => Err(format!(
                "`{uri}` has a `*` before its end; only a final `*` is allowed"
            )),
            None => Ok(UriMatch::Exact(uri.to_owned())),
        }
    }

    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            UriMatch::Exact(exact) => path == exact,
            UriMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for UriMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UriMatch::Exact(path) => f.write_str(path),
            UriMatch::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

impl<'de> Deserialize<'de> for UriMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let uri = String::deserialize(d)?;
        UriMatch::parse(&uri).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> Result<Route, serde_saphyr::Error> {
        serde_saphyr::from_str(yaml)
    }

    #[test]
    fn uri_forms() {
        assert_eq!(
            UriMatch::parse("/api/*"),
            Ok(UriMatch::Prefix("/api/".into()))
        );
        assert_eq!(UriMatch::parse("/*"), Ok(UriMatch::Prefix("/".into())));
        assert_eq!(UriMatch::parse("/x"), Ok(UriMatch::Exact("/x".into())));
        for bad in ["api", "/a*b", "/a/*/b*", "/a?b=1", "/users/:id", "/a b", ""] {
            assert!(UriMatch::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(UriMatch::Prefix("/api/".into()).matches("/api/v1"));
        assert!(!UriMatch::Exact("/x".into()).matches("/x/y"));
    }

    #[test]
    fn defaults_match_everything() {
        let r = route("name: r\nupstream: web\n").expect("parses");
        assert_eq!(r.uris, vec![UriMatch::Prefix("/".into())]);
        assert!(r.hosts.is_empty() && r.methods.is_empty() && r.headers.is_empty());
        assert!(r.listeners.is_empty());
        assert_eq!(r.priority, 0);
    }

    #[test]
    fn apisix_spellings() {
        let r = route("name: r\nupstream_id: 7\nuri: /a\nhost: Example.COM\n").expect("parses");
        assert_eq!(r.upstream, "7");
        assert_eq!(r.uris, vec![UriMatch::Exact("/a".into())]);
        assert_eq!(r.hosts, vec!["example.com".to_owned()]);
        let r = route("name: r\nupstream: w\nuris: [/a/*, /b]\nhosts: [a.com, '*.b.com']\n")
            .expect("parses");
        assert_eq!(r.uris.len(), 2);
        assert_eq!(r.hosts, vec!["a.com".to_owned(), "*.b.com".to_owned()]);
    }

    #[test]
    fn refuses_both_spellings() {
        assert!(route("name: r\nupstream: a\nupstream_id: a\n").is_err());
        assert!(route("name: r\nupstream: a\nuri: /a\nuris: [/b]\n").is_err());
        assert!(route("name: r\nupstream: a\nhost: a\nhosts: [b]\n").is_err());
        assert!(route("name: r\n").is_err());
    }

    #[test]
    fn methods_and_headers() {
        let r = route("name: r\nupstream: a\nmethods: [GET, POST]\nheaders: {X-Env: prod}\n")
            .expect("parses");
        assert_eq!(r.methods, vec![Method::GET, Method::POST]);
        assert_eq!(
            r.headers,
            vec![(HeaderName::from_static("x-env"), "prod".to_owned())]
        );
        assert!(route("name: r\nupstream: a\nmethods: [get]\n").is_err());
        assert!(route("name: r\nupstream: a\nmethods: [GET, GET]\n").is_err());
        assert!(route("name: r\nupstream: a\nheaders: {\"bad name\": x}\n").is_err());
    }
}
