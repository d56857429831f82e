//! A `discovery.v1` subscriber for tests: it holds the endpoint set the way a
//! sidecar does and checks the stream rules of the contract on every message
//! (a snapshot first, deltas exactly one version apart, no id both upserted and
//! removed, versions that only grow), so that every test that reads a stream
//! also checks the contract.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use tonic::{Code, Streaming, transport::Channel};
use tributary_proto::v1::{
    self as pb, endpoint_discovery_client::EndpointDiscoveryClient, endpoint_update::Kind,
};

/// How long connecting and opening a stream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An endpoint set keyed by id, as a subscriber holds it.
pub type EndpointSet = BTreeMap<String, pb::Endpoint>;

/// One open `Watch` stream and the set it has built.
#[derive(Debug)]
pub struct Subscriber {
    service: String,
    stream: Streaming<pb::EndpointUpdate>,
    set: EndpointSet,
    version: Option<u64>,
    not_found: bool,
    statuses: Vec<pb::Status>,
}

/// A gRPC client of an adapter, connected over its own HTTP/2 connection.
pub async fn connect(addr: SocketAddr) -> Result<EndpointDiscoveryClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .context("bad adapter address")?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("cannot connect to the adapter at {addr}"))?;
    Ok(EndpointDiscoveryClient::new(channel))
}

// === impl Subscriber ===

impl Subscriber {
    /// Opens a watch of `service` (no arguments) on its own connection.
    pub async fn watch(addr: SocketAddr, service: &str) -> Result<Self> {
        Self::watch_with(addr, service, BTreeMap::new()).await
    }

    /// Opens a watch of `service` with registry arguments on its own
    /// connection. A refused watch fails with the gRPC status, which
    /// [`refusal`] reads back.
    pub async fn watch_with(
        addr: SocketAddr,
        service: &str,
        args: BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut client = connect(addr).await?;
        let request = pb::WatchRequest {
            service: service.to_string(),
            args: args.into_iter().collect(),
            subscriber_id: "tributary-integration".into(),
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, client.watch(request))
            .await
            .map_err(|_| anyhow!("Watch({service:?}) was not answered within {CONNECT_TIMEOUT:?}"))?
            .map_err(anyhow::Error::new)
            .with_context(|| format!("Watch({service:?}) refused"))?
            .into_inner();
        Ok(Self {
            service: service.to_string(),
            stream,
            set: EndpointSet::new(),
            version: None,
            not_found: false,
            statuses: Vec::new(),
        })
    }

    /// The set held, after every message received so far.
    pub fn set(&self) -> &EndpointSet {
        &self.set
    }

    /// The version held; `None` before the first snapshot.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Whether the last snapshot said the service does not exist.
    pub fn not_found(&self) -> bool {
        self.not_found
    }

    /// Every status message received so far, oldest first.
    pub fn statuses(&self) -> &[pb::Status] {
        &self.statuses
    }

    /// The next message, applied to the held set after checking it against
    /// the stream rules. Fails if none comes within `timeout`, if the stream
    /// ends, or if the message breaks a rule.
    pub async fn recv(&mut self, timeout: Duration) -> Result<pb::EndpointUpdate> {
        let service = self.service.clone();
        let message = tokio::time::timeout(timeout, self.stream.message())
            .await
            .map_err(|_| anyhow!("watch of {service:?}: no message within {timeout:?}"))?
            .with_context(|| format!("watch of {service:?} failed"))?
            .ok_or_else(|| anyhow!("watch of {service:?}: the adapter ended the stream"))?;
        self.apply(&message)
            .with_context(|| format!("watch of {service:?}: {}", describe(&message)))?;
        Ok(message)
    }

