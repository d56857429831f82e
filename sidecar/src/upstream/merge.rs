//! Merging an upstream's sources: static nodes and every discovery source,
//! each with a priority, into one endpoint list keyed by address.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use tokio::sync::watch;
use tokio_stream::{StreamExt, StreamMap, wrappers::WatchStream};
use tributary_proto::v1 as pb;

use super::Health;
use crate::{
    config,
    discovery::{Source, SourceState},
};

/// An endpoint before it joins a set.
pub(crate) struct Candidate {
    pub id: Arc<str>,
    pub addr: SocketAddr,
    pub weight: u32,
    pub priority: i32,
    pub zone: Arc<str>,
    pub source: Arc<str>,
    pub registry_health: Health,
}

/// One source as `/upstreams` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SourceView {
    /// `adapter/service;args`.
    pub name: String,
    /// The source's priority.
    pub priority: i32,
    /// A first snapshot arrived.
    pub synced: bool,
    /// The adapter's version.
    pub version: u64,
    /// The registry does not know the service.
    pub not_found: bool,
    /// The endpoints may be out of date.
    pub stale: bool,
    /// Endpoints the source gives.
    pub endpoints: usize,
}

/// The result of a merge.
pub(crate) struct Merged {
    pub endpoints: Vec<Candidate>,
    pub sources: Vec<SourceView>,
}

/// Follows an upstream's sources and merges them.
pub(crate) struct Merger {
    statics: Vec<Candidate>,
    sources: Vec<(Arc<Source>, i32)>,
    latest: Vec<Arc<SourceState>>,
    changes: StreamMap<usize, WatchStream<Arc<SourceState>>>,
}

static STATIC: &str = "static";

/// Resolves static nodes once, when the config is loaded.
pub(crate) async fn resolve_static(nodes: &[config::Node]) -> Result<Vec<Candidate>, String> {
    let mut out = Vec::with_capacity(nodes.len());
    for n in nodes {
        let addr = resolve(&n.host, n.port)
            .await
            .map_err(|e| format!("node {}:{}: {e}", n.host, n.port))?;
        out.push(Candidate {
            id: format!("{}:{}", n.host, n.port).into(),
            addr,
            weight: n.weight,
            priority: n.priority,
            zone: "".into(),
            source: STATIC.into(),
            registry_health: Health::Healthy,
        });
    }
    Ok(out)
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

// === impl Merger ===

impl Merger {
    pub(crate) fn new(statics: Vec<Candidate>, sources: Vec<(Arc<Source>, i32)>) -> Self {
        let mut changes = StreamMap::new();
        let mut latest = Vec::with_capacity(sources.len());
        for (i, (s, _)) in sources.iter().enumerate() {
            let rx: watch::Receiver<Arc<SourceState>> = s.receiver();
            latest.push(rx.borrow().clone());
            changes.insert(i, WatchStream::from_changes(rx));
        }
        Self {
            statics,
            sources,
            latest,
            changes,
        }
    }

    /// Waits for any source to change; `false` when no source can change.
    pub(crate) async fn changed(&mut self) -> bool {
        match self.changes.next().await {
            Some((i, state)) => {
                self.latest[i] = state;
                // Take every change that is already waiting, then merge once.
                while let Some(Some((i, state))) =
                    futures_util::FutureExt::now_or_never(self.changes.next())
                {
                    self.latest[i] = state;
                }
                true
            }
            None => false,
        }
    }

    /// Merges statics and sources by address: the higher priority wins, and
    /// on a tie the earlier source.
    pub(crate) async fn merge(&self) -> Merged {
        let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
        let mut endpoints: Vec<Candidate> = Vec::new();
        let mut push = |c: Candidate, endpoints: &mut Vec<Candidate>| match by_addr.get(&c.addr) {
            Some(&i) if endpoints[i].priority >= c.priority => {}
            Some(&i) => endpoints[i] = c,
            None => {
                by_addr.insert(c.addr, endpoints.len());
                endpoints.push(c);
            }
        };
        for c in &self.statics {
            push(
                Candidate {
                    id: c.id.clone(),
                    zone: c.zone.clone(),
                    source: c.source.clone(),
                    ..*c
                },
                &mut endpoints,
            );
        }
        let mut sources = Vec::with_capacity(self.sources.len());
        for ((source, priority), state) in self.sources.iter().zip(&self.latest) {
            let name: Arc<str> = source.key().to_string().into();
            sources.push(SourceView {
                name: name.to_string(),
                priority: *priority,
                synced: state.synced,
                version: state.version,
                not_found: state.not_found,
                stale: state.stale,
                endpoints: state.endpoints.len(),
            });
            for e in state.endpoints.iter() {
                let addr = match resolve(&e.address, e.port).await {
                    Ok(a) => a,
                    Err(err) => {
                        tracing::warn!(source = %name, endpoint = %e.id, error = %err, "endpoint dropped");
                        continue;
                    }
                };
                let registry_health = match e.health {
                    pb::Health::Unhealthy => Health::Unhealthy,
                    pb::Health::Draining => Health::Draining,
                    pb::Health::Healthy | pb::Health::Unknown => Health::Healthy,
                };
                push(
                    Candidate {
                        id: e.id.clone(),
                        addr,
                        weight: e.weight,
                        priority: *priority,
                        zone: e.zone.clone(),
                        source: name.clone(),
                        registry_health,
                    },
                    &mut endpoints,
                );
            }
        }
        Merged { endpoints, sources }
    }
}
