//! Contract tests: propensities, eligibility, caps, snapshots.

use super::*;

fn trained(cfg: PolicyConfig, k: usize, d: usize) -> PolicyWriter {
    let mut rng = StdRng::seed_from_u64(21);
    let budget = BudgetConfig {
        target_usd_per_request: Some(1e-3),
    };
    let mut w = PolicyWriter::new(PolicySnapshot::new(&spec(d, k, cfg, budget)).unwrap());
    for t in 0..300 {
        let x = context(&mut rng, d);
        let arm = t % k;
        feed(
            &mut w,
            arm,
            &x,
            0.5 + 0.1 * arm as f64 + noise(&mut rng, 0.1),
            1e-4 * (1 + arm) as f64,
        );
    }
    w.publish();
    w
}

const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::Linucb,
    Algorithm::Thompson,
    Algorithm::EpsilonGreedy,
    Algorithm::Random,
    Algorithm::Fixed,
];

fn config(algorithm: Algorithm) -> PolicyConfig {
    PolicyConfig {
        algorithm,
        fixed_arm: Some(name(1)),
        ..PolicyConfig::default()
    }
}

/// Thompson draws its arm from the posterior and integrates only that
/// arm's probability: the choices must follow the listed probabilities, and
/// a completed receipt must show them with the chosen arm's as logged and
/// sum to one.
#[test]
fn thompson_draws_follow_their_probabilities() {
    let (k, d) = (4, 6);
    let w = trained(config(Algorithm::Thompson), k, d);
    let snap = w.handle().load_full();
    let mut rng = StdRng::seed_from_u64(11);
    let x = context(&mut rng, d);
    let eligible: Vec<usize> = (0..k).collect();
    let req = DecisionRequest::new(&x, &eligible, Objective::default());
    let probs = snap.probabilities(&req).unwrap();
    let n = 40_000;
    let mut counts = vec![0u32; k];
    for _ in 0..n {
        let mut dec = snap.decide(&req, &mut rng).unwrap();
        counts[dec.arm] += 1;
        assert!(!dec.receipt.is_complete());
        dec.receipt.complete();
        assert!(dec.receipt.is_complete());
        // The others share what the logged one leaves, in proportion:
        // within the quadrature's error of the normalised vector, and the
        // receipt sums to one.
        for row in &dec.receipt.arms {
            let want = probs.iter().find(|p| p.0 == row.arm).unwrap().1;
            if row.arm == dec.arm {
                assert_eq!(row.probability, dec.propensity);
            } else {
                assert!((row.probability - want).abs() < 1e-3);
            }
        }
        let total: f64 = dec.receipt.arms.iter().map(|r| r.probability).sum();
        assert!((total - 1.0).abs() < 1e-9, "receipt sums to {total}");
    }
    for (a, p) in probs {
        let seen = f64::from(counts[a]) / f64::from(n);
        // 4.5 standard errors of a binomial share.
        let tol = 4.5 * (p * (1.0 - p) / f64::from(n)).sqrt() + 1e-4;
        assert!((seen - p).abs() < tol, "arm {a}: seen {seen}, listed {p}");
    }
}

