//! Hot-path benchmarks: features of a 2 KB prompt, a decision over 8 arms
//! at d = 64 and over 4 arms at the default d of a short prompt, one update over a grid of d and K, and the learner's
//! periodic save of a route's state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchboard::bandit::{
    Algorithm, ArmSpec, BudgetConfig, DecisionRequest, Objective, PolicyConfig, PolicySnapshot,
    PolicyWriter, Quality, RouteSpec,
};
use switchboard::domain::{ModelName, Reward};
use switchboard::features::{Encoder, FeatureSpec, Features, PromptView};

fn prompt_2kb() -> String {
    let base =
        "Question: A train leaves the station at 3 pm travelling 60 km/h. (A) 120 km (B) 180 km \
                (C) 240 km. Write a python function `def solve(x): return x * 2` and explain why. ";
    base.repeat(2048 / base.len() + 1)[..2048].to_string()
}

fn writer(d: usize, k: usize, algorithm: Algorithm) -> PolicyWriter {
    let spec = RouteSpec {
        dimension: d,
        feature_fingerprint: 0,
        config: PolicyConfig {
            algorithm,
            ..PolicyConfig::default()
        },
        budget: BudgetConfig {
            target_usd_per_request: Some(4e-4),
        },
        arms: (0..k)
            .map(|i| ArmSpec::new(ModelName::parse(&format!("m{i}")).unwrap()))
            .collect(),
    };
    let mut w = PolicyWriter::new(PolicySnapshot::new(&spec).unwrap());
    let mut rng = StdRng::seed_from_u64(1);
    for t in 0..(20 * k) {
        let mut x = vec![1.0];
        x.extend((1..d).map(|_| rng.random_range(-0.3..0.3)));
        let q = Quality {
            arm: ModelName::parse(&format!("m{}", t % k)).unwrap(),
            x: Features::from(x),
            reward: Reward::new(rng.random_range(0.0..1.0)).unwrap(),
        };
        w.apply_quality(&q).unwrap();
    }
    w.publish();
    w
}

fn bench(c: &mut Criterion) {
    let text = prompt_2kb();
    let d64 = FeatureSpec {
        hash_buckets: 28,
        ..FeatureSpec::default()
    };
    let enc = Encoder::new(d64).unwrap();
    assert_eq!(enc.dimension(), 64);
    let mut buf = Vec::with_capacity(enc.dimension());
    c.bench_function("features/2KB", |b| {
        b.iter(|| {
            enc.encode(black_box(&PromptView::single_user(&text)), &mut buf);
            black_box(&buf);
        })
    });
    let eligible: Vec<usize> = (0..8).collect();
    let mut rng = StdRng::seed_from_u64(2);
    for alg in [Algorithm::Linucb, Algorithm::Thompson] {
        let w = writer(64, 8, alg);
        let handle = w.handle();
        c.bench_function(&format!("decide/{alg:?}/d64/K8"), |b| {
            b.iter(|| {
                enc.encode(&PromptView::single_user(&text), &mut buf);
                let snap = handle.load();
                let req = DecisionRequest::new(&buf, &eligible, Objective::default());
                black_box(snap.decide(&req, &mut rng).unwrap())
            })
        });
    }
    // The gateway's default features (d = 100) of a short prompt, the load
    // harness's, over four arms: most hashed features stay zero (43 of 100
    // are not), which the quadratic forms skip; the 2 KB prompt above
    // fills most of d = 64.
    let short = "Summarise the plot of a short story about a lighthouse keeper who finds a \
                 message in a bottle, in three sentences, and suggest a title.";
    let enc100 = Encoder::new(FeatureSpec::default()).unwrap();
    let eligible4: Vec<usize> = (0..4).collect();
    let w = writer(enc100.dimension(), 4, Algorithm::Linucb);
    let handle = w.handle();
    let mut buf100 = Vec::with_capacity(enc100.dimension());
    c.bench_function(
        &format!("decide/Linucb/d{}/K4/short-prompt", enc100.dimension()),
        |b| {
            b.iter(|| {
                enc100.encode(&PromptView::single_user(short), &mut buf100);
                let snap = handle.load();
                let req = DecisionRequest::new(&buf100, &eligible4, Objective::default());
                black_box(snap.decide(&req, &mut rng).unwrap())
            })
        },
    );
    // What the gateway pays when it shows every arm's probability in the
    // receipt: a Thompson decision integrates only the chosen arm's.
    let w = writer(64, 8, Algorithm::Thompson);
    let handle = w.handle();
    c.bench_function("decide+receipt/Thompson/d64/K8", |b| {
        b.iter(|| {
            enc.encode(&PromptView::single_user(&text), &mut buf);
            let snap = handle.load();
            let req = DecisionRequest::new(&buf, &eligible, Objective::default());
            let mut d = snap.decide(&req, &mut rng).unwrap();
            d.receipt.complete();
            black_box(d)
        })
    });
    let mut group = c.benchmark_group("update");
    for (d, k) in [(16, 4), (64, 4), (64, 8), (128, 8)] {
        let mut w = writer(d, k, Algorithm::Linucb);
        let mut x = vec![0.1; d];
        x[0] = 1.0;
        let q = Quality {
            arm: ModelName::parse("m1").unwrap(),
            x: Features::from(x),
            reward: Reward::new(0.7).unwrap(),
        };
        group.bench_with_input(
            BenchmarkId::new("quality", format!("d{d}/K{k}")),
            &q,
            |b, q| b.iter(|| black_box(w.apply_quality(q).unwrap())),
        );
        group.bench_with_input(
            BenchmarkId::new("quality+publish", format!("d{d}/K{k}")),
            &q,
            |b, q| {
                b.iter(|| {
                    w.apply_quality(q).unwrap();
                    black_box(w.publish())
                })
            },
        );
    }
    group.finish();
    // What the learner's persist does every 10 s per changed route: the
    // whole state as JSON (every matrix, bit-exact), on a blocking thread.
    let w = writer(100, 4, Algorithm::Linucb);
    c.bench_function("persist/d100/K4", |b| {
        b.iter(|| black_box(serde_json::to_value(w.state()).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
