//! One resolution loop per distinct name and lookup, shared by every watch
//! of it: watches that differ only in `port` or `weight` (two ports of one
//! headless service) read the same loop, which stops when the last of them
//! is dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use discovery_core::{Answer, RegistryError};
use futures_util::{StreamExt, future::ready, stream::BoxStream};
use tokio::{sync::watch, task::AbortHandle};
use tokio_stream::wrappers::WatchStream;

use crate::{
    args::{Lookup, Query},
    metrics::DnsMetrics,
    resolve::Resolver,
    select::address_endpoints,
    watch::{Outcome, Refresh, Resolved, run},
};

/// The open loops, by name and lookup.
pub(crate) struct Loops {
    resolver: Arc<Resolver>,
    metrics: DnsMetrics,
    refresh: Refresh,
    open: Mutex<HashMap<(String, Lookup), Weak<Shared>>>,
}

/// One running loop; it stops when the last watch holding it is dropped.
struct Shared {
    rx: watch::Receiver<Option<Outcome>>,
    task: AbortHandle,
    metrics: DnsMetrics,
}

// === impl Loops ===

impl Loops {
    pub(crate) fn new(resolver: Arc<Resolver>, metrics: DnsMetrics, refresh: Refresh) -> Self {
        Self {
            resolver,
            metrics,
            refresh,
            open: Mutex::default(),
        }
    }

    /// The answers of one watch, read from the loop of its name.
    pub(crate) fn watch(
        &self,
        service: &str,
        query: Query,
    ) -> BoxStream<'static, Result<Answer, RegistryError>> {
        let shared = self.join(service, query.lookup());
        WatchStream::new(shared.rx.clone())
            .filter_map(move |outcome| {
                // The stream holds the loop for as long as it lives.
                let _hold = &shared;
                ready(outcome.map(|o| answer(query, o)))
            })
            .boxed()
    }

    fn join(&self, service: &str, lookup: Lookup) -> Arc<Shared> {
        let key = (service.to_string(), lookup);
        let mut open = self.open.lock().expect("loop map lock poisoned");
        if let Some(shared) = open.get(&key).and_then(Weak::upgrade) {
            return shared;
        }
        open.retain(|_, w| w.strong_count() > 0);
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(run(
            self.resolver.clone(),
            self.metrics.clone(),
            self.refresh,
            service.to_string(),
            lookup,
            tx,
        ))
        .abort_handle();
        self.metrics.loop_opened();
        let shared = Arc::new(Shared {
            rx,
            task,
            metrics: self.metrics.clone(),
        });
        open.insert(key, Arc::downgrade(&shared));
        shared
    }

    /// How many loops run.
    #[cfg(test)]
    fn running(&self) -> usize {
        let open = self.open.lock().expect("loop map lock poisoned");
        open.values().filter(|w| w.strong_count() > 0).count()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.task.abort();
        self.metrics.loop_closed();
    }
}

/// A loop's outcome as one watch sees it: address records get the watch's
/// port and weight.
fn answer(query: Query, outcome: Outcome) -> Result<Answer, RegistryError> {
    match (outcome, query) {
        (Err(m), _) => Err(RegistryError::new(m)),
        (Ok(Resolved::NotFound), _) => Ok(Answer::NotFound),
        (Ok(Resolved::Srv(endpoints)), _) => Ok(Answer::Found(endpoints)),
        (Ok(Resolved::Addresses(ips)), Query::Addresses { port, weight, .. }) => {
            Ok(Answer::Found(address_endpoints(&ips, port, weight)))
        }
        (Ok(Resolved::Addresses(_)), Query::Srv { .. }) => Err(RegistryError::new(
            "internal error: an SRV watch got address records",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{args::Families, resolve::ResolverSettings};

    fn loops() -> Loops {
        let settings = ResolverSettings {
            // Nothing answers there: the loops fail, which is enough here.
            nameservers: vec!["127.0.0.1:9".parse().unwrap()],
            search: vec![],
            ndots: None,
            timeout: Duration::from_millis(100),
            attempts: 0,
        };
        let refresh = Refresh {
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(1),
        };
        Loops::new(
            Arc::new(Resolver::new(&settings).unwrap()),
            DnsMetrics::default(),
            refresh,
        )
    }

    fn addresses(port: u16) -> Query {
        Query::Addresses {
            families: Families::BOTH,
            port,
            weight: None,
        }
    }

    #[tokio::test]
    async fn watches_of_one_name_share_a_loop_until_the_last_leaves() {
        let loops = loops();
        let http = loops.watch("web.example.", addresses(80));
        let grpc = loops.watch("web.example.", addresses(9090));
        assert_eq!(loops.running(), 1, "two ports of one name: one loop");
        let srv = loops.watch(
            "web.example.",
            Query::Srv {
                targets: Families::BOTH,
            },
        );
        let other = loops.watch("api.example.", addresses(80));
        assert_eq!(loops.running(), 3);
        drop(http);
        assert_eq!(loops.running(), 3, "a watch of web.example. is left");
        drop((grpc, srv, other));
        assert_eq!(loops.running(), 0);
    }

    #[test]
    fn address_outcomes_take_each_watch_port_and_weight() {
        let ips = vec!["10.0.0.1".parse().unwrap()];
        let q = Query::Addresses {
            families: Families::BOTH,
            port: 8080,
            weight: Some(4),
        };
        let Ok(Answer::Found(eps)) = answer(q, Ok(Resolved::Addresses(ips))) else {
            panic!("expected endpoints");
        };
        assert_eq!(eps[0].effective_id(), "10.0.0.1:8080");
        assert_eq!(eps[0].weight, Some(4));
        assert_eq!(answer(q, Ok(Resolved::NotFound)).unwrap(), Answer::NotFound);
        let err = answer(q, Err("x.: SERVFAIL".into())).unwrap_err();
        assert_eq!(err.to_string(), "x.: SERVFAIL");
    }
}