    /// The next snapshot or delta; status messages before it are recorded
    /// (see [`statuses`](Self::statuses)) and skipped.
    pub async fn recv_change(&mut self, timeout: Duration) -> Result<pb::EndpointUpdate> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.recv(left).await?;
            if !matches!(m.kind, Some(Kind::Status(_))) {
                return Ok(m);
            }
        }
    }

    /// Reads messages until a status in `state` comes, for at most
    /// `timeout`; any change to the set meanwhile is an error.
    pub async fn wait_status(
        &mut self,
        state: pb::SyncState,
        timeout: Duration,
    ) -> Result<pb::Status> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self
                .recv(left)
                .await
                .with_context(|| format!("waiting for {state:?}"))?;
            match m.kind {
                Some(Kind::Status(s)) if s.state == state as i32 => return Ok(s),
                Some(Kind::Status(_)) => {}
                _ => bail!("waiting for {state:?}: got a {}", describe(&m)),
            }
        }
    }

    /// Reads messages until the held set satisfies `done`, for at most
    /// `timeout`. With `deltas_only`, a snapshot on the way is an error.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        deltas_only: bool,
        what: &str,
        done: impl Fn(&EndpointSet) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&self.set) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self
                .recv_change(left)
                .await
                .with_context(|| format!("waiting for {what}"))?;
            if deltas_only && matches!(m.kind, Some(Kind::Snapshot(_))) {
                bail!("waiting for {what}: got a snapshot where a delta was due");
            }
        }
        Ok(())
    }

    fn apply(&mut self, m: &pb::EndpointUpdate) -> Result<()> {
        let kind = m
            .kind
            .as_ref()
            .ok_or_else(|| anyhow!("message has no kind"))?;
        if self.version.is_none() && !matches!(kind, Kind::Snapshot(_)) {
            bail!("the first message of a stream must be a snapshot");
        }
        match kind {
            Kind::Snapshot(s) => {
                if let Some(v) = self.version.filter(|v| m.version < *v) {
                    bail!(
                        "snapshot version {} is below the held version {v}",
                        m.version
                    );
                }
                if s.not_found && !s.endpoints.is_empty() {
                    bail!(
                        "a not_found snapshot carries {} endpoints",
                        s.endpoints.len()
                    );
                }
                let mut set = EndpointSet::new();
                for e in &s.endpoints {
                    if set.insert(e.id.clone(), e.clone()).is_some() {
                        bail!("snapshot lists endpoint id {:?} twice", e.id);
                    }
                }
                self.set = set;
                self.not_found = s.not_found;
                self.version = Some(m.version);
            }
            Kind::Delta(d) => {
                let held = self.version.expect("checked above");
                if m.version != held + 1 {
                    bail!(
                        "delta version {} after version {held}: a delta must be exactly one more",
                        m.version
                    );
                }
                for id in &d.removals {
                    if d.upserts.iter().any(|e| &e.id == id) {
                        bail!("id {id:?} is both upserted and removed");
                    }
                    self.set.remove(id);
                }
                for e in &d.upserts {
                    self.set.insert(e.id.clone(), e.clone());
                }
                self.version = Some(m.version);
            }
            Kind::Status(s) => self.statuses.push(s.clone()),
        }
        Ok(())
    }
}

/// The gRPC code and message of a refused watch, if `err` is one.
pub fn refusal(err: &anyhow::Error) -> Option<(Code, String)> {
    err.chain()
        .find_map(|e| e.downcast_ref::<tonic::Status>())
        .map(|s| (s.code(), s.message().to_string()))
}

/// A one-line description of a message, for failure messages.
pub fn describe(m: &pb::EndpointUpdate) -> String {
    match &m.kind {
        Some(Kind::Snapshot(s)) => format!(
            "snapshot v{} ({} endpoints{})",
            m.version,
            s.endpoints.len(),
            if s.not_found { ", not found" } else { "" }
        ),
        Some(Kind::Delta(d)) => format!(
            "delta v{} (upserts {:?}, removals {:?})",
            m.version,
            d.upserts.iter().map(|e| &e.id).collect::<Vec<_>>(),
            d.removals
        ),
        Some(Kind::Status(s)) => format!(
            "status v{} ({:?}: {:?})",
            m.version,
            pb::SyncState::try_from(s.state).unwrap_or(pb::SyncState::Unspecified),
            s.message
        ),
        None => format!("v{} without a kind", m.version),
    }
}
