//! Learning behaviour: convergence, regret, drift recovery, pacing.

use super::*;

/// Linear world: arm k's mean quality is `0.5 + w_k . x[1..]`, clipped.
struct World {
    w: Vec<Vec<f64>>,
    costs: Vec<f64>,
}

impl World {
    fn mean(&self, k: usize, x: &[f64]) -> f64 {
        (0.5 + self.w[k]
            .iter()
            .zip(&x[1..])
            .map(|(a, b)| a * b)
            .sum::<f64>())
        .clamp(0.0, 1.0)
    }
}

fn linear_world(d: usize, k: usize, rng: &mut StdRng) -> World {
    let w = (0..k)
        .map(|_| (1..d).map(|_| rng.random_range(-0.15..0.15)).collect())
        .collect();
    World {
        w,
        costs: vec![1e-4; k],
    }
}

/// Runs `t` rounds; returns per-round regret (vs the best arm's mean).
fn run(world: &World, cfg: PolicyConfig, d: usize, t: usize, seed: u64) -> Vec<f64> {
    let k = world.w.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w =
        PolicyWriter::new(PolicySnapshot::new(&spec(d, k, cfg, BudgetConfig::default())).unwrap());
    let h = w.handle();
    let eligible: Vec<usize> = (0..k).collect();
    let mut regret = Vec::with_capacity(t);
    for _ in 0..t {
        let x = context(&mut rng, d);
        let dec = h
            .load()
            .decide(
                &DecisionRequest::new(&x, &eligible, Objective::default()),
                &mut rng,
            )
            .unwrap();
        let best = (0..k).map(|a| world.mean(a, &x)).fold(0.0, f64::max);
        regret.push(best - world.mean(dec.arm, &x));
        let r = world.mean(dec.arm, &x) + noise(&mut rng, 0.1);
        feed(&mut w, dec.arm, &x, r, world.costs[dec.arm]);
        w.publish();
    }
    regret
}

fn base(algorithm: Algorithm) -> PolicyConfig {
    PolicyConfig {
        algorithm,
        exploration_floor: 0.0,
        forgetting: 1.0,
        ..PolicyConfig::default()
    }
}

#[test]
fn linucb_learns_best_arm_with_sublinear_regret() {
    let (d, k) = (8, 4);
    let world = linear_world(d, k, &mut StdRng::seed_from_u64(1));
    let regret = run(&world, base(Algorithm::Linucb), d, 4000, 2);
    let first: f64 = regret[..2000].iter().sum();
    let second: f64 = regret[2000..].iter().sum();
    assert!(
        second < 0.5 * first,
        "regret first half {first:.2}, second half {second:.2}"
    );
    // Late decisions are near-optimal on average.
    let late = regret[3500..].iter().sum::<f64>() / 500.0;
    assert!(late < 0.01, "late mean regret {late}");
}

#[test]
fn thompson_learns_best_arm_with_sublinear_regret() {
    let (d, k) = (8, 4);
    let world = linear_world(d, k, &mut StdRng::seed_from_u64(3));
    let regret = run(&world, base(Algorithm::Thompson), d, 4000, 4);
    let first: f64 = regret[..2000].iter().sum();
    let second: f64 = regret[2000..].iter().sum();
    assert!(
        second < 0.6 * first,
        "regret first half {first:.2}, second half {second:.2}"
    );
}

#[test]
fn random_baseline_has_linear_regret() {
    // Control for the tests above: a policy that does not learn keeps its
    // regret rate, so "second half much smaller" really measures learning.
    let (d, k) = (8, 4);
    let world = linear_world(d, k, &mut StdRng::seed_from_u64(1));
    let regret = run(&world, base(Algorithm::Random), d, 4000, 2);
    let first: f64 = regret[..2000].iter().sum();
    let second: f64 = regret[2000..].iter().sum();
    assert!(second > 0.8 * first);
}

