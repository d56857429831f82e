//! The checks of the conformance suite, one function each.

use std::{collections::BTreeSet, net::SocketAddr};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures_util::future::join_all;
use tributary_proto::v1 as pb;

use super::{Outcome, RegistryControl, SuiteOptions, TestEndpoint};
use crate::{
    metrics::{Metrics, scrape, wait_for_metrics},
    subscriber::{EndpointSet, Subscriber, describe},
};

const WATCHES: &str = "discovery_watches";
const SUBSCRIBERS: &str = "discovery_subscribers";

/// One check of the suite.
#[derive(Clone, Copy, Debug)]
pub(super) enum Check {
    FirstSnapshot,
    Deltas,
    NotFound,
    Sharing,
    Reconnect,
    Closes,
}

/// Every check, in the order they run.
pub(super) const ALL: [Check; 6] = [
    Check::FirstSnapshot,
    Check::Deltas,
    Check::NotFound,
    Check::Sharing,
    Check::Reconnect,
    Check::Closes,
];

/// The suite's state while it runs.
pub(super) struct Suite<'a, C> {
    adapter: SocketAddr,
    control: &'a C,
    opts: &'a SuiteOptions,
    /// `discovery_watches` before the suite opened any watch.
    base_watches: Option<f64>,
}

// === impl Check ===

impl Check {
    pub(super) fn name(self, opts: &SuiteOptions) -> String {
        match self {
            Check::FirstSnapshot => "the first message is a snapshot".into(),
            Check::Deltas => "add, change and remove arrive as deltas, one version apart".into(),
            Check::NotFound => "a missing service gets an empty snapshot flagged not_found".into(),
            Check::Sharing if opts.metrics.is_some() => format!(
                "{} subscribers see the same versions over one registry watch",
                opts.subscribers
            ),
            Check::Sharing => format!("{} subscribers see the same versions", opts.subscribers),
            Check::Reconnect => {
                "a reconnecting subscriber gets a snapshot of the current set".into()
            }
            Check::Closes => "the registry watch closes when the last subscriber leaves".into(),
        }
    }

    /// The endpoint this check registers, if any; ports are data, not sockets.
    fn endpoint(self) -> Option<TestEndpoint> {
        let port = match self {
            Check::Deltas => 47_001,
            Check::Sharing => 47_002,
            Check::Reconnect => 47_003,
            Check::FirstSnapshot | Check::NotFound | Check::Closes => return None,
        };
        Some(TestEndpoint::new(port, 1))
    }
}

// === impl Suite ===

impl<'a, C: RegistryControl> Suite<'a, C> {
    pub(super) async fn new(
        adapter: SocketAddr,
        control: &'a C,
        opts: &'a SuiteOptions,
    ) -> Result<Self> {
        let base_watches = match opts.metrics {
            Some(addr) => Some(watches(&scrape(addr).await?)?),
            None => None,
        };
        Ok(Self {
            adapter,
            control,
            opts,
            base_watches,
        })
    }

