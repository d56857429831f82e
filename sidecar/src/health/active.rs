//! Active checks: one task per endpoint probes it on a timer and feeds the
//! results through the hysteresis counters into its active verdict.
//!
//! A probe task starts at a random point of its first interval, so that the
//! endpoints of a set (or of a whole config) are not probed all at once,
//! then keeps its phase: the next probe is one interval after the last one
//! was due. The interval is `healthy.interval` while the endpoint is healthy
//! to the checks and `unhealthy.interval` while it is not. At most
//! `concurrency` probes of an upstream are in flight at once. A probe task
//! lives as long as its endpoint is in the set: the checker aborts it when
//! the endpoint goes.
//!
//! Probe times fall on slots of one process-wide clock, a twentieth of the
//! interval and at most 50 ms, so that the thread wakes once for the probes
//! of a slot rather than once for each: with 1,000 endpoints at 1 s, some 50
//! probes every 50 ms rather than a wake-up every millisecond. That cuts
//! the cost of probing by about a third, and a slot still holds only a
//! twentieth of the endpoints.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use rand::Rng;
use tokio::{sync::Semaphore, time::Instant};

use super::{
    hysteresis::{Flip, Thresholds},
    log_change,
    probe::{ProbeSpec, Probed, Prober},
};
use crate::{config::ActiveCheck, upstream::Endpoint};

/// An upstream's active checks, built once from its config.
#[derive(Debug)]
pub(crate) struct ActivePlan {
    pub(crate) thresholds: Thresholds,
    healthy_interval: Duration,
    unhealthy_interval: Duration,
    timeout: Duration,
    port: Option<u16>,
    /// Probes start on boundaries of slots this long.
    slot: Duration,
    spec: ProbeSpec,
    /// Probes in flight, at most `concurrency`.
    limit: Semaphore,
}

/// The longest slot probes are gathered in.
const MAX_SLOT: Duration = Duration::from_millis(50);

/// Called after any verdict change, so the upstream can see whether it
/// entered or left panic mode.
pub(crate) type OnChange = Arc<dyn Fn() + Send + Sync>;

// === impl ActivePlan ===

impl ActivePlan {
    pub(crate) fn new(c: &ActiveCheck) -> Result<Self, String> {
        Ok(ActivePlan {
            thresholds: Thresholds::active(c),
            healthy_interval: c.healthy.interval,
            unhealthy_interval: c.unhealthy.interval,
            timeout: c.timeout,
            port: c.port,
            slot: (c.healthy.interval.min(c.unhealthy.interval) / 20)
                .clamp(Duration::from_millis(1), MAX_SLOT),
            spec: ProbeSpec::new(c)?,
            limit: Semaphore::new(c.concurrency.min(Semaphore::MAX_PERMITS as u32) as usize),
        })
    }

    /// The address probes go to: the endpoint's, or its IP with `port`.
    pub(crate) fn target(&self, addr: SocketAddr) -> SocketAddr {
        SocketAddr::new(addr.ip(), self.port.unwrap_or(addr.port()))
    }

    /// A prober for the endpoint at `addr`.
    pub(crate) fn prober(&self, addr: SocketAddr) -> Result<Prober, String> {
        Prober::new(&self.spec, self.target(addr), self.timeout)
    }

    fn interval(&self, endpoint: &Endpoint) -> Duration {
        let cell = endpoint.state.verdicts();
        if cell.active_down() || cell.passive() == super::cell::Passive::Ejected {
            self.unhealthy_interval
        } else {
            self.healthy_interval
        }
    }
}

/// Probes `endpoint` until aborted.
pub(crate) async fn run(
    upstream: Arc<str>,
    plan: Arc<ActivePlan>,
    endpoint: Arc<Endpoint>,
    mut prober: Prober,
    on_change: OnChange,
) {
    let target = plan.target(endpoint.addr);
    let first = plan.interval(&endpoint);
    // Aligning rounds up by less than a slot: stay within the interval.
    let spread = first
        .saturating_sub(plan.slot)
        .max(Duration::from_millis(1));
    let offset = rand::rng().random_range(Duration::ZERO..spread);
    let mut next = align(Instant::now() + offset, plan.slot);
    loop {
        tokio::time::sleep_until(next).await;
        let probed = {
            let Ok(_permit) = plan.limit.acquire().await else {
                return;
            };
            prober.probe(&plan.spec, target, plan.timeout).await
        };
        if apply(&upstream, &plan, &endpoint, &probed) {
            on_change();
        }
        // A probe that took longer than the interval delays the next one
        // rather than starting a burst to catch up.
        next = align(
            (next + plan.interval(&endpoint)).max(Instant::now()),
            plan.slot,
        );
    }
}

