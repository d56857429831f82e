//! Route matching: host, URI (exact or prefix), method and headers, compiled
//! once per config into a table the request path reads without locking.

use std::sync::Arc;

use http::{HeaderName, Method, request::Parts};

use crate::{config, telemetry::RouteStats, upstream::Upstream};

/// The routes of one listener, in match order.
#[derive(Default)]
pub(crate) struct RouteTable {
    routes: Vec<Arc<Route>>,
    /// Whether any route matches on the host (else it is never looked up).
    by_host: bool,
}

/// One compiled route.
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    hosts: Vec<HostMatch>,
    uris: Vec<config::UriMatch>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, String)>,
    priority: i32,
    pub(crate) upstream: Arc<Upstream>,
    /// The route's request counters (kept by name across reloads).
    pub(crate) stats: Arc<RouteStats>,
}

enum HostMatch {
    Exact(String),
    /// `*.example.com` matches `a.example.com` (stored as `.example.com`).
    Suffix(String),
}

// === impl RouteTable ===

impl RouteTable {
    /// Orders routes: higher `priority` first, then the more specific URI.
    pub(crate) fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.priority),
                std::cmp::Reverse(r.specificity()),
            )
        });
        Self {
            by_host: routes.iter().any(|r| !r.hosts.is_empty()),
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// The first route that matches the request.
    pub(crate) fn find(&self, req: &Parts) -> Option<&Arc<Route>> {
        let host = if self.by_host {
            request_host(req)
        } else {
            None
        };
        self.routes.iter().find(|r| r.matches(req, host))
    }
}

// === impl Route ===

impl Route {
    pub(crate) fn new(
        cfg: &config::Route,
        upstream: Arc<Upstream>,
        stats: Arc<RouteStats>,
    ) -> Self {
        Self {
            name: cfg.name.as_str().into(),
            hosts: cfg
                .hosts
                .iter()
                .map(|h| match h.strip_prefix('*') {
                    Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
                    None => HostMatch::Exact(h.to_ascii_lowercase()),
                })
                .collect(),
            uris: cfg.uris.clone(),
            methods: cfg.methods.clone(),
            headers: cfg.headers.clone(),
            priority: cfg.priority,
            upstream,
            stats,
        }
    }

    fn specificity(&self) -> usize {
        self.uris
            .iter()
            .map(|u| match u {
                config::UriMatch::Exact(p) => p.len() + 1_000_000,
                config::UriMatch::Prefix(p) => p.len(),
            })
            .max()
            .unwrap_or(0)
    }

    fn matches(&self, req: &Parts, host: Option<&str>) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(&req.method) {
            return false;
        }
        if !self.hosts.is_empty() {
            let Some(host) = host else { return false };
            let ok = self.hosts.iter().any(|m| match m {
                HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
                HostMatch::Suffix(s) => {
                    host.len() > s.len()
                        && host.as_bytes()[host.len() - s.len()..]
                            .eq_ignore_ascii_case(s.as_bytes())
                }
            });
            if !ok {
                return false;
            }
        }
        let path = req.uri.path();
        if !self.uris.is_empty()
            && !self.uris.iter().any(|u| match u {
                config::UriMatch::Exact(p) => path == p,
                config::UriMatch::Prefix(p) => path.starts_with(p.as_str()),
            })
        {
            return false;
        }
        self.headers.iter().all(|(name, value)| {
            req.headers
                .get(name)
                .is_some_and(|v| v.as_bytes() == value.as_bytes())
        })
    }
}

/// The request's host without port: the URI authority (HTTP/2) or `Host`.
pub(crate) fn request_host(req: &Parts) -> Option<&str> {
    let raw = match req.uri.host() {
        Some(h) => h,
        None => req.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    // Strip a port, keeping IPv6 literals whole.
    Some(match raw.rfind(':') {
        Some(i) if !raw.ends_with(']') && raw[..i].find(':').is_none() => &raw[..i],
        _ => raw,
    })
}