#[test]
fn posterior_mean_converges_to_truth() {
    let d = 6;
    let mut rng = StdRng::seed_from_u64(5);
    let truth = [0.6, 0.1, -0.1, 0.05, 0.0, 0.12];
    let cfg = base(Algorithm::Thompson);
    let mut w =
        PolicyWriter::new(PolicySnapshot::new(&spec(d, 1, cfg, BudgetConfig::default())).unwrap());
    let probe: Vec<Vec<f64>> = (0..20).map(|_| context(&mut rng, d)).collect();
    let truth_at = |x: &[f64]| truth.iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
    let err = |w: &PolicyWriter| {
        probe
            .iter()
            .map(|x| (w.state().arms[0].estimate(x).quality - truth_at(x)).abs())
            .fold(0.0, f64::max)
    };
    let sd_at = |w: &PolicyWriter| w.state().arms[0].estimate(&probe[0]).quality_sd;
    let (e0, s0) = (err(&w), sd_at(&w));
    for _ in 0..3000 {
        let x = context(&mut rng, d);
        feed(&mut w, 0, &x, truth_at(&x) + noise(&mut rng, 0.1), 1e-4);
    }
    assert!(err(&w) < 0.02, "max error {} (was {e0})", err(&w));
    assert!(
        sd_at(&w) < s0 / 10.0,
        "posterior sd {} (was {s0})",
        sd_at(&w)
    );
    // The learned noise level approaches the true 0.1.
    let sigma = w.state().arms[0].quality.noise.var().sqrt();
    assert!((sigma - 0.1).abs() < 0.02, "sigma {sigma}");
}

#[test]
fn forgetting_recovers_after_quality_drop() {
    let d = 4;
    let mut rng = StdRng::seed_from_u64(9);
    let cfg = PolicyConfig {
        exploration_floor: 0.02,
        ..PolicyConfig::default()
    };
    let mut w =
        PolicyWriter::new(PolicySnapshot::new(&spec(d, 2, cfg, BudgetConfig::default())).unwrap());
    let h = w.handle();
    let eligible = [0, 1];
    let mut quality = [0.9, 0.6];
    let mut picks_after = Vec::new();
    let mut drift_seen = false;
    for t in 0..3000 {
        if t == 1500 {
            quality[0] = 0.2; // arm 0 regresses
        }
        let x = context(&mut rng, d);
        let dec = h
            .load()
            .decide(
                &DecisionRequest::new(&x, &eligible, Objective::default()),
                &mut rng,
            )
            .unwrap();
        let r = quality[dec.arm] + noise(&mut rng, 0.05);
        let xf = Features::from(x.as_slice());
        let q = Quality {
            arm: name(dec.arm),
            x: xf,
            reward: Reward::new(r.clamp(0.0, 1.0)).unwrap(),
        };
        drift_seen |= !w.apply_quality(&q).unwrap().drift.is_empty();
        w.publish();
        if t >= 1500 {
            picks_after.push(dec.arm);
        }
    }
    assert!(drift_seen, "the regression raised no drift alarm");
    let late = &picks_after[200..500];
    let share1 = late.iter().filter(|&&a| a == 1).count() as f64 / late.len() as f64;
    assert!(
        share1 > 0.9,
        "only {share1} of decisions moved to the better arm"
    );
}

#[test]
fn pacing_holds_mean_cost_near_target() {
    // Cheap arm: quality 0.6. Expensive arm (10x): quality 0.6 + gain(x),
    // gain spread over prompts, so the budget buys the best prompts.
    let d = 4;
    let mut rng = StdRng::seed_from_u64(11);
    let target = 4e-4;
    let cfg = PolicyConfig {
        exploration_floor: 0.01,
        ..PolicyConfig::default()
    };
    let budget = BudgetConfig {
        target_usd_per_request: Some(target),
    };
    let mut w = PolicyWriter::new(PolicySnapshot::new(&spec(d, 2, cfg, budget)).unwrap());
    let h = w.handle();
    let (mut spend, mut late_spend, n) = (0.0, 0.0, 5000);
    for t in 0..n {
        let x = context(&mut rng, d);
        let gain = 0.15 + 0.15 * x[1];
        let dec = h
            .load()
            .decide(
                &DecisionRequest::new(&x, &[0, 1], Objective::default()),
                &mut rng,
            )
            .unwrap();
        let (q, c) = if dec.arm == 0 {
            (0.6, 1e-4)
        } else {
            (0.6 + gain, 1e-3)
        };
        let c = c * (1.0 + 0.2 * rng.random_range(-1.0..1.0));
        feed(&mut w, dec.arm, &x, q + noise(&mut rng, 0.1), c);
        w.publish();
        spend += c;
        if t >= n / 2 {
            late_spend += c;
        }
    }
    let mean = spend / n as f64;
    let late = late_spend / (n / 2) as f64;
    assert!(
        (mean - target).abs() < 0.1 * target,
        "mean cost {mean} vs target {target}"
    );
    assert!(
        (late - target).abs() < 0.1 * target,
        "late mean cost {late} vs target {target}"
    );
    assert!(w.state().pacing().lambda() > 0.0);
}
