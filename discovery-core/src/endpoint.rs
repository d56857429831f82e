//! Endpoints as a registry reports them, and the checks that turn them into
//! contract endpoints.
//!
//! Registries hand the runtime plain values; the runtime validates each one so
//! that one malformed instance is dropped (with an error naming it) while the
//! rest of the answer is served.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use tributary_proto::v1 as pb;

/// One service instance as a registry reported it, before validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Stable identity within the service; empty means "address:port".
    pub id: String,
    /// IP address or host name.
    pub address: String,
    /// TCP port; must be 1..=65535.
    pub port: u32,
    /// Relative share of traffic; must not be negative. `None` means 1.
    pub weight: Option<i64>,
    /// The registry's health view.
    pub health: Health,
    /// Failure domain; empty if unknown.
    pub zone: String,
    /// Registry metadata.
    pub metadata: BTreeMap<String, String>,
}

/// The registry's view of one endpoint's health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Health {
    /// The registry has no view.
    #[default]
    Unknown,
    /// Healthy.
    Healthy,
    /// Unhealthy: no traffic.
    Unhealthy,
    /// Being taken out of service: no new traffic.
    Draining,
}

/// A registry's full answer for one watched service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The service exists with these endpoints (possibly none).
    Found(Vec<Endpoint>),
    /// The registry does not know the service.
    NotFound,
}

/// Why an endpoint of an answer was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("endpoint {endpoint:?} dropped: {reason}")]
pub struct InvalidEndpoint {
    /// The endpoint's id, or its address and port when it has none.
    pub endpoint: String,
    /// What is wrong with it.
    pub reason: String,
}

// === impl Endpoint ===

impl Endpoint {
    /// The id the endpoint is known by: its own, or "address:port".
    pub fn effective_id(&self) -> String {
        if !self.id.is_empty() {
            return self.id.clone();
        }
        match self.address.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.address, self.port),
            _ => format!("{}:{}", self.address, self.port),
        }
    }

    /// Checks the endpoint and converts it to its wire form.
    pub fn validate(&self) -> Result<pb::Endpoint, InvalidEndpoint> {
        let invalid = |reason: String| InvalidEndpoint {
            endpoint: self.effective_id(),
            reason,
        };
        if self.port == 0 || self.port > u32::from(u16::MAX) {
            return Err(invalid(format!("port {} is not in 1..=65535", self.port)));
        }
        check_address(&self.address).map_err(invalid)?;
        let weight = match self.weight {
            None => None,
            Some(w) if w < 0 => return Err(invalid(format!("weight {w} is negative"))),
            Some(w) => Some(u32::try_from(w).map_err(|_| {
                invalid(format!(
                    "weight {w} is above the largest weight {}",
                    u32::MAX
                ))
            })?),
        };
        Ok(pb::Endpoint {
            id: self.effective_id(),
            address: self.address.clone(),
            port: self.port,
            weight,
            health: pb::Health::from(self.health).into(),
            zone: self.zone.clone(),
            metadata: self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

/// Accepts an IP address or a syntactically valid DNS host name.
fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("address is empty".into());
    }
    if address.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = address.strip_suffix('.').unwrap_or(address);
    let labels_ok = name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    // A name whose last label is all digits is a mistyped IP address.
    let numeric_tld = name
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if !labels_ok || numeric_tld {
        return Err(format!(
            "address {address:?} is neither an IP address nor a host name"
        ));
    }
    Ok(())
}

// === impl Health ===

impl From<Health> for pb::Health {
    fn from(h: Health) -> Self {
        match h {
            Health::Unknown => pb::Health::Unknown,
            Health::Healthy => pb::Health::Healthy,
            Health::Unhealthy => pb::Health::Unhealthy,
            Health::Draining => pb::Health::Draining,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Draining => "draining",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(address: &str, port: u32, weight: Option<i64>) -> Endpoint {
        Endpoint {
            address: address.into(),
            port,
            weight,
            ..Default::default()
        }
    }

    #[test]
    fn valid_endpoints_convert() {
        let e = ep("10.0.0.1", 80, Some(3)).validate().unwrap();
        assert_eq!(e.id, "10.0.0.1:80");
        assert_eq!(e.weight, Some(3));
        assert_eq!(ep("::1", 80, None).validate().unwrap().id, "[::1]:80");
        assert!(ep("web-1.svc.cluster.local", 8080, None).validate().is_ok());
    }

    #[test]
    fn invalid_endpoints_name_the_problem() {
        let err = ep("10.0.0.1", 0, None).validate().unwrap_err();
        assert!(err.to_string().contains("port 0"), "{err}");
        let err = ep("10.0.0.1", 70000, None).validate().unwrap_err();
        assert!(err.to_string().contains("port 70000"), "{err}");
        let err = ep("10.0.0.1", 80, Some(-1)).validate().unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        for bad in ["", "300.1.1.1", "a b", "-x.com", "x..y"] {
            assert!(ep(bad, 80, None).validate().is_err(), "{bad:?} accepted");
        }
    }
}