    /// Runs one check within a bounded time; a check that failed gets its
    /// endpoint removed, so that the next check starts from the same set.
    pub(super) async fn run(&self, check: Check) -> Outcome {
        if matches!(check, Check::Closes) && self.opts.metrics.is_none() {
            return Outcome::Skipped("needs the adapter's metrics address".into());
        }
        let limit = self.opts.deadline * 6;
        let result = match tokio::time::timeout(limit, self.dispatch(check)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("did not finish within {limit:?}")),
        };
        match result {
            Ok(()) => Outcome::Passed,
            Err(e) => {
                if let Some(ep) = check.endpoint() {
                    // Best effort: it may never have been added.
                    let _ = self.control.remove(&ep.id).await;
                }
                Outcome::Failed(format!("{e:#}"))
            }
        }
    }

    async fn dispatch(&self, check: Check) -> Result<()> {
        match check {
            Check::FirstSnapshot => self.first_snapshot().await,
            Check::Deltas => self.deltas(check.endpoint().expect("has one")).await,
            Check::NotFound => self.not_found().await,
            Check::Sharing => self.sharing(check.endpoint().expect("has one")).await,
            Check::Reconnect => self.reconnect(check.endpoint().expect("has one")).await,
            Check::Closes => self.closes().await,
        }
    }

    /// (a) Every stream starts with a snapshot; the test service exists.
    async fn first_snapshot(&self) -> Result<()> {
        let s = self.subscribe().await?;
        ensure!(
            !s.not_found(),
            "service {:?} is reported as not found; the suite needs it to exist (it may be empty)",
            self.control.service()
        );
        Ok(())
    }

    /// (b) Add, change and remove come as deltas with the right contents.
    async fn deltas(&self, ep: TestEndpoint) -> Result<()> {
        let seen = self.seen(&ep);
        let mut s = self.subscribe().await?;
        let baseline = s.set().clone();
        ensure!(
            !baseline.contains_key(&seen.id),
            "endpoint {:?} is already registered (left over from an earlier run?); remove it first",
            seen.id
        );
        let d = self.opts.deadline;

        self.control.add(&ep).await.context("add")?;
        s.wait_for(d, true, "the added endpoint", |set| has(set, &seen))
            .await?;
        expect_set(s.set(), &baseline, Some(&seen))?;

        let changed = ep.with_weight(5);
        let seen_changed = seen.with_weight(5);
        self.control.change(&changed).await.context("change")?;
        s.wait_for(d, true, "the weight change", |set| has(set, &seen_changed))
            .await?;
        expect_set(s.set(), &baseline, Some(&seen_changed))?;

        self.control.remove(&ep.id).await.context("remove")?;
        s.wait_for(d, true, "the removal", |set| !set.contains_key(&seen.id))
            .await?;
        expect_set(s.set(), &baseline, None)
    }

    /// (c) A service the registry does not know: empty, flagged not_found.
    async fn not_found(&self) -> Result<()> {
        let missing = self.control.missing_service();
        let mut s = Subscriber::watch(self.adapter, missing).await?;
        let m = s.recv(self.opts.deadline).await?;
        ensure!(
            s.not_found() && s.set().is_empty(),
            "the first message for {missing:?} is a {}; expected an empty snapshot with not_found set",
            describe(&m)
        );
        Ok(())
    }

    /// (d) Many subscribers of one service: same versions, one registry watch.
    async fn sharing(&self, ep: TestEndpoint) -> Result<()> {
        let n = self.opts.subscribers;
        let seen = self.seen(&ep);
        let mut subs = join_all((0..n).map(|_| self.subscribe()))
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        same_versions(&subs, "first snapshot")?;
        if let (Some(addr), Some(base)) = (self.opts.metrics, self.base_watches) {
            let service = self.control.service();
            wait_for_metrics(
                addr,
                self.opts.deadline,
                &format!("one registry watch for {n} subscribers of {service:?}"),
                WATCHES,
                |m| {
                    m.get(WATCHES, &[]) == Some(base + 1.0)
                        && m.get(SUBSCRIBERS, &[("service", service)])
                            .is_none_or(|v| v == n as f64)
                },
            )
            .await?;
        }
        let d = self.opts.deadline;
        self.control.add(&ep).await.context("add")?;
        join_all(
            subs.iter_mut()
                .map(|s| s.wait_for(d, false, "the added endpoint", |set| has(set, &seen))),
        )
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
        same_versions(&subs, "delta after the add")?;
        self.control.remove(&ep.id).await.context("remove")?;
        join_all(
            subs.iter_mut()
                .map(|s| s.wait_for(d, false, "the removal", |set| !set.contains_key(&seen.id))),
        )
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
        same_versions(&subs, "delta after the removal")
    }

    /// (e) A subscriber that comes back gets a snapshot of the current set.
    async fn reconnect(&self, ep: TestEndpoint) -> Result<()> {
        let mut observer = self.subscribe().await?;
        let gone = self.subscribe().await?;
        let seen = self.seen(&ep);
        drop(gone);
        self.control.add(&ep).await.context("add")?;
        observer
            .wait_for(self.opts.deadline, false, "the added endpoint", |set| {
                has(set, &seen)
            })
            .await?;
        let back = self.subscribe().await?;
        ensure!(
            back.set() == observer.set() && back.version() == observer.version(),
            "the snapshot after reconnecting (version {:?}, ids {:?}) differs from the current \
             set (version {:?}, ids {:?})",
            back.version(),
            back.set().keys().collect::<Vec<_>>(),
            observer.version(),
            observer.set().keys().collect::<Vec<_>>()
        );
        drop(back);
        self.control.remove(&ep.id).await.context("remove")?;
        observer
            .wait_for(self.opts.deadline, false, "the removal", |set| {
                !set.contains_key(&seen.id)
            })
            .await
    }

    /// (f) The registry watch closes when its last subscriber leaves.
    async fn closes(&self) -> Result<()> {
        let (Some(addr), Some(base)) = (self.opts.metrics, self.base_watches) else {
            bail!("needs the adapter's metrics address");
        };
        let service = self.control.service();
        let s = self.subscribe().await?;
        wait_for_metrics(
            addr,
            self.opts.deadline,
            &format!("a registry watch for {service:?}"),
            WATCHES,
            |m| m.get(WATCHES, &[]) == Some(base + 1.0),
        )
        .await?;
        drop(s);
        wait_for_metrics(
            addr,
            self.opts.deadline,
            &format!("the registry watch of {service:?} closed after its last subscriber left"),
            WATCHES,
            |m| {
                m.get(WATCHES, &[]) == Some(base)
                    && m.get(SUBSCRIBERS, &[("service", service)])
                        .is_none_or(|v| v == 0.0)
            },
        )
        .await?;
        Ok(())
    }

    /// `ep` as the adapter's stream shows it: with the id the control says.
    fn seen(&self, ep: &TestEndpoint) -> TestEndpoint {
        TestEndpoint {
            id: self.control.endpoint_id(ep),
            ..ep.clone()
        }
    }

    /// A watch of the test service, after its first snapshot.
    async fn subscribe(&self) -> Result<Subscriber> {
        let mut s = Subscriber::watch(self.adapter, self.control.service()).await?;
        s.recv(self.opts.deadline).await?;
        Ok(s)
    }
}

