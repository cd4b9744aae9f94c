//! The delta algebra replicas rely on (`delta.rs`): deltas cut from
//! several writers and merged give the statistics of one writer that saw
//! every update; with forgetting, of one writer that saw them in log order.

use super::*;

fn fresh(forgetting: f64) -> PolicySnapshot {
    let mut cfg = PolicyConfig {
        forgetting,
        ..PolicyConfig::default()
    };
    cfg.drift.forgetting = forgetting;
    let budget = BudgetConfig {
        target_usd_per_request: Some(1e-3),
    };
    PolicySnapshot::new(&spec(5, 3, cfg, budget)).unwrap()
}

/// One learning update: (arm, x, reward, cost).
type Obs = (usize, Vec<f64>, f64, f64);

fn stream(n: usize, seed: u64) -> Vec<Obs> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|t| {
            let x = context(&mut rng, 5);
            let arm = rng.random_range(0..3);
            let r = 0.3 + 0.2 * arm as f64 + noise(&mut rng, 0.1);
            (arm, x, r, 1e-4 * (1 + t % 7) as f64)
        })
        .collect()
}

fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let scale = a.iter().chain(b).fold(1.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// The order-free statistics of two states agree to `tol` (relative).
fn assert_same_stats(a: &PolicySnapshot, b: &PolicySnapshot, tol: f64) {
    assert_eq!(a.arms.len(), b.arms.len());
    for (x, y) in a.arms.iter().zip(&b.arms) {
        assert_eq!(x.counts, y.counts, "{}", x.name);
        let (qx, qy) = (&x.quality, &y.quality);
        let (ox, oy) = (&x.outcome, &y.outcome);
        for (dx, dy) in [(&qx.design, &qy.design), (&ox.design, &oy.design)] {
            assert_eq!(dx.updates, dy.updates);
            assert!(
                max_rel_diff(&dx.a.folded(), &dy.a.folded()) <= tol,
                "A of {}",
                x.name
            );
            assert!((dx.weight - dy.weight).abs() <= tol * dx.weight.max(1.0));
            assert!((dx.log_decay - dy.log_decay).abs() <= tol);
        }
        for (tx, ty) in [
            (&qx.target, &qy.target),
            (&ox.log_cost, &oy.log_cost),
            (&ox.log_latency, &oy.log_latency),
        ] {
            assert!(max_rel_diff(&tx.b, &ty.b) <= tol, "b of {}", x.name);
        }
        assert!((qx.noise.weight - qy.noise.weight).abs() <= tol * qx.noise.weight.max(1.0));
    }
    assert_eq!(a.pacing.requests(), b.pacing.requests());
    assert!((a.pacing.spend_usd() - b.pacing.spend_usd()).abs() < 1e-12);
}

/// Replicas fed disjoint parts of `obs`, each cutting a delta every `cut`
/// updates; returns the deltas in the order they would reach the log
/// (segments interleaved by replica) and the updates in that order.
fn replicate(
    base: &PolicySnapshot,
    obs: &[Obs],
    n: usize,
    cut: usize,
) -> (Vec<PolicyDelta>, Vec<Obs>) {
    let mut writers: Vec<PolicyWriter> = (0..n).map(|_| PolicyWriter::new(base.clone())).collect();
    let mut refs: Vec<PolicySnapshot> = vec![base.clone(); n];
    let mut segs: Vec<Vec<Obs>> = vec![Vec::new(); n];
    let (mut log, mut order) = (Vec::new(), Vec::new());
    for (t, o) in obs.iter().enumerate() {
        let r = t % n;
        feed(&mut writers[r], o.0, &o.1, o.2, o.3);
        segs[r].push(o.clone());
        if segs[r].len() == cut || t + n >= obs.len() {
            log.push(writers[r].state().delta_since(&refs[r]));
            refs[r] = writers[r].state().clone();
            order.append(&mut segs[r]);
        }
    }
    (log, order)
}

fn fold(base: &PolicySnapshot, log: &[PolicyDelta]) -> PolicySnapshot {
    log.iter().fold(base.clone(), |s, d| {
        let (next, unknown) = s.merge_delta(d).unwrap();
        assert!(unknown.is_empty());
        next
    })
}

fn single(base: &PolicySnapshot, obs: &[Obs]) -> PolicySnapshot {
    let mut w = PolicyWriter::new(base.clone());
    for o in obs {
        feed(&mut w, o.0, &o.1, o.2, o.3);
    }
    w.state().clone()
}

#[test]
fn without_forgetting_merged_deltas_equal_one_process_in_any_order() {
    let base = fresh(1.0);
    let obs = stream(600, 7);
    let (log, _) = replicate(&base, &obs, 3, 37);
    let merged = fold(&base, &log);
    let one = single(&base, &obs);
    assert_same_stats(&merged, &one, 1e-10);
    // The maps commute: another log order gives the same statistics.
    let mut reversed = log.clone();
    reversed.reverse();
    assert_same_stats(&fold(&base, &reversed), &merged, 1e-10);
    // And the merged coefficients are the ridge solution of the merged data.
    for (m, o) in merged.arms.iter().zip(&one.arms) {
        assert!(max_rel_diff(&m.quality.target.theta, &o.quality.target.theta) < 1e-6);
    }
}

#[test]
fn with_forgetting_the_merge_is_one_process_in_log_order() {
    let base = fresh(0.99);
    let obs = stream(400, 11);
    let (log, order) = replicate(&base, &obs, 3, 25);
    let merged = fold(&base, &log);
    assert_same_stats(&merged, &single(&base, &order), 1e-9);
    // Total decay and effective weight do not depend on the order at all.
    let real_time = single(&base, &obs);
    for (m, r) in merged.arms.iter().zip(&real_time.arms) {
        let (dm, dr) = (&m.quality.design, &r.quality.design);
        assert!((dm.log_decay - dr.log_decay).abs() < 1e-9);
        assert!((dm.weight - dr.weight).abs() < 1e-9 * dr.weight);
    }
}

#[test]
fn consecutive_deltas_compose_into_the_delta_of_the_whole_segment() {
    let base = fresh(0.97);
    let obs = stream(120, 5);
    let mut w = PolicyWriter::new(base.clone());
    for o in &obs[..50] {
        feed(&mut w, o.0, &o.1, o.2, o.3);
    }
    let mid = w.state().clone();
    for o in &obs[50..] {
        feed(&mut w, o.0, &o.1, o.2, o.3);
    }
    let whole = fold(&base, &[w.state().delta_since(&base)]);
    let parts = fold(
        &base,
        &[mid.delta_since(&base), w.state().delta_since(&mid)],
    );
    assert_same_stats(&whole, &parts, 1e-10);
    assert_same_stats(&whole, w.state(), 1e-10);
}

#[test]
fn a_delta_of_nothing_is_empty_and_merging_it_changes_no_statistic() {
    let base = fresh(0.99);
    let mut w = PolicyWriter::new(base.clone());
    for o in &stream(30, 3) {
        feed(&mut w, o.0, &o.1, o.2, o.3);
    }
    let s = w.state().clone();
    let nothing = s.delta_since(&s);
    assert!(nothing.is_empty());
    assert_eq!(nothing.updates(), 0);
    let (again, _) = s.merge_delta(&nothing).unwrap();
    assert_same_stats(&again, &s, 0.0);
}

#[test]
fn bad_deltas_are_refused_and_leave_the_state_alone() {
    let base = fresh(1.0);
    let mut w = PolicyWriter::new(base.clone());
    for o in &stream(20, 9) {
        feed(&mut w, o.0, &o.1, o.2, o.3);
    }
    let good = w.state().delta_since(&base);
    let mut wrong_d = good.clone();
    wrong_d.dimension = 6;
    assert!(matches!(
        base.merge_delta(&wrong_d),
        Err(DeltaError::Dimension { .. })
    ));
    let mut short = good.clone();
    if let Some(m) = short.arms[0].quality.as_mut() {
        m.gram.pop();
    }
    assert!(matches!(
        base.merge_delta(&short),
        Err(DeltaError::Corrupt(_))
    ));
    let mut growing = good.clone();
    if let Some(m) = growing.arms[0].quality.as_mut() {
        m.log_decay = 0.5;
    }
    assert!(base.merge_delta(&growing).is_err());
    let mut stranger = good.clone();
    stranger.arms[0].arm = "not-an-arm".into();
    let (_, unknown) = base.merge_delta(&stranger).unwrap();
    assert_eq!(unknown, vec!["not-an-arm".to_owned()]);
    assert_same_stats(&base, &fresh(1.0), 0.0);
}

#[test]
fn rebuilt_states_keep_local_drift_and_version() {
    let base = fresh(1.0);
    let mut w = PolicyWriter::new(base.clone());
    for o in &stream(40, 13) {
        feed(&mut w, o.0, &o.1, o.2, o.3);
    }
    w.publish();
    let live = w.state().clone();
    let mut arm = (*live.arms[1]).clone();
    arm.quality_drift.hold = 7;
    let mut local = live.clone();
    local.arms[1] = std::sync::Arc::new(arm);
    let (mut rebuilt, _) = base.merge_delta(&live.delta_since(&base)).unwrap();
    rebuilt.keep_local_state_of(&local);
    assert_eq!(rebuilt.version(), live.version());
    assert!(rebuilt.arms[1].drift_flags().quality);
    assert_same_stats(&rebuilt, &live, 1e-10);
}
