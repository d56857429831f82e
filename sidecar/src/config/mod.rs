//! The sidecar's YAML config: its types, parsing and validation.
//!
//! One file holds six sections, all optional:
//!
//! ```yaml
//! listeners: []   # sockets to accept on: http (through routes) or tcp (to one upstream)
//! routes: []      # which HTTP requests go to which upstream
//! upstreams: []   # endpoints (static nodes, discovery sources) and how to reach them
//! adapters: {}    # discovery adapters by name, referred to by `discovery_type`
//! admin: {}       # the admin endpoint
//! telemetry: {}   # logs, traces and metric labels
//! ```
//!
//! Routes and upstreams use the field names and defaults of Apache APISIX, so
//! an APISIX upstream carries over with few changes; `docs/config.md` is the
//! reference, field by field. [`Config::from_yaml`] parses, then validates
//! the whole: unknown fields anywhere are refused, and every error names its
//! line and field path (see [`ConfigError`]).

mod checks;
mod connection;
mod de;
mod error;
mod listener;
mod node;
mod route;
mod services;
mod source_map;
mod telemetry;
mod upstream;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

pub use self::checks::{
    ActiveCheck, ActiveCheckType, ActiveHealthy, ActiveUnhealthy, Checks, PassiveCheck,
    PassiveCheckType, PassiveHealthy, PassiveUnhealthy,
};
pub use self::connection::{DEFAULT_TIMEOUT, KeepalivePool, Timeouts};
pub use self::error::{ConfigError, Problem};
pub use self::listener::{Listener, ListenerProtocol};
pub use self::node::{Node, Source};
pub use self::route::{Route, UriMatch};
pub use self::services::{Adapter, Admin, DEFAULT_ADAPTER_CONNECT_TIMEOUT, DEFAULT_ADMIN_ADDRESS};
pub use self::telemetry::{Headers, LogFormat, OtlpProtocol, Telemetry};
pub use self::upstream::{
    BalancerType, DEFAULT_NODE_PORT, HashOn, PassHost, Scheme, Upstream, UpstreamProtocol,
};

/// The whole config file. A section left out, or written empty, takes its
/// default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Sockets to accept connections on. Default none.
    #[serde(deserialize_with = "de::or_default")]
    pub listeners: Vec<Listener>,
    /// Rules that send HTTP requests to upstreams, tried by priority. Default none.
    #[serde(deserialize_with = "de::or_default")]
    pub routes: Vec<Route>,
    /// Sets of endpoints and how to reach them. Default none.
    #[serde(deserialize_with = "de::or_default")]
    pub upstreams: Vec<Upstream>,
    /// Discovery adapters by name; an upstream's `discovery_type` names one.
    /// Default none.
    #[serde(deserialize_with = "de::or_default")]
    pub adapters: BTreeMap<String, Adapter>,
    /// The admin endpoint.
    #[serde(deserialize_with = "de::or_default")]
    pub admin: Admin,
    /// Logs and traces.
    #[serde(deserialize_with = "de::or_default")]
    pub telemetry: Telemetry,
}

// === impl Config ===

impl Config {
    /// Parses and validates a config.
    ///
    /// Parsing stops at the first value it cannot read; validation then
    /// reports every problem it finds. Never panics, whatever the input.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        // serde-saphyr reads an empty text as an all-default config, which
        // is more likely a wrong or truncated file than an intent.
        let blank = text
            .lines()
            .map(str::trim)
            .all(|line| line.is_empty() || line.starts_with('#') || line == "---" || line == "...");
        if blank {
            return Err(ConfigError::empty());
        }
        let options = serde_saphyr::options! { with_snippet: false };
        let config: Config = serde_saphyr::from_str_with_options(text, options)
            .map_err(|err| ConfigError::parse(&err, text))?;
        let issues = validate::check(&config);
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::invalid(issues, text))
        }
    }

    /// Reads the file at `path`, then [`Config::from_yaml`]; errors name the
    /// file. The read blocks: call it from a blocking context.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::read(path, err))?;
        Config::from_yaml(&text).map_err(|err| err.in_file(path))
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }
}
