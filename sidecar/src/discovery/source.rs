//! What one discovery source publishes: the endpoint set of one watched
//! service, in the sidecar's terms, with its sync state.

use std::{collections::BTreeMap, sync::Arc};

use tributary_proto::v1 as pb;

/// Identifies one watched service at one adapter; upstreams that name the
/// same key share one stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SourceKey {
    /// The adapter's name in the config.
    pub(crate) adapter: String,
    /// The service name at the registry.
    pub(crate) service: String,
    /// Registry-specific watch arguments.
    pub(crate) args: BTreeMap<String, String>,
}

/// One endpoint as a source reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SourceEndpoint {
    /// The adapter's endpoint id.
    pub(crate) id: Arc<str>,
    /// IP address or host name.
    pub(crate) address: Arc<str>,
    /// TCP port.
    pub(crate) port: u16,
    /// Relative weight; 0 = no traffic.
    pub(crate) weight: u32,
    /// The registry's health view.
    pub(crate) health: pb::Health,
    /// Failure domain.
    pub(crate) zone: Arc<str>,
}

/// The state of one source, as published to upstreams.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceState {
    /// Whether a first snapshot arrived (until then the source contributes
    /// nothing and the upstream is not ready).
    pub(crate) synced: bool,
    /// The adapter's version of the set.
    pub(crate) version: u64,
    /// The endpoints, sorted by id.
    pub(crate) endpoints: Arc<Vec<SourceEndpoint>>,
    /// The registry does not know the service.
    pub(crate) not_found: bool,
    /// The adapter reported its registry stale, or the stream to the adapter
    /// is down: the endpoints are the last known ones.
    pub(crate) stale: bool,
}

// === impl SourceKey ===

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.adapter, self.service)?;
        for (k, v) in &self.args {
            write!(f, ";{k}={v}")?;
        }
        Ok(())
    }
}

// === impl SourceEndpoint ===

impl SourceEndpoint {
    /// Checks an endpoint received from an adapter.
    pub(crate) fn from_wire(e: &pb::Endpoint) -> Result<Self, String> {
        if e.id.is_empty() {
            return Err(format!("endpoint {}:{} has no id", e.address, e.port));
        }
        let port = u16::try_from(e.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("endpoint {:?}: port {} is not in 1..=65535", e.id, e.port))?;
        if e.address.is_empty() || e.address.contains(['/', ' ']) {
            return Err(format!(
                "endpoint {:?}: address {:?} is not usable",
                e.id, e.address
            ));
        }
        Ok(Self {
            id: e.id.as_str().into(),
            address: e.address.as_str().into(),
            port,
            weight: e.weight.unwrap_or(1),
            health: pb::Health::try_from(e.health).unwrap_or(pb::Health::Unknown),
            zone: e.zone.as_str().into(),
        })
    }
}
