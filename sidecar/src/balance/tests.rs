//! What every balancer shares: priority groups, panic mode, weight 0, the
//! handling of tried endpoints, and the type names.

use std::sync::Arc;

use super::{
    Balancer, BalancerType, Pick, PickCtx,
    rng::FastRng,
    test_support::{counts, endpoint, set_down, uniform, weighted},
};
use crate::upstream::{Endpoint, Health};

const KINDS: [BalancerType; 4] = [
    BalancerType::RoundRobin,
    BalancerType::Chash,
    BalancerType::Ewma,
    BalancerType::LeastConn,
];

fn pick(kind: BalancerType, eps: &[Arc<Endpoint>], hash: u64, tried: &[usize]) -> Option<Pick> {
    let b = Balancer::build_with(kind, eps, &mut FastRng::seeded(hash));
    b.pick_with(eps, &PickCtx { hash, tried }, &mut FastRng::seeded(!hash))
}

/// Endpoints 0–1 at priority 10, 2–3 at 0, 4 at -5.
fn prioritised() -> Vec<Arc<Endpoint>> {
    [10, 10, 0, 0, -5]
        .iter()
        .enumerate()
        .map(|(i, &p)| endpoint(i, 1, p))
        .collect()
}

#[test]
fn empty_and_all_zero_weight_sets_pick_nothing() {
    for kind in KINDS {
        assert_eq!(pick(kind, &[], 1, &[]), None, "{kind}");
        let eps = weighted(&[0, 0, 0]);
        assert_eq!(pick(kind, &eps, 1, &[]), None, "{kind}");
        // Not even in panic mode.
        eps.iter()
            .for_each(|e| _ = e.state.set_registry_health(Health::Unhealthy));
        assert_eq!(pick(kind, &eps, 1, &[]), None, "{kind}");
    }
}

#[test]
fn weight_zero_is_never_picked() {
    for kind in KINDS {
        let eps = weighted(&[0, 1, 0, 2, 0]);
        let c = counts(kind, &eps, 3_000);
        assert_eq!(c[0] + c[2] + c[4], 0, "{kind}: {c:?}");
        // Nor in panic mode.
        eps.iter()
            .for_each(|e| _ = e.state.set_registry_health(Health::Unhealthy));
        let c = counts(kind, &eps, 3_000);
        assert_eq!(c[0] + c[2] + c[4], 0, "{kind}: {c:?}");
    }
}

#[test]
fn higher_priority_serves_first() {
    for kind in KINDS {
        let eps = prioritised();
        let c = counts(kind, &eps, 1_000);
        assert_eq!(c[2] + c[3] + c[4], 0, "{kind}: {c:?}");

        // One of the top group down: the other takes it all.
        set_down(&eps, 0, true);
        assert_eq!(counts(kind, &eps, 1_000)[1], 1_000, "{kind}");

        // The whole top group down: the next group serves.
        set_down(&eps, 1, true);
        let c = counts(kind, &eps, 1_000);
        assert_eq!(c[2] + c[3], 1_000, "{kind}: {c:?}");

        // Down to the last group.
        set_down(&eps, 2, true);
        set_down(&eps, 3, true);
        let p = pick(kind, &eps, 9, &[]).unwrap();
        assert_eq!(
            p,
            Pick {
                index: 4,
                panic: false
            },
            "{kind}"
        );

        // Recovery moves traffic back up.
        set_down(&eps, 0, false);
        assert_eq!(counts(kind, &eps, 100)[0], 100, "{kind}");
    }
}

#[test]
fn panic_mode_uses_every_endpoint() {
    for kind in KINDS {
        let eps = prioritised();
        (0..5).for_each(|i| set_down(&eps, i, true));
        let b = Balancer::build_with(kind, &eps, &mut FastRng::seeded(5));
        let mut rng = FastRng::seeded(6);
        let mut seen = [0usize; 5];
        for hash in 0..5_000u64 {
            let ctx = PickCtx { hash, tried: &[] };
            let p = b.pick_with(&eps, &ctx, &mut rng).unwrap();
            assert!(p.panic, "{kind}");
            seen[p.index] += 1;
        }
        // Across all priorities, not just the top group.
        assert!(seen.iter().all(|&n| n > 500), "{kind}: {seen:?}");

        // One endpoint back: no more panic, and it takes everything.
        set_down(&eps, 3, false);
        let p = b.pick_with(&eps, &PickCtx::default(), &mut rng).unwrap();
        assert_eq!(
            p,
            Pick {
                index: 3,
                panic: false
            },
            "{kind}"
        );
    }
}

#[test]
fn tried_endpoints_are_skipped_until_none_is_left() {
    for kind in KINDS {
        let eps = uniform(3);
        for hash in 0..200 {
            let p = pick(kind, &eps, hash, &[0, 2]).unwrap();
            assert_eq!(
                p,
                Pick {
                    index: 1,
                    panic: false
                },
                "{kind}"
            );
        }
        // Everything tried: any may be retried, still not panic.
        let p = pick(kind, &eps, 3, &[0, 1, 2]).unwrap();
        assert!(!p.panic, "{kind}");
    }
}

#[test]
fn tried_moves_a_retry_to_a_lower_priority() {
    for kind in KINDS {
        let eps = prioritised();
        let p = pick(kind, &eps, 7, &[0, 1]).unwrap();
        assert!(p.index == 2 || p.index == 3, "{kind}: {p:?}");
    }
}

#[test]
fn tried_is_honoured_in_panic_mode() {
    for kind in KINDS {
        let eps = uniform(3);
        (0..3).for_each(|i| set_down(&eps, i, true));
        for hash in 0..100 {
            let p = pick(kind, &eps, hash, &[1]).unwrap();
            assert!(p.panic && p.index != 1, "{kind}: {p:?}");
        }
    }
}

#[test]
fn draining_endpoints_take_no_new_requests() {
    for kind in KINDS {
        let eps = uniform(2);
        eps[0].state.set_registry_health(Health::Draining);
        assert_eq!(counts(kind, &eps, 200), vec![0, 200], "{kind}");
    }
}

#[test]
fn a_mismatched_slice_picks_nothing_in_release() {
    let eps = uniform(3);
    let b = Balancer::build(BalancerType::RoundRobin, &eps);
    assert_eq!(b.len(), 3);
    let picked = std::panic::catch_unwind(|| b.pick(&eps[..2], &PickCtx::default()));
    // Debug builds flag the caller bug; release builds answer `None`.
    assert!(matches!(picked, Err(_) | Ok(None)));
}

#[test]
fn type_names_are_apisix_names() {
    for kind in KINDS {
        assert_eq!(kind.as_str().parse::<BalancerType>().unwrap(), kind);
        assert_eq!(Balancer::build(kind, &uniform(1)).kind(), kind);
    }
    assert_eq!(BalancerType::default(), BalancerType::RoundRobin);
    assert!("random".parse::<BalancerType>().is_err());
}

/// The proxy shares one balancer across its runtime's threads.
#[test]
fn balancers_are_send_and_sync() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Balancer>();
}