fn watches(m: &Metrics) -> Result<f64> {
    m.get(WATCHES, &[])
        .ok_or_else(|| anyhow!("the adapter's metrics have no {WATCHES} gauge"))
}

/// Whether the set holds `ep` as registered.
fn has(set: &EndpointSet, ep: &TestEndpoint) -> bool {
    set.get(&ep.id).is_some_and(|e| {
        e.address == ep.address
            && e.port == u32::from(ep.port)
            && e.weight.unwrap_or(1) == ep.weight
    })
}

/// The set must be `baseline` plus `ep`, every other endpoint unchanged.
fn expect_set(set: &EndpointSet, baseline: &EndpointSet, ep: Option<&TestEndpoint>) -> Result<()> {
    let mut rest = set.clone();
    if let Some(ep) = ep {
        let got = rest.remove(&ep.id);
        ensure!(
            got.as_ref().is_some_and(|_| has(set, ep)),
            "endpoint {:?}: expected {ep:?}, got {got:?}",
            ep.id
        );
    }
    if &rest != baseline {
        bail!(
            "other endpoints changed: before {}, now {}",
            show(baseline),
            show(&rest)
        );
    }
    Ok(())
}

fn same_versions(subs: &[Subscriber], what: &str) -> Result<()> {
    let versions: BTreeSet<Option<u64>> = subs.iter().map(Subscriber::version).collect();
    ensure!(
        versions.len() <= 1,
        "subscribers of one service must see the same versions; {what}: {versions:?}"
    );
    Ok(())
}

fn show(set: &EndpointSet) -> String {
    let items: Vec<String> = set.values().map(show_endpoint).collect();
    format!("[{}]", items.join(", "))
}

fn show_endpoint(e: &pb::Endpoint) -> String {
    format!(
        "{} {}:{} w={:?} health={}",
        e.id, e.address, e.port, e.weight, e.health
    )
}
