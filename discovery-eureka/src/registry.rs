//! Eureka as a [`Registry`]: one fetch loop keeps the registry, and every
//! watch maps each new registry to its application's (or VIP address's)
//! endpoints.

use std::{collections::BTreeMap, sync::Arc};

use discovery_core::{Answer, InvalidTarget, ListError, Registry, RegistryError, Target};
use futures_util::{
    StreamExt,
    stream::{self, BoxStream},
};
use tokio::sync::watch;

use crate::{
    client::Client,
    config::{ConfigError, EurekaConfig, Mapping},
    endpoints::{By, WatchSpec, answer},
    fetcher::{self, State},
    metrics::EurekaMetrics,
};

/// The Eureka registry of one cluster.
pub struct EurekaRegistry {
    rx: watch::Receiver<Arc<State>>,
    mapping: Arc<Mapping>,
    metrics: EurekaMetrics,
}

// === impl EurekaRegistry ===

impl EurekaRegistry {
    /// Checks `config` and starts fetching the registry. Needs a Tokio
    /// runtime.
    pub fn start(config: EurekaConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let servers = config.servers()?;
        let client = Client::new(servers, config.request_timeout, config.max_body_bytes)
            .map_err(|e| ConfigError(format!("cannot build the HTTP client: {e}")))?;
        let metrics = EurekaMetrics::default();
        let rx = fetcher::spawn(client, config.fetch_interval, metrics.clone());
        Ok(Self {
            rx,
            mapping: Arc::new(config.mapping),
            metrics,
        })
    }

    /// The registry's fetch metrics, to register with the adapter's.
    pub fn metrics(&self) -> EurekaMetrics {
        self.metrics.clone()
    }
}

impl Registry for EurekaRegistry {
    fn validate(&self, target: &Target) -> Result<(), InvalidTarget> {
        WatchSpec::parse(&target.args).map(drop)
    }

    fn watch(&self, target: &Target) -> BoxStream<'static, Result<Answer, RegistryError>> {
        let spec = match WatchSpec::parse(&target.args) {
            Ok(s) => s,
            Err(e) => return stream::once(async move { Err(RegistryError::new(e.0)) }).boxed(),
        };
        let name = target.service.clone();
        let mapping = self.mapping.clone();
        let map = move |apps: &crate::apps::Apps| answer(apps, &name, &spec, &mapping);
        // The first item of a stream opened during an outage is the last
        // registry, then the error: the watch starts with the last set,
        // stale. Later failures yield the error alone; the runtime keeps the
        // set.
        stream::unfold((self.rx.clone(), true), move |(mut rx, first)| {
            let map = map.clone();
            async move {
                loop {
                    if !first || matches!(**rx.borrow(), State::Pending) {
                        rx.changed().await.ok()?;
                    }
                    let state = rx.borrow_and_update().clone();
                    let items = match &*state {
                        State::Pending => continue,
                        State::Ready(apps) => vec![Ok(map(apps))],
                        State::Failed { last, error } => {
                            let err = Err(RegistryError::new(error.clone()));
                            match last {
                                Some(apps) if first => vec![Ok(map(apps)), err],
                                _ => vec![err],
                            }
                        }
                    };
                    return Some((stream::iter(items), (rx, false)));
                }
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_services(
        &self,
        args: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, ListError> {
        let spec = WatchSpec::parse(args)?;
        let state = self.rx.borrow().clone();
        let apps = match &*state {
            State::Ready(apps) => apps.clone(),
            State::Failed { error, .. } => return Err(RegistryError::new(error.clone()).into()),
            State::Pending => {
                return Err(RegistryError::new("the registry has not been fetched yet").into());
            }
        };
        let mut names: Vec<String> = match spec.by {
            By::App => apps.names().map(str::to_string).collect(),
            By::Vip | By::SecureVip => apps
                .instances()
                .flat_map(|i| {
                    let list = if spec.by == By::Vip {
                        &i.vip_address
                    } else {
                        &i.secure_vip_address
                    };
                    list.split(',')
                        .map(|v| v.trim().to_string())
                        .filter(|v| !v.is_empty())
                        .collect::<Vec<_>>()
                })
                .collect(),
        };
        names.sort();
        names.dedup();
        Ok(names)
    }
}
