//! Scale-out costs (docs/scaling.md): cutting a delta from a writer's
//! state, its CBOR size and (de)coding, and merging it (which re-inverts
//! every touched model, O(d^3)), over d and K.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchboard::bandit::{
    ArmSpec, BudgetConfig, Outcome, PolicyConfig, PolicyDelta, PolicySnapshot, PolicyWriter,
    Quality, RouteSpec,
};
use switchboard::domain::{ModelName, Reward, Usd};
use switchboard::features::{FeatureSpec, Features};

fn fresh(d: usize, k: usize) -> PolicySnapshot {
    let spec = RouteSpec {
        dimension: d,
        feature_fingerprint: 0,
        config: PolicyConfig::default(),
        budget: BudgetConfig::default(),
        arms: (0..k)
            .map(|i| ArmSpec::new(ModelName::parse(&format!("m{i}")).unwrap()))
            .collect(),
    };
    PolicySnapshot::new(&spec).unwrap()
}

/// A flush interval's worth of learning: `n` outcomes with feedback.
fn learned(base: &PolicySnapshot, d: usize, k: usize, n: usize) -> PolicySnapshot {
    let mut w = PolicyWriter::new(base.clone());
    let mut rng = StdRng::seed_from_u64(3);
    for t in 0..n {
        let mut x = vec![1.0];
        x.extend((1..d).map(|_| rng.random_range(-0.3..0.3)));
        let arm = ModelName::parse(&format!("m{}", t % k)).unwrap();
        let x = Features::from(x);
        w.apply_outcome(&Outcome {
            arm: arm.clone(),
            x: x.clone(),
            cost_usd: Usd::new(2e-4).unwrap(),
            latency_s: 0.8,
            ok: true,
        })
        .unwrap();
        w.apply_quality(&Quality {
            arm,
            x,
            reward: Reward::new(rng.random_range(0.0..1.0)).unwrap(),
        })
        .unwrap();
    }
    w.state().clone()
}

fn encode(d: &PolicyDelta) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(d, &mut out).unwrap();
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("scale");
    // The default feature space (d = 1 + hand-made features + 64 buckets).
    let default_d = FeatureSpec::default().dimension();
    for (d, k) in [(16, 4), (64, 8), (default_d, 4)] {
        let base = fresh(d, k);
        let live = learned(&base, d, k, 200);
        let delta = live.delta_since(&base);
        let bytes = encode(&delta);
        eprintln!(
            "d = {d}, K = {k}: one delta carrying {} updates is {} bytes of CBOR",
            delta.updates(),
            bytes.len()
        );
        let id = format!("d{d}_k{k}");
        g.bench_with_input(BenchmarkId::new("cut", &id), &(), |b, _| {
            b.iter(|| black_box(live.delta_since(&base)))
        });
        g.bench_with_input(BenchmarkId::new("encode", &id), &(), |b, _| {
            b.iter(|| black_box(encode(&delta)))
        });
        g.bench_with_input(BenchmarkId::new("decode", &id), &(), |b, _| {
            b.iter(|| black_box(ciborium::from_reader::<PolicyDelta, _>(&bytes[..]).unwrap()))
        });
        g.bench_with_input(BenchmarkId::new("merge", &id), &(), |b, _| {
            b.iter(|| black_box(base.merge_delta(&delta).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
