//! The pure parts of a resolution: which SRV records are served (the lowest
//! priority group that resolves), their weights, the endpoints they become,
//! and when to ask again (the answer's TTL, clamped, with jitter).

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use discovery_core::Endpoint;
use rand::Rng;

/// One SRV record of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SrvRecord {
    pub(crate) priority: u16,
    pub(crate) weight: u16,
    pub(crate) port: u16,
    /// The target host name, as the record gives it (`.` = no service).
    pub(crate) target: String,
}

/// What resolving one SRV target gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TargetAddrs {
    /// These addresses (never empty).
    Found(Vec<IpAddr>),
    /// The target does not resolve, for good (no such name, no address
    /// records, a CNAME loop): the target is dropped.
    Gone(String),
    /// The lookup failed (timeout, server failure): the target is unknown
    /// for now.
    Failed(String),
}

/// The endpoints of an SRV answer, and the targets left out of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Selection {
    pub(crate) endpoints: Vec<Endpoint>,
    /// One line per target left out: of the served group, and of the lower
    /// groups skipped because none of their targets resolved.
    pub(crate) dropped: Vec<String>,
}

/// Chooses the endpoints of an SRV answer.
///
/// Only the lowest priority group is served; when none of its targets
/// resolves for good, the next group is. A group whose targets could not be
/// looked up (and none resolved) is an error: the runtime keeps the last set
/// rather than fail over on a transient failure. Records whose target is `.`
/// ("no service here", RFC 2782) give nothing; an answer of only those is an
/// empty set.
///
/// Weights: RFC 2782 keeps weight 0 for groups with no selection to do, and
/// gives weight-0 records "a very small chance" next to heavier ones. So a
/// group whose weights are all 0 gets weight 1 each, and a weight-0 record
/// next to heavier ones gets weight 0 (no traffic while the others serve).
/// Two records that resolve to the same address and port are one endpoint
/// with their weights added.
pub(crate) fn select_srv(records: &[(SrvRecord, TargetAddrs)]) -> Result<Selection, String> {
    let mut groups: BTreeMap<u16, Vec<&(SrvRecord, TargetAddrs)>> = BTreeMap::new();
    for r in records.iter().filter(|(r, _)| r.target != ".") {
        groups.entry(r.0.priority).or_default().push(r);
    }
    let mut skipped = Vec::new();
    for (priority, group) in &groups {
        let all_zero = group.iter().all(|(r, _)| r.weight == 0);
        let mut endpoints: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
        let mut dropped = Vec::new();
        let mut failed = false;
        for (r, addrs) in group {
            let weight = if all_zero { 1 } else { i64::from(r.weight) };
            match addrs {
                TargetAddrs::Found(ips) => {
                    // An address listed twice is still one endpoint.
                    let ips: std::collections::BTreeSet<&IpAddr> = ips.iter().collect();
                    for ip in ips {
                        endpoints
                            .entry((*ip, r.port))
                            .and_modify(|e| e.weight = Some(e.weight.unwrap_or(0) + weight))
                            .or_insert_with(|| srv_endpoint(*ip, r, weight));
                    }
                }
                TargetAddrs::Gone(why) => dropped.push(format!("target {}: {why}", r.target)),
                TargetAddrs::Failed(why) => {
                    failed = true;
                    dropped.push(format!("target {}: {why}", r.target));
                }
            }
        }
        if !endpoints.is_empty() {
            dropped.extend(skipped);
            return Ok(Selection {
                endpoints: endpoints.into_values().collect(),
                dropped,
            });
        }
        if failed {
            return Err(format!(
                "no target of priority {priority} resolves: {}",
                dropped.join("; ")
            ));
        }
        skipped.extend(
            dropped
                .into_iter()
                .map(|d| format!("{d} (priority {priority})")),
        );
    }
    if groups.is_empty() {
        return Ok(Selection {
            endpoints: Vec::new(),
            dropped: Vec::new(),
        });
    }
    Err(format!("no SRV target resolves: {}", skipped.join("; ")))
}

/// The endpoints of address records served on one port.
pub(crate) fn address_endpoints(ips: &[IpAddr], port: u16, weight: Option<u32>) -> Vec<Endpoint> {
    ips.iter()
        .map(|ip| Endpoint {
            address: ip.to_string(),
            port: u32::from(port),
            weight: weight.map(i64::from),
            ..Endpoint::default()
        })
        .collect()
}

fn srv_endpoint(ip: IpAddr, r: &SrvRecord, weight: i64) -> Endpoint {
    Endpoint {
        address: ip.to_string(),
        port: u32::from(r.port),
        weight: Some(weight),
        metadata: BTreeMap::from([
            ("target".to_string(), r.target.clone()),
            ("priority".to_string(), r.priority.to_string()),
        ]),
        ..Endpoint::default()
    }
}

/// How long an answer is used: its TTL within `[min, max]` (a TTL of 0, as
/// Consul's DNS gives, is `min`).
pub(crate) fn clamp_ttl(ttl_secs: u32, min: Duration, max: Duration) -> Duration {
    Duration::from_secs(u64::from(ttl_secs)).clamp(min, max.max(min))
}