#[test]
fn propensities_sum_to_one_and_ineligible_arms_are_never_chosen() {
    let (k, d) = (5, 6);
    let mut rng = StdRng::seed_from_u64(3);
    for alg in ALGORITHMS {
        let w = trained(config(alg), k, d);
        let snap = w.handle().load_full();
        for eligible in [vec![0, 1, 2, 3, 4], vec![3, 1], vec![4], vec![2, 0, 4]] {
            for _ in 0..50 {
                let x = context(&mut rng, d);
                let req = DecisionRequest::new(&x, &eligible, Objective::default());
                let probs = snap.probabilities(&req).unwrap();
                let total: f64 = probs.iter().map(|p| p.1).sum();
                assert!((total - 1.0).abs() < 1e-9, "{alg:?}: sum {total}");
                assert!(probs.iter().all(|(a, p)| eligible.contains(a) && *p >= 0.0));
                let dec = snap.decide(&req, &mut rng).unwrap();
                assert!(
                    eligible.contains(&dec.arm),
                    "{alg:?} chose ineligible {}",
                    dec.arm
                );
                let listed = probs.iter().find(|p| p.0 == dec.arm).unwrap().1;
                if alg == Algorithm::Thompson {
                    // The decision integrates its own arm's probability
                    // alone; the full vector is normalised over all arms.
                    assert!((dec.propensity - listed).abs() < 1e-4, "{alg:?}");
                } else {
                    assert_eq!(dec.propensity, listed);
                }
                assert!(dec.propensity > 0.0);
                if matches!(
                    alg,
                    Algorithm::Linucb | Algorithm::Thompson | Algorithm::EpsilonGreedy
                ) {
                    // The floor keeps every eligible arm reachable (OPE).
                    let floor = snap.config().exploration_floor / eligible.len() as f64;
                    assert!(
                        probs.iter().all(|p| p.1 >= floor - 1e-12),
                        "{alg:?}: {probs:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn empirical_choice_frequencies_match_propensities() {
    let (k, d) = (3, 4);
    let w = trained(config(Algorithm::Thompson), k, d);
    let snap = w.handle().load_full();
    let mut rng = StdRng::seed_from_u64(8);
    let x = context(&mut rng, d);
    let eligible = [0, 1, 2];
    let req = DecisionRequest::new(&x, &eligible, Objective::default());
    let probs = snap.probabilities(&req).unwrap();
    let mut counts = [0usize; 3];
    let n = 20_000;
    for _ in 0..n {
        counts[snap.decide(&req, &mut rng).unwrap().arm] += 1;
    }
    for (a, p) in probs {
        let f = counts[a] as f64 / n as f64;
        assert!(
            (f - p).abs() < 0.015,
            "arm {a}: frequency {f} vs propensity {p}"
        );
    }
}

#[test]
fn zero_exploration_cap_is_always_greedy() {
    let (k, d) = (4, 5);
    let mut rng = StdRng::seed_from_u64(4);
    for alg in [
        Algorithm::Linucb,
        Algorithm::Thompson,
        Algorithm::EpsilonGreedy,
    ] {
        let snap = trained(config(alg), k, d).handle().load_full();
        for _ in 0..100 {
            let x = context(&mut rng, d);
            let mut req = DecisionRequest::new(&x, &[0, 1, 2, 3], Objective::default());
            req.exploration_cap = Some(0.0);
            let dec = snap.decide(&req, &mut rng).unwrap();
            assert!(dec.greedy && dec.propensity == 1.0, "{alg:?}: {dec:?}");
        }
    }
}

#[test]
fn max_cost_excludes_expensive_arms_or_falls_back_to_cheapest() {
    let (k, d) = (3, 4);
    let snap = trained(config(Algorithm::Linucb), k, d)
        .handle()
        .load_full();
    let mut rng = StdRng::seed_from_u64(5);
    let x = context(&mut rng, d);
    let mut req = DecisionRequest::new(&x, &[0, 1, 2], Objective::default());
    // Arm costs are ~1e-4, 2e-4, 3e-4.
    req.max_cost_usd = Some(Usd::new(2.5e-4).unwrap());
    for (a, p) in snap.probabilities(&req).unwrap() {
        assert!(a != 2 || p == 0.0);
    }
    req.max_cost_usd = Some(Usd::new(1e-9).unwrap());
    let dec = snap.decide(&req, &mut rng).unwrap();
    assert_eq!((dec.arm, dec.propensity), (0, 1.0));
    assert!(dec.receipt.budget_fallback);
}

#[test]
fn bad_requests_are_rejected() {
    let snap = trained(config(Algorithm::Linucb), 2, 3)
        .handle()
        .load_full();
    let mut rng = StdRng::seed_from_u64(1);
    let x = [1.0, 0.0, 0.0];
    let o = Objective::default();
    assert!(snap
        .decide(&DecisionRequest::new(&x, &[], o), &mut rng)
        .is_err());
    assert!(snap
        .decide(&DecisionRequest::new(&x, &[2], o), &mut rng)
        .is_err());
    assert!(snap
        .decide(&DecisionRequest::new(&x, &[0, 0], o), &mut rng)
        .is_err());
    assert!(snap
        .decide(&DecisionRequest::new(&x[..2], &[0], o), &mut rng)
        .is_err());
    assert!(snap
        .decide(
            &DecisionRequest::new(&[1.0, f64::NAN, 0.0], &[0], o),
            &mut rng
        )
        .is_err());
}

#[test]
fn snapshot_round_trips_exactly_and_decides_identically() {
    let (k, d) = (3, 5);
    let w = trained(config(Algorithm::Thompson), k, d);
    let snap = w.state().clone();
    let json = snap.to_json().unwrap();
    let back = PolicySnapshot::from_json(&json).unwrap();
    assert_eq!(back, snap);
    assert_eq!(back.to_json().unwrap(), json);
    let mut rng = StdRng::seed_from_u64(2);
    let x = context(&mut rng, d);
    let req = DecisionRequest::new(&x, &[0, 1, 2], Objective::default());
    assert_eq!(
        back.probabilities(&req).unwrap(),
        snap.probabilities(&req).unwrap()
    );
}

#[test]
fn prepare_validates_and_adds_new_arms_from_the_prior() {
    let (k, d) = (2, 4);
    let w = trained(config(Algorithm::Linucb), k, d);
    let snap = w.state().clone();
    let budget = *snap.budget();
    let cfg = PolicyConfig {
        fixed_arm: None,
        ..snap.config().clone()
    };
    // Wrong dimension, wrong feature space, unknown arm: rejected.
    assert!(snap
        .clone()
        .prepare(&spec(d + 1, k, cfg.clone(), budget))
        .is_err());
    let mut other = spec(d, k, cfg.clone(), budget);
    other.feature_fingerprint = 7;
    assert!(matches!(
        snap.clone().prepare(&other),
        Err(SnapshotError::Fingerprint { .. })
    ));
    assert!(matches!(
        snap.clone().prepare(&spec(d, 1, cfg.clone(), budget)),
        Err(SnapshotError::UnknownArm(_))
    ));
    // Non-finite numbers: rejected at load.
    let json = snap.to_json().unwrap();
    let first_theta = json.find("\"theta\":\"").unwrap() + 9;
    let corrupt = format!("{}NaN {}", &json[..first_theta], &json[first_theta..]);
    assert!(PolicySnapshot::from_json(&corrupt).is_err());
    // A third arm joins at its prior, keeping the learned arms.
    let grown = snap
        .clone()
        .prepare(&spec(d, 3, cfg.clone(), budget))
        .unwrap();
    assert_eq!(grown.arm_count(), 3);
    assert_eq!(grown.arm(0), snap.arm(0));
    let fresh = grown.arm(2).unwrap();
    assert_eq!(fresh.counts().feedback, 0);
    let mut rng = StdRng::seed_from_u64(6);
    let x = context(&mut rng, d);
    let receipt = grown
        .decide(
            &DecisionRequest::new(&x, &[0, 1, 2], Objective::default()),
            &mut rng,
        )
        .unwrap()
        .receipt;
    let r2 = &receipt.arms[2];
    assert!((r2.quality - cfg.prior_quality).abs() < 1e-12);
    assert!(
        r2.bonus > receipt.arms[0].bonus,
        "a new arm must look worth exploring"
    );
    // The writer accepts the new config and publishes it.
    let mut w = w;
    let v = w.reconfigure(&spec(d, 3, cfg, budget)).unwrap();
    assert_eq!(w.handle().load().version(), v);
    assert_eq!(w.handle().load().arm_count(), 3);
}

#[test]
fn updates_reject_unknown_arms_and_bad_inputs() {
    let mut w = trained(config(Algorithm::Linucb), 2, 3);
    let x = Features::from(vec![1.0, 0.0, 0.0]);
    let bad_arm = Quality {
        arm: ModelName::parse("nope").unwrap(),
        x: x.clone(),
        reward: Reward::ONE,
    };
    assert!(matches!(
        w.apply_quality(&bad_arm),
        Err(UpdateError::UnknownArm(_))
    ));
    let short = Quality {
        arm: name(0),
        x: Features::from(vec![1.0]),
        reward: Reward::ONE,
    };
    assert!(w.apply_quality(&short).is_err());
    let o = Outcome {
        arm: name(0),
        x,
        cost_usd: Usd::ZERO,
        latency_s: f64::NAN,
        ok: true,
    };
    assert!(w.apply_outcome(&o).is_err());
}

#[test]
fn failed_requests_count_as_quality_zero() {
    let d = 3;
    let mut w = PolicyWriter::new(
        PolicySnapshot::new(&spec(
            d,
            1,
            PolicyConfig::default(),
            BudgetConfig::default(),
        ))
        .unwrap(),
    );
    let x = Features::from(vec![1.0, 0.0, 0.0]);
    for _ in 0..50 {
        let o = Outcome {
            arm: name(0),
            x: x.clone(),
            cost_usd: Usd::ZERO,
            latency_s: 1.0,
            ok: false,
        };
        w.apply_outcome(&o).unwrap();
    }
    let arm = w.state().arm(0).unwrap();
    assert!(arm.estimate(&x).quality < 0.05);
    assert_eq!(arm.counts().errors, 50);
    assert_eq!(arm.counts().outcomes, 0);
}

#[test]
fn publish_shares_untouched_arms() {
    let mut w = trained(config(Algorithm::Linucb), 3, 4);
    let before = w.handle().load_full();
    feed(&mut w, 1, &[1.0, 0.1, 0.2, 0.3], 0.7, 1e-4);
    w.publish();
    let after = w.handle().load_full();
    assert!(std::sync::Arc::ptr_eq(&before.arms[0], &after.arms[0]));
    assert!(!std::sync::Arc::ptr_eq(&before.arms[1], &after.arms[1]));
    assert_eq!(after.version(), before.version() + 1);
}

/// A published snapshot's arms carry their decision mirror built, so no
/// decision builds one; an update clears it only in the writer's copy,
/// and the next publish builds it again.
#[test]
fn published_arms_are_ready_for_decisions() {
    let (k, d) = (3, 5);
    let mut w = trained(config(Algorithm::Linucb), k, d);
    let built = |snap: &PolicySnapshot| {
        snap.arms
            .iter()
            .map(|a| a.quality.design.mirror_is_built())
            .collect::<Vec<_>>()
    };
    let first = w.handle().load_full();
    assert_eq!(built(&first), vec![true; k]);
    let mut rng = StdRng::seed_from_u64(5);
    feed(&mut w, 1, &context(&mut rng, d), 0.7, 1e-4);
    assert!(!w.state().arms[1].quality.design.mirror_is_built());
    assert_eq!(built(&first), vec![true; k], "readers keep theirs");
    w.publish();
    assert_eq!(built(&w.handle().load_full()), vec![true; k]);
}

fn linucb_writer(k: usize, d: usize) -> PolicyWriter {
    let budget = BudgetConfig {
        target_usd_per_request: Some(1e-3),
    };
    PolicyWriter::new(PolicySnapshot::new(&spec(d, k, config(Algorithm::Linucb), budget)).unwrap())
}

/// Re-inversions computed by the caller (as the gateway's learner does, on
/// another thread) leave the state the same to the bit as refreshing in
/// place, and so does a deferred one nobody took.
#[test]
fn deferred_refreshes_match_refreshing_in_place() {
    let (k, d) = (3, 5);
    let mut in_place = linucb_writer(k, d);
    let mut taken = linucb_writer(k, d);
    taken.defer_refreshes();
    let mut untaken = linucb_writer(k, d);
    untaken.defer_refreshes();
    let mut rng = StdRng::seed_from_u64(8);
    let mut refreshes = 0;
    // Each design is refreshed every 32 updates at this d.
    for t in 0..400 {
        let x = context(&mut rng, d);
        let (reward, cost) = (0.4 + noise(&mut rng, 0.2), 1e-4 * (1 + t % k) as f64);
        for (i, w) in [&mut in_place, &mut taken, &mut untaken]
            .into_iter()
            .enumerate()
        {
            let takes = i == 1;
            let arm = t % k;
            w.apply_outcome(&outcome(arm, &x, cost)).unwrap();
            if takes {
                if let Some(r) = w.take_refresh() {
                    // Computed on another thread, as the gateway does.
                    let (r, inverse) = std::thread::spawn(move || {
                        let inverse = r.invert();
                        (r, inverse)
                    })
                    .join()
                    .unwrap();
                    w.finish_refresh(r, inverse);
                    refreshes += 1;
                }
            }
            w.apply_quality(&quality(arm, &x, reward)).unwrap();
            if takes {
                if let Some(r) = w.take_refresh() {
                    let inverse = r.invert();
                    w.finish_refresh(r, inverse);
                    refreshes += 1;
                }
            }
        }
    }
    assert!(refreshes >= 20, "only {refreshes} refreshes were deferred");
    for w in [&mut in_place, &mut taken, &mut untaken] {
        w.publish();
    }
    assert!(
        in_place.state() == taken.state(),
        "taken refreshes changed the state"
    );
    assert!(
        in_place.state() == untaken.state(),
        "untaken refreshes changed the state"
    );
}

/// A refresh finished after the state was replaced is not applied to the
/// new state.
#[test]
fn a_refresh_for_a_replaced_state_is_dropped() {
    let (k, d) = (2, 4);
    let mut w = linucb_writer(k, d);
    w.defer_refreshes();
    let mut rng = StdRng::seed_from_u64(9);
    let refresh = loop {
        feed(&mut w, 0, &context(&mut rng, d), 0.5, 1e-4);
        if let Some(r) = w.take_refresh() {
            break r;
        }
    };
    let fresh = linucb_writer(k, d).state().clone();
    w.replace(fresh.clone());
    let inverse = refresh.invert();
    w.finish_refresh(refresh, inverse);
    let mut want = fresh;
    want.version = w.state().version;
    assert!(w.state() == &want);
}
