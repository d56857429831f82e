//! The resolution loop of one watched name: resolve, publish the outcome when
//! it differs from the last one, sleep until the TTL runs out, again.
//!
//! An SRV round asks for the SRV records, then for the addresses of targets
//! whose addresses did not come with the answer, and keeps each target's last
//! addresses for the rounds where its lookup fails.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use discovery_core::{Backoff, Endpoint};
use futures_util::future::join_all;
use hickory_resolver::proto::rr::Name;
use tokio::sync::watch;

use crate::{
    args::{Families, Lookup},
    metrics::DnsMetrics,
    resolve::{Addrs, LookupError, Resolver, key},
    select::{TargetAddrs, clamp_ttl, jittered, select_srv},
};

/// Refresh bounds shared by every loop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Refresh {
    pub(crate) min_ttl: Duration,
    pub(crate) max_ttl: Duration,
}

/// What a round found, before the watch's own arguments apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// NXDOMAIN or NODATA.
    NotFound,
    /// The endpoints of an SRV answer.
    Srv(Vec<Endpoint>),
    /// The addresses of address records.
    Addresses(Vec<IpAddr>),
}

/// One round's outcome: what was found, or why nothing could be.
pub(crate) type Outcome = Result<Resolved, String>;

struct Loop {
    resolver: Arc<Resolver>,
    metrics: DnsMetrics,
    refresh: Refresh,
    service: String,
    name: Name,
    lookup: Lookup,
    backoff: Backoff,
    /// Last addresses of each SRV target, for rounds where its lookup fails.
    known: BTreeMap<String, Vec<IpAddr>>,
    /// Targets dropped in the last round, logged when they change.
    dropped: Vec<String>,
}

/// Resolves `service` until aborted, publishing each outcome that differs
/// from the last one.
pub(crate) async fn run(
    resolver: Arc<Resolver>,
    metrics: DnsMetrics,
    refresh: Refresh,
    service: String,
    lookup: Lookup,
    tx: watch::Sender<Option<Outcome>>,
) {
    let name = match Name::from_utf8(&service) {
        Ok(n) => n,
        Err(e) => {
            tx.send_replace(Some(Err(format!("{service:?} is not a DNS name: {e}"))));
            return;
        }
    };
    let mut state = Loop {
        resolver,
        metrics,
        refresh,
        service,
        name,
        lookup,
        backoff: Backoff::new(
            refresh.min_ttl,
            refresh.max_ttl.min(Duration::from_secs(30)),
        ),
        known: BTreeMap::new(),
        dropped: Vec::new(),
    };
    loop {
        let (outcome, wait) = state.round().await;
        state.metrics.refresh_in(&state.service, wait);
        tx.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&outcome);
            if changed {
                *current = Some(outcome);
            }
            changed
        });
        tokio::time::sleep(wait).await;
    }
}

// === impl Loop ===

impl Loop {
    /// One resolution, and how long to wait before the next.
    async fn round(&mut self) -> (Outcome, Duration) {
        self.resolver.forget();
        let result = match self.lookup {
            Lookup::Addresses(families) => self
                .resolver
                .addresses(&self.name, families)
                .await
                .map(|a| (Resolved::Addresses(a.ips), a.ttl)),
            Lookup::Srv(targets) => self.srv_round(targets).await,
        };
        match result {
            Ok((resolved, ttl)) => {
                self.backoff.reset();
                (Ok(resolved), self.ttl_wait(ttl))
            }
            Err(LookupError::NotFound {
                nxdomain,
                negative_ttl,
            }) => {
                self.backoff.reset();
                tracing::debug!(name = %self.service, nxdomain, "name not found");
                (
                    Ok(Resolved::NotFound),
                    self.ttl_wait(negative_ttl.unwrap_or(0)),
                )
            }
            Err(LookupError::Bad(m) | LookupError::Failed(m) | LookupError::Refused(m)) => (
                Err(format!("{}: {m}", self.service)),
                self.backoff.next_delay(),
            ),
        }
    }