/// The wait before the next query: `ttl` plus up to a tenth of it (at most
/// 500 ms), so that names with equal TTLs are not all asked at once, and a
/// cache on the way has expired its copy when we ask.
pub(crate) fn jittered(ttl: Duration) -> Duration {
    let spread = (ttl / 10).min(Duration::from_millis(500));
    ttl + rand::rng().random_range(Duration::ZERO..=spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn found(ips: &[&str]) -> TargetAddrs {
        TargetAddrs::Found(ips.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn ids(s: &Selection) -> Vec<(String, Option<i64>)> {
        s.endpoints
            .iter()
            .map(|e| (e.effective_id(), e.weight))
            .collect()
    }

    #[test]
    fn only_the_lowest_priority_group_is_served() {
        let s = select_srv(&[
            (rec(20, 1, 80, "backup."), found(&["10.0.0.9"])),
            (rec(10, 30, 80, "a."), found(&["10.0.0.1"])),
            (rec(10, 10, 8080, "b."), found(&["10.0.0.2", "::2"])),
        ])
        .unwrap();
        assert_eq!(
            ids(&s),
            [
                ("10.0.0.1:80".to_string(), Some(30)),
                ("10.0.0.2:8080".to_string(), Some(10)),
                ("[::2]:8080".to_string(), Some(10)),
            ]
        );
        assert!(s.dropped.is_empty());
        let e = &s.endpoints[0];
        assert_eq!(e.metadata["target"], "a.");
        assert_eq!(e.metadata["priority"], "10");
    }

    #[test]
    fn the_next_group_serves_when_no_target_of_the_lowest_resolves() {
        let s = select_srv(&[
            (
                rec(10, 1, 80, "gone."),
                TargetAddrs::Gone("NXDOMAIN".into()),
            ),
            (rec(20, 1, 80, "backup."), found(&["10.0.0.9"])),
        ])
        .unwrap();
        assert_eq!(ids(&s), [("10.0.0.9:80".to_string(), Some(1))]);
        assert_eq!(s.dropped, ["target gone.: NXDOMAIN (priority 10)"]);
    }

    #[test]
    fn an_unresolved_target_is_dropped_and_the_rest_served() {
        let s = select_srv(&[
            (rec(0, 1, 80, "a."), found(&["10.0.0.1"])),
            (
                rec(0, 1, 80, "loop."),
                TargetAddrs::Gone("CNAME loop".into()),
            ),
            (
                rec(0, 1, 80, "slow."),
                TargetAddrs::Failed("timed out".into()),
            ),
        ])
        .unwrap();
        assert_eq!(ids(&s), [("10.0.0.1:80".to_string(), Some(1))]);
        assert_eq!(s.dropped.len(), 2);
        assert!(s.dropped[0].contains("loop.: CNAME loop"));
    }

    #[test]
    fn a_failed_lookup_does_not_fail_over_and_nothing_resolving_is_an_error() {
        let err = select_srv(&[
            (
                rec(0, 1, 80, "slow."),
                TargetAddrs::Failed("timed out".into()),
            ),
            (rec(1, 1, 80, "backup."), found(&["10.0.0.9"])),
        ])
        .unwrap_err();
        assert!(err.contains("slow.: timed out"), "{err}");
        let err = select_srv(&[
            (rec(0, 1, 80, "x."), TargetAddrs::Gone("NXDOMAIN".into())),
            (
                rec(1, 1, 80, "y."),
                TargetAddrs::Gone("no address records".into()),
            ),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            "no SRV target resolves: target x.: NXDOMAIN (priority 0); \
             target y.: no address records (priority 1)"
        );
    }

    #[test]
    fn weights_zero_and_duplicates() {
        let s = select_srv(&[
            (rec(0, 0, 80, "a."), found(&["10.0.0.1"])),
            (rec(0, 0, 80, "b."), found(&["10.0.0.2"])),
        ])
        .unwrap();
        assert_eq!(
            ids(&s),
            [
                ("10.0.0.1:80".to_string(), Some(1)),
                ("10.0.0.2:80".to_string(), Some(1))
            ]
        );
        let s = select_srv(&[
            (rec(0, 0, 80, "a."), found(&["10.0.0.1"])),
            (rec(0, 5, 80, "b."), found(&["10.0.0.2"])),
            (rec(0, 3, 80, "b-alias."), found(&["10.0.0.2", "10.0.0.2"])),
        ])
        .unwrap();
        assert_eq!(
            ids(&s),
            [
                ("10.0.0.1:80".to_string(), Some(0)),
                ("10.0.0.2:80".to_string(), Some(8))
            ]
        );
    }

    #[test]
    fn no_service_targets_give_an_empty_set() {
        let s = select_srv(&[(rec(0, 0, 0, "."), TargetAddrs::Gone(String::new()))]).unwrap();
        assert!(s.endpoints.is_empty() && s.dropped.is_empty());
    }

    #[test]
    fn address_records_become_endpoints_on_the_port() {
        let ips = ["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        let eps = address_endpoints(&ips, 8080, Some(2));
        assert_eq!(eps[0].effective_id(), "10.0.0.1:8080");
        assert_eq!(eps[1].effective_id(), "[fd00::1]:8080");
        assert!(eps.iter().all(|e| e.weight == Some(2)));
    }

    #[test]
    fn ttls_are_clamped_and_jittered_upwards_a_little() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(clamp_ttl(0, min, max), min);
        assert_eq!(clamp_ttl(30, min, max), Duration::from_secs(30));
        assert_eq!(clamp_ttl(86_400, min, max), max);
        for ttl in [1, 30, 300] {
            let ttl = Duration::from_secs(ttl);
            for _ in 0..100 {
                let d = jittered(ttl);
                assert!(d >= ttl && d <= ttl + Duration::from_millis(500), "{d:?}");
            }
        }
        assert!(jittered(Duration::from_secs(1)) <= Duration::from_millis(1100));
    }
}
