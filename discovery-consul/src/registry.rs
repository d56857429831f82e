//! Consul as a [`Registry`]: one blocking query loop on
//! `/v1/health/service/<name>` per watched target, and `ListServices` from
//! `/v1/catalog/services`.
//!
//! Consul answers `[]` for a service it does not know, and also for a known
//! service whose instances the watch's filters leave out. An empty answer is
//! therefore checked against the catalog's service list: a service missing
//! there is "not found".

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use discovery_core::{Answer, Backoff, InvalidTarget, ListError, Registry, RegistryError, Target};
use futures_util::{StreamExt, stream::BoxStream};
use tokio::time::Instant;

use crate::{
    args::{Consistency, WatchArgs, parse_list_args},
    blocking::{BlockingIndex, Step, jittered},
    client::{ClientConfig, ConfigError, ConsulClient},
    health::{Mapping, parse},
    metrics::ConsulMetrics,
};

/// How every watch of the adapter behaves; the flags fill it in.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The longest a blocking query waits for a change (Consul's `wait`);
    /// up to a sixteenth more is added at random.
    pub wait: Duration,
    /// The least time between two queries of one watch when the first
    /// answered without a new index (a rate limit against a misbehaving
    /// server).
    pub min_interval: Duration,
    /// The consistency mode of watches that name none.
    pub consistency: Consistency,
    /// The node meta key that holds the zone, for watches that name none;
    /// without one the zone is the datacenter.
    pub zone_key: Option<String>,
    /// The longest pause between retries after a failed query.
    pub retry_max: Duration,
}

/// The Consul registry.
#[derive(Debug)]
pub struct ConsulRegistry {
    client: Arc<ConsulClient>,
    opts: Arc<WatchOptions>,
}

/// The state of one watch's query loop.
struct Watch {
    client: Arc<ConsulClient>,
    opts: Arc<WatchOptions>,
    service: String,
    args: WatchArgs,
    mapping: Mapping,
    index: BlockingIndex,
    backoff: Backoff,
    /// The last query failed: pause before the next.
    failed: bool,
    /// The next query may not start before this (the rate limit).
    not_before: Option<Instant>,
}

// === impl ConsulRegistry ===

impl ConsulRegistry {
    /// A registry reading Consul as `client` says, watching as `opts` says.
    pub fn new(client: &ClientConfig, opts: WatchOptions) -> Result<Self, ConfigError> {
        Ok(Self {
            client: Arc::new(ConsulClient::new(client)?),
            opts: Arc::new(opts),
        })
    }

    /// The metrics of this registry's Consul calls, to register with the
    /// adapter's.
    pub fn metrics(&self) -> &ConsulMetrics {
        self.client.metrics()
    }
}

impl Registry for ConsulRegistry {
    fn validate(&self, target: &Target) -> Result<(), InvalidTarget> {
        WatchArgs::parse(&target.args).map(drop)
    }

    fn watch(&self, target: &Target) -> BoxStream<'static, Result<Answer, RegistryError>> {
        // `validate` ran before the watch opened; a target that still fails
        // here yields its error as a stale status.
        let args = match WatchArgs::parse(&target.args) {
            Ok(a) => a,
            Err(e) => {
                let e = RegistryError::new(e.to_string());
                return futures_util::stream::once(async move { Err(e) })
                    .chain(futures_util::stream::pending())
                    .boxed();
            }
        };
        let mapping = Mapping {
            warning: args.warning,
            address: args.address,
            zone_key: args.zone_key.clone().or_else(|| self.opts.zone_key.clone()),
        };
        let watch = Watch {
            client: self.client.clone(),
            opts: self.opts.clone(),
            service: target.service.clone(),
            args,
            mapping,
            index: BlockingIndex::default(),
            backoff: Backoff::new(Duration::from_millis(200), self.opts.retry_max),
            failed: false,
            not_before: None,
        };
        futures_util::stream::unfold(watch, |mut w| async move {
            let item = w.next().await;
            Some((item, w))
        })
        .boxed()
    }

    async fn list_services(
        &self,
        args: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, ListError> {
        let args = parse_list_args(args)?;
        let services = catalog_services(&self.client, &args, self.opts.consistency).await?;
        Ok(services.into_keys().collect())
    }
}

// === impl Watch ===

impl Watch {
    /// The next answer that differs from the last, or the next error.
    async fn next(&mut self) -> Result<Answer, RegistryError> {
        if self.failed {
            tokio::time::sleep(self.backoff.next_delay()).await;
        }
        loop {
            if let Some(t) = self.not_before.take() {
                tokio::time::sleep_until(t).await;
            }
            let started = Instant::now();
            let result = self.poll().await;
            if let Ok((step, _)) = &result
                && step.rate_limited()
            {
                // No new index: a server answering at once is not hammered.
                self.not_before = Some(started + self.opts.min_interval);
            }
            match result {
                Ok((_, Some(answer))) => {
                    self.failed = false;
                    self.backoff.reset();
                    return Ok(answer);
                }
                Ok((_, None)) => {}
                Err(e) => {
                    // Read afresh afterwards: a server that came back may
                    // have a new index, and its first answer must be seen.
                    self.failed = true;
                    self.index.reset();
                    return Err(e);
                }
            }
        }
    }

    /// One query: what its index meant, and the answer unless it is not to
    /// be emitted.
    async fn poll(&mut self) -> Result<(Step, Option<Answer>), RegistryError> {
        let blocking = self
            .index
            .query_index()
            .map(|i| (i, jittered(self.opts.wait)));
        let query = self.args.health_query(self.opts.consistency);
        let reply = self
            .client
            .get(&["health", "service", &self.service], &query, blocking)
            .await
            .map_err(|e| RegistryError::new(e.to_string()))?;
        let call = &reply.call;
        let index = reply.index.ok_or_else(|| {
            RegistryError::new(format!("{call}: the answer has no X-Consul-Index header"))
        })?;
        let entries = parse(&reply.body)
            .map_err(|e| RegistryError::new(format!("{call}: malformed JSON answer: {e}")))?;
        let step = self.index.observe(index);
        if matches!(step, Step::Backwards | Step::Zero) {
            tracing::info!(service = %self.service, index, "X-Consul-Index went back or is 0; reading afresh");
            self.client.metrics().index_reset();
        }
        tracing::debug!(service = %self.service, index, ?step, entries = entries.len(), "consul answer");
        if !step.emits() {
            return Ok((step, None));
        }
        if entries.is_empty() {
            let services = catalog_services(&self.client, &self.args, self.opts.consistency)
                .await
                .map_err(|e| match e {
                    ListError::Registry(e) => e,
                    other => RegistryError::new(other.to_string()),
                })?;
            if !services.contains_key(&self.service) {
                return Ok((step, Some(Answer::NotFound)));
            }
        }
        let endpoints = entries.iter().map(|e| self.mapping.endpoint(e)).collect();
        Ok((step, Some(Answer::Found(endpoints))))
    }
}

/// `/v1/catalog/services` in the scope (datacenter, namespace, partition) of
/// `args`: service names and their tags.
async fn catalog_services(
    client: &ConsulClient,
    args: &WatchArgs,
    consistency: Consistency,
) -> Result<BTreeMap<String, serde_json::Value>, ListError> {
    let reply = client
        .get(
            &["catalog", "services"],
            &args.scope_query(consistency),
            None,
        )
        .await
        .map_err(|e| RegistryError::new(e.to_string()))?;
    serde_json::from_slice(&reply.body).map_err(|e| {
        RegistryError::new(format!("{}: malformed JSON answer: {e}", reply.call)).into()
    })
}