    async fn srv_round(&mut self, families: Families) -> Result<(Resolved, u32), LookupError> {
        let answer = self.resolver.srv(&self.name).await?;
        let mut ttl = answer.ttl;
        // Each distinct target once: from the additional section when it
        // has the target's addresses, else by lookup.
        let targets: BTreeSet<String> = answer
            .records
            .iter()
            .filter(|r| r.target != ".")
            .map(|r| r.target.clone())
            .collect();
        let (additional, resolver) = (&answer.additional, &self.resolver);
        let lookups = targets.iter().map(|t| async move {
            let with_answer = additional
                .get(&target_key(t))
                .map(|a| only(a, families))
                .filter(|a| !a.ips.is_empty());
            let result = match with_answer {
                Some(a) => Ok(a),
                None => match Name::from_utf8(t) {
                    Ok(n) => resolver.addresses(&n, families).await,
                    Err(e) => Err(LookupError::Bad(format!("not a DNS name: {e}"))),
                },
            };
            (t.clone(), result)
        });
        let mut resolved = BTreeMap::new();
        for (target, result) in join_all(lookups).await {
            let addrs = match result {
                Ok(a) => {
                    ttl = ttl.min(a.ttl);
                    self.known.insert(target.clone(), a.ips.clone());
                    TargetAddrs::Found(a.ips)
                }
                Err(LookupError::NotFound { nxdomain: true, .. }) => {
                    TargetAddrs::Gone("no such name (NXDOMAIN)".into())
                }
                Err(LookupError::NotFound { .. }) => {
                    TargetAddrs::Gone(format!("no {} records", families_label(families)))
                }
                Err(LookupError::Bad(m)) => TargetAddrs::Gone(m),
                Err(LookupError::Failed(m) | LookupError::Refused(m)) => {
                    match self.known.get(&target) {
                        Some(ips) => {
                            tracing::warn!(name = %self.service, %target, error = %m,
                            "target lookup failed; keeping its last addresses");
                            TargetAddrs::Found(ips.clone())
                        }
                        None => TargetAddrs::Failed(m),
                    }
                }
            };
            resolved.insert(target, addrs);
        }
        self.known.retain(|t, _| targets.contains(t));
        let records: Vec<_> = answer
            .records
            .iter()
            .map(|r| {
                let addrs = resolved
                    .get(&r.target)
                    .cloned()
                    .unwrap_or_else(|| TargetAddrs::Gone(String::new()));
                (r.clone(), addrs)
            })
            .collect();
        let selection = select_srv(&records).map_err(LookupError::Failed)?;
        self.report_dropped(selection.dropped);
        Ok((Resolved::Srv(selection.endpoints), ttl))
    }

    /// Logs dropped targets when they change; counts them every round.
    fn report_dropped(&mut self, dropped: Vec<String>) {
        self.metrics.dropped_targets(&self.service, dropped.len());
        if dropped != self.dropped {
            for d in &dropped {
                tracing::warn!(name = %self.service, "SRV {d}; serving the other targets");
            }
            self.dropped = dropped;
        }
    }

    fn ttl_wait(&self, ttl: u32) -> Duration {
        jittered(clamp_ttl(ttl, self.refresh.min_ttl, self.refresh.max_ttl))
    }
}

/// The addresses of the wanted families.
fn only(a: &Addrs, families: Families) -> Addrs {
    Addrs {
        ips: a
            .ips
            .iter()
            .copied()
            .filter(|ip| {
                if ip.is_ipv4() {
                    families.v4
                } else {
                    families.v6
                }
            })
            .collect(),
        ttl: a.ttl,
    }
}

fn families_label(f: Families) -> &'static str {
    match (f.v4, f.v6) {
        (true, false) => "A",
        (false, true) => "AAAA",
        _ => "A or AAAA",
    }
}

/// Lower-case key of a target as the SRV answer spells it.
fn target_key(target: &str) -> String {
    Name::from_utf8(target).map_or_else(|_| target.to_lowercase(), |n| key(&n))
}
