//! Pick and rebuild costs of the four balancers, at 10, 1,000 and 10,000
//! endpoints, against a naive baseline (an exact least-loaded scan).
//!
//! `cargo bench -p sidecar --bench balance -- --warm-up-time 1 --measurement-time 2`

use std::{
    hint::black_box,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sidecar::{
    balance::{Balancer, BalancerType, PickCtx, hash_key},
    upstream::{Endpoint, EndpointState, InFlight},
};

const KINDS: [BalancerType; 4] = [
    BalancerType::RoundRobin,
    BalancerType::Chash,
    BalancerType::Ewma,
    BalancerType::LeastConn,
];

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// `n` healthy endpoints of weights 1–5 with a spread of latencies, and
/// the in-flight guards that give them a spread of load (keep them alive).
fn endpoints(n: usize) -> (Vec<Arc<Endpoint>>, Vec<InFlight>) {
    let now = Instant::now();
    let mut load = Vec::new();
    let eps = (0..n)
        .map(|i| {
            let state = Arc::new(EndpointState::default());
            state.observe(1e6 + (i % 7) as f64 * 3e5, now);
            load.extend((0..i % 4).map(|_| state.begin()));
            let addr = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i as u32), 8080));
            Arc::new(Endpoint {
                id: format!("svc-{i}").into(),
                addr,
                weight: 1 + (i % 5) as u32,
                priority: 0,
                zone: "".into(),
                source: "bench".into(),
                state,
                authority: Endpoint::authority_of(addr),
                host: Endpoint::host_of(&Endpoint::authority_of(addr)),
            })
        })
        .collect();
    (eps, load)
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in SIZES {
        let (eps, _load) = endpoints(n);
        for kind in KINDS {
            let balancer = Balancer::build(kind, &eps);
            let mut key = 0u64;
            group.bench_function(BenchmarkId::new(kind.as_str(), n), |b| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let ctx = PickCtx {
                        hash: key,
                        tried: &[],
                    };
                    black_box(balancer.pick(&eps, &ctx))
                })
            });
        }
    }
    group.finish();
}

/// The naive least-loaded pick: read every endpoint's counter.
fn baseline(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline");
    for n in SIZES {
        let (eps, _load) = endpoints(n);
        group.bench_function(BenchmarkId::new("least_conn_full_scan", n), |b| {
            b.iter(|| {
                let best = eps
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.is_available())
                    .map(|(i, e)| (i, (e.state.in_flight() as f64 + 1.0) / f64::from(e.weight)))
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                black_box(best)
            })
        });
    }
    group.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild");
    group.sample_size(20);
    let (eps, _load) = endpoints(10_000);
    for kind in KINDS {
        group.bench_function(BenchmarkId::new(kind.as_str(), 10_000), |b| {
            b.iter(|| black_box(Balancer::build(kind, &eps)))
        });
    }
    group.finish();
}

fn hash(c: &mut Criterion) {
    c.bench_function("hash_key/24B", |b| {
        b.iter(|| hash_key(black_box(b"203.0.113.7:51234;uid=42")))
    });
}

criterion_group!(benches, pick, baseline, rebuild, hash);
criterion_main!(benches);