/// The first boundary of a `slot`-long slot at or after `t`.
fn align(t: Instant, slot: Duration) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let slot = slot.as_nanos().max(1);
    let slots = t.saturating_duration_since(epoch).as_nanos().div_ceil(slot);
    epoch + Duration::from_nanos((slots * slot).min(u64::MAX as u128) as u64)
}

/// Counts one probe result; logs and returns whether a verdict changed.
fn apply(upstream: &str, plan: &ActivePlan, endpoint: &Endpoint, probed: &Probed) -> bool {
    let Some(outcome) = probed.outcome else {
        tracing::debug!(upstream, endpoint = %endpoint.addr, detail = %probed.detail, "probe result counts neither way");
        return false;
    };
    let cell = endpoint.state.verdicts();
    let t = &plan.thresholds;
    let mut changed = false;
    match cell.observe_active(outcome, t) {
        Some(Flip::Down(by)) => {
            let reason = format!(
                "{} consecutive {}: {}",
                t.get(by),
                by.counter_name(),
                probed.detail
            );
            let health = endpoint.state.health();
            log_change(
                upstream,
                endpoint,
                "active",
                "healthy",
                "unhealthy",
                &reason,
                health,
            );
            changed = true;
        }
        Some(Flip::Up) => {
            let reason = format!("{} consecutive successes: {}", t.successes, probed.detail);
            let health = endpoint.state.health();
            log_change(
                upstream,
                endpoint,
                "active",
                "unhealthy",
                "healthy",
                &reason,
                health,
            );
            changed = true;
        }
        None => {}
    }
    if cell.restore_passive_by_active(t.successes) {
        let reason = format!(
            "{} consecutive active probes passed since the ejection",
            t.successes
        );
        let health = endpoint.state.health();
        log_change(
            upstream, endpoint, "passive", "ejected", "healthy", &reason, health,
        );
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::{
        config::ActiveCheck,
        health::{
            hysteresis::Outcome::{self, *},
            test_support::{Script, endpoint},
        },
        upstream::Health,
    };

    fn plan() -> Arc<ActivePlan> {
        let mut c = ActiveCheck::default();
        c.healthy.interval = Duration::from_secs(5);
        c.unhealthy.interval = Duration::from_secs(1);
        c.healthy.successes = 2;
        c.unhealthy.tcp_failures = 2;
        Arc::new(ActivePlan::new(&c).expect("plan"))
    }

    /// Starts a probe loop fed by `outcomes`; returns the endpoint and a
    /// receiver of probe times.
    fn start(
        outcomes: &[Outcome],
    ) -> (
        Arc<Endpoint>,
        tokio::sync::mpsc::UnboundedReceiver<Instant>,
        tokio::task::JoinHandle<()>,
    ) {
        let e = endpoint(1);
        let (script, times) = Script::new(outcomes);
        let task = tokio::spawn(run(
            "web".into(),
            plan(),
            e.clone(),
            Prober::Script(script),
            Arc::new(|| {}),
        ));
        (e, times, task)
    }

    #[tokio::test(start_paused = true)]
    async fn turns_unhealthy_after_the_threshold_and_probes_faster_then() {
        let t0 = Instant::now();
        let (e, mut times, task) = start(&[TcpFailure, TcpFailure, Success, Success, Success]);
        // The first probe is at a random point of the first (healthy) interval.
        let first = times.recv().await.expect("probe");
        assert!(first - t0 < Duration::from_secs(5), "{:?}", first - t0);
        assert_eq!(e.state.health(), Health::Healthy);
        // One failure is not enough; the next probe is a healthy interval on.
        let second = times.recv().await.expect("probe");
        assert_eq!(second - first, Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert_eq!(e.state.health(), Health::Unhealthy);
        // Unhealthy: probed every second; two successes bring it back.
        let third = times.recv().await.expect("probe");
        assert_eq!(third - second, Duration::from_secs(1));
        assert_eq!(e.state.health(), Health::Unhealthy);
        let fourth = times.recv().await.expect("probe");
        assert_eq!(fourth - third, Duration::from_secs(1));
        tokio::task::yield_now().await;
        assert_eq!(e.state.health(), Health::Healthy);
        let fifth = times.recv().await.expect("probe");
        assert_eq!(fifth - fourth, Duration::from_secs(5));
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn first_probes_are_spread_over_the_interval() {
        let mut offsets = Vec::new();
        for _ in 0..20 {
            let t0 = Instant::now();
            let (_e, mut times, task) = start(&[Success]);
            offsets.push(times.recv().await.expect("probe") - t0);
            task.abort();
        }
        offsets.sort();
        offsets.dedup();
        assert!(offsets.len() > 10, "{offsets:?}");
        assert!(offsets.iter().all(|o| *o < Duration::from_secs(5)));
    }
}
