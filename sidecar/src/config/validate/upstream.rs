//! Checks of one upstream: endpoints, discovery sources, the hash key, the
//! `Host` header and health checks.

use std::collections::{BTreeSet, HashMap};

use http::HeaderName;

use super::{Validator, is_host, list};
use crate::config::{BalancerType, Checks, HashOn, PassHost, Scheme, Upstream, UpstreamProtocol};

/// The request variables a `chash` key may name (APISIX's `vars`, less
/// `server_name`, `server_addr`, `remote_port`, `query_string`, `hostname`).
const VARS: [&str; 4] = ["remote_addr", "uri", "request_uri", "host"];

/// Prefixes of request variables that name a query argument, header or cookie.
const VAR_PREFIXES: [&str; 3] = ["arg_", "http_", "cookie_"];

// === impl Validator ===

impl Validator<'_> {
    pub(super) fn upstream(&mut self, path: &str, u: &Upstream) {
        if u.nodes.is_empty() && u.discovery.is_empty() {
            let msg = "has no `nodes` and no discovery source (`discovery_type` and \
                       `service_name`, or `discovery`)";
            self.issue(path, msg);
        }
        let mut nodes: HashMap<(&str, u16), usize> = HashMap::new();
        for (j, node) in u.nodes.iter().enumerate() {
            if !is_host(&node.host) {
                let msg = format!(
                    "`{}` is not a host name or address",
                    node.host.escape_debug()
                );
                self.issue(format!("{path}.nodes[{j}].host"), msg);
            }
            if let Some(first) = nodes.insert((&node.host, node.port), j) {
                let msg = format!("{}:{} is also nodes[{first}]", node.host, node.port);
                self.issue(format!("{path}.nodes[{j}]"), msg);
            }
        }
        let mut sources = BTreeSet::new();
        for (j, source) in u.discovery.iter().enumerate() {
            let at = format!("{path}.discovery[{j}]");
            if source.discovery_type.is_empty() {
                self.issue(format!("{at}.discovery_type"), "is missing");
            } else if !self.config.adapters.contains_key(&source.discovery_type) {
                let known: Vec<&str> = self.config.adapters.keys().map(String::as_str).collect();
                let msg = format!(
                    "unknown adapter `{}` (adapters: {})",
                    source.discovery_type,
                    list(&known)
                );
                self.issue(format!("{at}.discovery_type"), msg);
            }
            if source.service_name.is_empty() {
                self.issue(format!("{at}.service_name"), "is missing");
            }
            let key = (
                &source.discovery_type,
                &source.service_name,
                &source.discovery_args,
            );
            if !sources.insert(key) {
                self.issue(at, "the same service is watched twice");
            }
        }
        if u.r#type == BalancerType::Chash {
            self.hash_key(path, u);
        }
        if u.pass_host == PassHost::Rewrite && u.upstream_host.as_deref().is_none_or(str::is_empty)
        {
            self.issue(
                format!("{path}.pass_host"),
                "`rewrite` needs an `upstream_host`",
            );
        }
        if let Some(host) = &u.upstream_host
            && !is_host(host)
        {
            let msg = format!("`{}` is not a host name or address", host.escape_debug());
            self.issue(format!("{path}.upstream_host"), msg);
        }
        if u.scheme == Scheme::Grpc && u.protocol == UpstreamProtocol::Http1 {
            self.issue(
                format!("{path}.protocol"),
                "gRPC needs HTTP/2: use `h2c` or `auto`",
            );
        }
        if let Some(checks) = &u.checks {
            self.checks(&format!("{path}.checks"), checks);
        }
    }

    fn hash_key(&mut self, path: &str, u: &Upstream) {
        let at = format!("{path}.key");
        let key = u.key.as_str();
        match u.hash_on {
            HashOn::Vars if !is_var(key) => self.issue(at, unsupported_var(key)),
            HashOn::Header | HashOn::Cookie if key.is_empty() => {
                let what = if u.hash_on == HashOn::Header {
                    "header"
                } else {
                    "cookie"
                };
                self.issue(
                    at,
                    format!("`hash_on: {what}` needs a `key` naming the {what}"),
                );
            }
            HashOn::Header | HashOn::Cookie
                if !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    || HeaderName::from_bytes(key.as_bytes()).is_err() =>
            {
                self.issue(
                    at,
                    format!("`{key}` may hold only letters, digits, `-` and `_`"),
                );
            }
            HashOn::VarsCombinations => {
                let vars: Vec<&str> = key.split('$').skip(1).map(var_name).collect();
                if vars.is_empty() {
                    let msg = "`hash_on: vars_combinations` needs a `key` such as `$host$uri`";
                    self.issue(at, msg);
                } else if let Some(bad) = vars.iter().find(|v| !is_var(v)) {
                    self.issue(at, unsupported_var(bad));
                }
            }
            HashOn::Vars | HashOn::Header | HashOn::Cookie => {}
        }
    }

    fn checks(&mut self, path: &str, checks: &Checks) {
        let mut lists = Vec::new();
        if let Some(active) = &checks.active {
            if !active.http_path.starts_with('/') {
                let msg = format!("`{}` does not start with `/`", active.http_path);
                self.issue(format!("{path}.active.http_path"), msg);
            }
            if let Some(host) = &active.host
                && !is_host(host)
            {
                let msg = format!("`{}` is not a host name or address", host.escape_debug());
                self.issue(format!("{path}.active.host"), msg);
            }
            lists.push(("active.healthy", &active.healthy.http_statuses));
            lists.push(("active.unhealthy", &active.unhealthy.http_statuses));
        }
        if let Some(passive) = &checks.passive {
            lists.push(("passive.healthy", &passive.healthy.http_statuses));
            lists.push(("passive.unhealthy", &passive.unhealthy.http_statuses));
        }
        if checks.active.is_none() && checks.passive.is_none() {
            self.issue(path, "needs `active`, `passive` or both");
        }
        for (at, statuses) in lists {
            if statuses.is_empty() {
                self.issue(format!("{path}.{at}.http_statuses"), "is empty");
            }
        }
    }
}

/// Whether `name` is a request variable a hash key may name.
fn is_var(name: &str) -> bool {
    VARS.contains(&name)
        || VAR_PREFIXES.iter().any(|prefix| {
            name.strip_prefix(prefix).is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            })
        })
}

/// The variable name at the start of the text after a `$`.
fn var_name(after_dollar: &str) -> &str {
    let end = after_dollar
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(after_dollar.len());
    &after_dollar[..end]
}

fn unsupported_var(name: &str) -> String {
    format!(
        "`{name}` is not a supported variable; expected one of {}, or arg_<name>, \
         http_<name>, cookie_<name>",
        VARS.join(", ")
    )
}
