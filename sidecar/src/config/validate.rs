//! Checks a parsed config as a whole: names are unique, references resolve,
//! and fields that depend on one another agree.
//!
//! A field that is wrong on its own (a port of 0, a negative timeout) is
//! refused while parsing, where its line is known. What is left here needs
//! more than one field; every problem is collected, each named by its field
//! path, so a user fixes them in one go. Upstream checks are in
//! `validate/upstream.rs`.

use std::collections::HashMap;

use super::error::Issue;
use super::{Config, ListenerProtocol};

mod upstream;

/// Every problem in `config` that parsing could not see.
pub(super) fn check(config: &Config) -> Vec<Issue> {
    let mut v = Validator {
        config,
        issues: Vec::new(),
    };
    v.listeners();
    v.routes();
    v.upstreams();
    v.adapters();
    v.telemetry();
    v.issues
}

struct Validator<'a> {
    config: &'a Config,
    issues: Vec<Issue>,
}

// === impl Validator ===

impl Validator<'_> {
    fn issue(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(Issue::new(path, message));
    }

    /// Names in a list must be present and unique.
    fn unique_names<'n>(&mut self, list: &str, names: impl Iterator<Item = &'n str>) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            let path = format!("{list}[{i}].name");
            if name.is_empty() {
                self.issue(path, "is empty");
            } else if let Some(first) = seen.get(name) {
                self.issue(
                    path,
                    format!("`{name}` is also the name of {list}[{first}]"),
                );
            } else {
                seen.insert(name, i);
            }
        }
    }

    fn listeners(&mut self) {
        let config = self.config;
        self.unique_names(
            "listeners",
            config.listeners.iter().map(|l| l.name.as_str()),
        );
        for (i, l) in config.listeners.iter().enumerate() {
            let path = format!("listeners[{i}]");
            let clash = config.listeners[..i]
                .iter()
                .position(|other| conflicts(other.address, l.address));
            if let Some(j) = clash {
                let msg = format!("{} conflicts with the address of listeners[{j}]", l.address);
                self.issue(format!("{path}.address"), msg);
            }
            if conflicts(config.admin.address, l.address) {
                let msg = format!("{} conflicts with the admin address", l.address);
                self.issue(format!("{path}.address"), msg);
            }
            match (l.protocol, &l.upstream) {
                (ListenerProtocol::Tcp, None) => {
                    self.issue(
                        format!("{path}.upstream"),
                        "a tcp listener needs an `upstream`",
                    );
                }
                (ListenerProtocol::Http, Some(_)) => self.issue(
                    format!("{path}.upstream"),
                    "an http listener sends requests through routes, not to an `upstream`",
                ),
                (ListenerProtocol::Tcp, Some(name)) => {
                    self.known_upstream(format!("{path}.upstream"), name);
                }
                (ListenerProtocol::Http, None) => {}
            }
        }
    }

    fn routes(&mut self) {
        let config = self.config;
        self.unique_names("routes", config.routes.iter().map(|r| r.name.as_str()));
        let any_http = config
            .listeners
            .iter()
            .any(|l| l.protocol == ListenerProtocol::Http);
        for (i, route) in config.routes.iter().enumerate() {
            let path = format!("routes[{i}]");
            self.known_upstream(format!("{path}.upstream"), &route.upstream);
            if route.listeners.is_empty() && !any_http {
                self.issue(path.clone(), "there is no http listener for this route");
            }
            for (j, name) in route.listeners.iter().enumerate() {
                let at = format!("{path}.listeners[{j}]");
                match config.listeners.iter().find(|l| l.name == *name) {
                    None => self.issue(at, format!("unknown listener `{name}`")),
                    Some(l) if l.protocol == ListenerProtocol::Tcp => self.issue(
                        at,
                        format!("`{name}` is a tcp listener; routes apply to http listeners"),
                    ),
                    Some(_) => {}
                }
            }
            for (j, host) in route.hosts.iter().enumerate() {
                let name = host.strip_prefix('*').unwrap_or(host);
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
                if !valid {
                    let msg = format!("`{host}` is not a host name such as `a.com` or `*.a.com`");
                    self.issue(format!("{path}.hosts[{j}]"), msg);
                }
            }
        }
    }

    fn known_upstream(&mut self, path: String, name: &str) {
        if !self.config.upstreams.iter().any(|u| u.name == name) {
            let known: Vec<&str> = self
                .config
                .upstreams
                .iter()
                .map(|u| u.name.as_str())
                .collect();
            let msg = format!("unknown upstream `{name}` (upstreams: {})", list(&known));
            self.issue(path, msg);
        }
    }

    fn upstreams(&mut self) {
        let config = self.config;
        self.unique_names(
            "upstreams",
            config.upstreams.iter().map(|u| u.name.as_str()),
        );
        for (i, u) in config.upstreams.iter().enumerate() {
            self.upstream(&format!("upstreams[{i}]"), u);
        }
    }

    fn adapters(&mut self) {
        for (name, adapter) in &self.config.adapters {
            let path = format!("adapters.{name}");
            if name.is_empty() {
                self.issue(path.clone(), "an adapter's name is empty");
            }
            if let Err(why) = check_http_uri(&adapter.address) {
                self.issue(format!("{path}.address"), why);
            }
        }
    }

    fn telemetry(&mut self) {
        let t = &self.config.telemetry;
        if let Err(why) = check_log_level(&t.log_level) {
            self.issue("telemetry.log_level", why);
        }
        if let Some(endpoint) = &t.otlp_endpoint
            && let Err(why) = check_http_uri(endpoint)
        {
            self.issue("telemetry.otlp_endpoint", why);
        }
        if t.service_name.as_deref().is_some_and(str::is_empty) {
            self.issue("telemetry.service_name", "is empty");
        }
        for (name, value) in &t.otlp_headers.0 {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.issue(
                    format!("telemetry.otlp_headers.{name}"),
                    "is not a valid header name",
                );
            } else if http::HeaderValue::from_str(value).is_err() {
                // The value may be a secret: not shown.
                self.issue(
                    format!("telemetry.otlp_headers.{name}"),
                    "has a value that is not a valid header value",
                );
            }
        }
    }
}

/// Whether two listening addresses cannot both be bound.
fn conflicts(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// A loose check of a host name or IP address: no empty, spaced or URI-like text.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/?#@[]".contains(c))
}

/// An `http://` or `https://` URI with a host, such as a gRPC endpoint.
fn check_http_uri(text: &str) -> Result<(), String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("`{}` is not a URI: {e}", text.escape_debug()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("`{text}` does not start with http:// or https://"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host"));
    }
    Ok(())
}

/// A `tracing` filter: directives separated by commas, each a level or
/// `target=level`. A bare word that is no level is refused: `tracing` would
/// read it as a target at every level, which is almost always a typo.
fn check_log_level(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |s: &str| LEVELS.contains(&s.trim().to_ascii_lowercase().as_str());
    if filter.trim().is_empty() {
        return Err("is empty".to_owned());
    }
    for directive in filter.split(',') {
        let ok = match directive.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(directive),
        };
        if !ok {
            return Err(format!(
                "`{}` is not a level ({}) or a `target=level` directive",
                directive.trim(),
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

/// `a, b` or `none` for an empty list.
fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
