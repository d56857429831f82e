//! The adapter's configuration: the Eureka servers and how to reach them,
//! the fetch pace, and how instances become endpoints.

use std::{fmt, time::Duration};

use discovery_core::Health;
use reqwest::Url;

/// How the adapter reaches Eureka and reads its instances. Its `Debug`
/// output leaves out passwords, in URLs too.
#[derive(Clone)]
pub struct EurekaConfig {
    /// Base URLs of the Eureka servers of one cluster, path included
    /// (`http://host:8761/eureka` or `http://host:8080/eureka/v2`). The first
    /// that answers is used until it fails. Credentials in a URL
    /// (`http://user:pass@host/eureka`) are taken out of it and used for that
    /// server.
    pub servers: Vec<String>,
    /// Basic-auth credentials for servers whose URL carries none.
    pub credentials: Option<Credentials>,
    /// Time between two fetches of the registry; at least one second.
    pub fetch_interval: Duration,
    /// Bound on one request, connecting included.
    pub request_timeout: Duration,
    /// Largest response body read, in bytes; a larger one is refused.
    pub max_body_bytes: usize,
    /// How instances become endpoints.
    pub mapping: Mapping,
}

/// Basic-auth credentials; the password never shows in `Debug` output.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    password: String,
}

/// How an Eureka instance becomes an endpoint.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// The health of a `STARTING` instance.
    pub starting: Health,
    /// The health of an `UNKNOWN` instance.
    pub unknown: Health,
    /// The metadata key holding an instance's weight.
    pub weight_key: String,
    /// The metadata key holding an instance's zone; without it the zone is
    /// the AWS availability zone of its `dataCenterInfo`, if any.
    pub zone_key: String,
}

/// A configuration the adapter cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub(crate) String);

/// One Eureka server: its base URL (ending in `/`, without credentials) and
/// the credentials to send it.
#[derive(Clone, Debug)]
pub(crate) struct Server {
    pub(crate) base: Url,
    pub(crate) credentials: Option<Credentials>,
}

/// Shortest fetch interval.
pub(crate) const MIN_FETCH_INTERVAL: Duration = Duration::from_secs(1);

// === impl EurekaConfig ===

impl EurekaConfig {
    /// The servers, checked: `http` or `https` URLs, credentials split off.
    pub(crate) fn servers(&self) -> Result<Vec<Server>, ConfigError> {
        if self.servers.is_empty() {
            return Err(ConfigError("no Eureka server URL given".into()));
        }
        self.servers
            .iter()
            .map(|s| parse_server(s, self.credentials.as_ref()))
            .collect()
    }

    /// Checks the values that have bounds.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.fetch_interval < MIN_FETCH_INTERVAL {
            return Err(ConfigError(format!(
                "fetch interval {:?} is below the minimum of {MIN_FETCH_INTERVAL:?}",
                self.fetch_interval
            )));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError("request timeout must not be zero".into()));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError("max body size must not be zero".into()));
        }
        if self.mapping.weight_key.is_empty() || self.mapping.zone_key.is_empty() {
            return Err(ConfigError("metadata keys must not be empty".into()));
        }
        Ok(())
    }
}

impl fmt::Debug for EurekaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<String> = self.servers.iter().map(|s| redacted(s)).collect();
        f.debug_struct("EurekaConfig")
            .field("servers", &servers)
            .field("credentials", &self.credentials)
            .field("fetch_interval", &self.fetch_interval)
            .field("request_timeout", &self.request_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("mapping", &self.mapping)
            .finish()
    }
}

fn parse_server(s: &str, default: Option<&Credentials>) -> Result<Server, ConfigError> {
    let mut url = Url::parse(s.trim()).map_err(|e| {
        // The text may hold a password: name the problem, not the value.
        ConfigError(format!(
            "Eureka server URL {} is not a URL: {e}",
            redacted(s)
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError(format!(
            "Eureka server URL {} must be http or https",
            redacted(s)
        )));
    }
    let credentials = if url.username().is_empty() {
        default.cloned()
    } else {
        let c = Credentials::new(
            percent_decode(url.username()),
            percent_decode(url.password().unwrap_or("")),
        );
        // Setting these cannot fail on an http(s) URL.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Some(c)
    };
    url.set_query(None);
    url.set_fragment(None);
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(Server {
        base: url,
        credentials,
    })
}

/// A server URL for messages: the part after any `user:password@`.
fn redacted(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &s[..scheme], &s[at + 1..]),
        _ => s.to_string(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === impl Credentials ===

impl Credentials {
    /// A user name and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

// === impl Mapping ===

impl Default for Mapping {
    /// `STARTING` and `UNKNOWN` unhealthy, keys `weight` and `zone`.
    fn default() -> Self {
        Self {
            starting: Health::Unhealthy,
            unknown: Health::Unhealthy,
            weight_key: "weight".into(),
            zone_key: "zone".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(servers: &[&str]) -> EurekaConfig {
        EurekaConfig {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            credentials: Some(Credentials::new("flag-user", "flag-secret")),
            fetch_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 1 << 20,
            mapping: Mapping::default(),
        }
    }

    #[test]
    fn servers_get_a_trailing_slash_and_their_own_credentials() {
        let s = config(&["http://u%40x:p%2Fw@h1:8761/eureka", "https://h2/eureka/v2/"])
            .servers()
            .unwrap();
        assert_eq!(s[0].base.as_str(), "http://h1:8761/eureka/");
        let c = s[0].credentials.as_ref().unwrap();
        assert_eq!((c.username.as_str(), c.password()), ("u@x", "p/w"));
        assert_eq!(
            s[1].base.join("apps/delta").unwrap().as_str(),
            "https://h2/eureka/v2/apps/delta"
        );
        assert_eq!(s[1].credentials.as_ref().unwrap().username, "flag-user");
    }

    #[test]
    fn bad_configs_are_named_and_passwords_never_shown() {
        let err = config(&["ftp://u:hunter2@h/eureka"])
            .servers()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("must be http or https") && !err.contains("hunter2"),
            "{err}"
        );
        let err = config(&["http://u:hunter2@[::1/eureka"])
            .servers()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a URL") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(config(&[]).servers().is_err());
        let mut c = config(&["http://h/eureka"]);
        c.fetch_interval = Duration::from_millis(500);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("below the minimum")
        );
        let shown = format!("{:?}", config(&["http://u:url-secret@h/eureka"]));
        assert!(
            !shown.contains("flag-secret") && !shown.contains("url-secret"),
            "{shown}"
        );
    }
}
