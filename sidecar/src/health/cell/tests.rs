//! The verdicts of one endpoint: how they combine, that none overrides
//! another, and passive counting under contention.

use super::*;

const T: Thresholds = Thresholds {
    successes: 1,
    http_failures: 1,
    tcp_failures: 1,
    timeouts: 1,
};

fn never(_: u8) -> Option<Duration> {
    None
}

#[test]
fn the_verdicts_combine_and_none_overrides_another() {
    let cell = HealthCell::default();
    assert_eq!(cell.health(), Health::Healthy);

    cell.observe_active(Outcome::TcpFailure, &T);
    assert_eq!(cell.health(), Health::Unhealthy);
    // The registry saying healthy does not undo a failed probe.
    cell.set_registry(Health::Healthy);
    assert_eq!(cell.health(), Health::Unhealthy);
    // A passing probe does not undo the registry's draining.
    cell.set_registry(Health::Draining);
    cell.observe_active(Outcome::Success, &T);
    assert_eq!(cell.health(), Health::Draining);
    // Draining wins over an ejection too.
    cell.observe_passive(Outcome::Timeout, &T, never);
    assert_eq!(cell.health(), Health::Draining);
    cell.set_registry(Health::Healthy);
    assert_eq!(cell.health(), Health::Unhealthy);
    assert!(cell.reset_passive());
    assert_eq!(cell.health(), Health::Healthy);
    cell.set_registry(Health::Unhealthy);
    assert_eq!(cell.health(), Health::Unhealthy);
    assert_eq!(cell.registry(), Health::Unhealthy);
}

#[test]
fn passive_counting_leaves_the_other_verdicts_alone() {
    let cell = HealthCell::default();
    cell.set_registry(Health::Unhealthy);
    cell.observe_active(Outcome::HttpFailure, &T);
    let t = Thresholds {
        tcp_failures: 3,
        ..T
    };
    cell.observe_passive(Outcome::TcpFailure, &t, never);
    cell.observe_passive(Outcome::TcpFailure, &t, never);
    assert_eq!(cell.passive_counters().tcp_failures, 2);
    assert_eq!(cell.registry(), Health::Unhealthy);
    assert!(cell.active_down());
    assert_eq!(cell.passive(), Passive::Healthy);
    assert!(cell.reset_active());
    assert!(!cell.active_down());
    assert_eq!(cell.active_counters(), Counters::default());
}

#[test]
fn a_success_on_a_healthy_endpoint_writes_nothing() {
    let cell = HealthCell::default();
    let t = Thresholds {
        http_failures: 3,
        ..T
    };
    let before = cell.word.load(Ordering::Relaxed);
    for _ in 0..10 {
        assert_eq!(cell.observe_passive(Outcome::Success, &t, never), None);
    }
    assert_eq!(cell.word.load(Ordering::Relaxed), before);
    // A failure is counted, and the next success clears it.
    cell.observe_passive(Outcome::HttpFailure, &t, never);
    assert_ne!(cell.word.load(Ordering::Relaxed), before);
    cell.observe_passive(Outcome::Success, &t, never);
    assert_eq!(cell.word.load(Ordering::Relaxed), before);
}

#[test]
fn concurrent_counting_ejects_exactly_once() {
    let cell = std::sync::Arc::new(HealthCell::default());
    let t = Thresholds {
        http_failures: 100,
        ..T
    };
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let cell = cell.clone();
            std::thread::spawn(move || {
                (0..50)
                    .filter(|_| {
                        cell.observe_passive(Outcome::HttpFailure, &t, never)
                            .is_some()
                    })
                    .count()
            })
        })
        .collect();
    let ejections: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(ejections, 1);
    assert_eq!(cell.passive(), Passive::Ejected);
    assert_eq!(cell.ejections(), 1);
    // The 100 failures after the ejection kept counting while ejected.
    assert_eq!(cell.passive_counters().http_failures, 100);
}
