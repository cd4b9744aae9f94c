//! Snapshots carrying a learned projection (`projected.rs`): they take raw
//! vectors everywhere, persist exactly, refuse wrong shapes, and their
//! deltas live in the projected space.

use super::*;
use crate::features::Projection;

/// Raw dimension of these tests: bias + 5 features.
const D: usize = 6;

/// `rows x (D - 1)`: row r averages raw features r and r + 1.
fn projection(rows: usize) -> Projection {
    let cols = D - 1;
    let mut matrix = vec![0.0; rows * cols];
    for r in 0..rows {
        matrix[r * cols + r] = 0.5;
        matrix[r * cols + (r + 1) % cols] = 0.5;
    }
    Projection { rows, cols, matrix }
}

fn projected(rows: usize) -> PolicySnapshot {
    let s = spec(D, 3, PolicyConfig::default(), BudgetConfig::default());
    PolicySnapshot::from_fitted_projected(&s, "p", Some(projection(rows)), vec![]).unwrap()
}

#[test]
fn a_projected_snapshot_decides_and_learns_on_raw_vectors() {
    let snap = projected(2);
    assert_eq!(snap.dimension(), D);
    assert_eq!(snap.inner_dimension(), 3);
    assert_eq!(snap.arm(0).unwrap().quality.design.d, 3);
    let mut w = PolicyWriter::new(snap);
    let mut rng = StdRng::seed_from_u64(3);
    // Arm 1 is clearly best; the writer sees raw 6-entry vectors only.
    for t in 0..600 {
        let x = context(&mut rng, D);
        let arm = t % 3;
        feed(&mut w, arm, &x, if arm == 1 { 0.9 } else { 0.2 }, 1e-4);
    }
    w.publish();
    let s = w.handle().load_full();
    assert_eq!(s.arm(1).unwrap().counts().feedback, 200);
    let x = context(&mut rng, D);
    let all = [0, 1, 2];
    let req = DecisionRequest::new(&x, &all, Objective::default());
    let d = s.decide(&req, &mut rng).unwrap();
    let best = d
        .receipt
        .arms
        .iter()
        .max_by(|a, b| a.quality.total_cmp(&b.quality))
        .unwrap();
    assert_eq!(best.arm, 1, "{:?}", d.receipt);
    assert!((best.quality - 0.9).abs() < 0.1, "{}", best.quality);
    let (q, _, _) = s.predict(1, &x).unwrap();
    assert!((q - best.quality).abs() < 1e-12);
    // A projected-width vector is not what the snapshot takes.
    let short = vec![1.0; 3];
    let bad = DecisionRequest::new(&short, &all, Objective::default());
    assert!(matches!(
        s.decide(&bad, &mut rng),
        Err(DecideError::Dimension {
            expected: D,
            found: 3
        })
    ));
    assert!(s.predict(1, &short).is_none());
}

#[test]
fn a_projected_snapshot_round_trips_exactly_and_old_json_still_loads() {
    let mut w = PolicyWriter::new(projected(2));
    let mut rng = StdRng::seed_from_u64(5);
    for t in 0..50 {
        let x = context(&mut rng, D);
        feed(&mut w, t % 3, &x, 0.5, 1e-4);
    }
    let snap = w.state().clone();
    let text = snap.to_json().unwrap();
    assert!(text.contains("\"projection\""), "{text}");
    let back = PolicySnapshot::from_json(&text).unwrap();
    assert_eq!(back, snap);
    assert_eq!(back.to_json().unwrap(), text);
    assert_eq!(back.projection(), Some(&projection(2)));

    // A snapshot without a projection writes no such field, and JSON from
    // before the field existed loads unchanged.
    let plain = PolicySnapshot::new(&spec(
        D,
        3,
        PolicyConfig::default(),
        BudgetConfig::default(),
    ))
    .unwrap();
    let old = plain.to_json().unwrap();
    assert!(!old.contains("projection"), "{old}");
    let loaded = PolicySnapshot::from_json(&old).unwrap();
    assert!(loaded.projection().is_none());
    assert_eq!(loaded.inner_dimension(), D);
    assert_eq!(loaded.to_json().unwrap(), old);
}

#[test]
fn validate_refuses_a_projection_of_the_wrong_width_or_with_non_finite_entries() {
    let s = spec(D, 2, PolicyConfig::default(), BudgetConfig::default());
    let mut wide = projection(2);
    wide.cols = D;
    wide.matrix = vec![0.1; 2 * D];
    let e = PolicySnapshot::from_fitted_projected(&s, "p", Some(wide), vec![]).unwrap_err();
    assert!(matches!(e, SnapshotError::Projection(_)), "{e}");

    let mut nan = projection(2);
    nan.matrix[3] = f64::NAN;
    let e = PolicySnapshot::from_fitted_projected(&s, "p", Some(nan), vec![]).unwrap_err();
    assert!(matches!(e, SnapshotError::Projection(_)), "{e}");

    // Stored JSON whose projection does not fit the arms' width is refused.
    let text = projected(2).to_json().unwrap();
    let three_rows = serde_json::to_value(projection(3)).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["projection"]["rows"] = three_rows["rows"].clone();
    v["projection"]["matrix"] = serde_json::Value::String(
        projection(3)
            .matrix
            .iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let e = PolicySnapshot::from_json(&v.to_string()).unwrap_err();
    assert!(matches!(e, SnapshotError::CorruptArm(_)), "{e}");
}

#[test]
fn new_arms_of_a_projected_snapshot_start_in_the_projected_space() {
    let snap = projected(2);
    let mut s = spec(D, 4, PolicyConfig::default(), BudgetConfig::default());
    s.arms.reverse();
    let prepared = snap.clone().prepare(&s).unwrap();
    assert_eq!(prepared.arm_count(), 4);
    assert_eq!(prepared.projection(), snap.projection());
    let added = prepared.arm(prepared.arm_index("arm-3").unwrap()).unwrap();
    assert_eq!(added.quality.design.d, 3);
    let reshaped = prepared
        .reshape(&spec(
            D,
            2,
            PolicyConfig::default(),
            BudgetConfig::default(),
        ))
        .unwrap();
    assert_eq!(reshaped.arm_count(), 2);
    assert_eq!(reshaped.inner_dimension(), 3);
}

#[test]
fn deltas_live_in_the_projected_space_and_mismatches_are_refused() {
    let base = projected(2);
    let mut w = PolicyWriter::new(base.clone());
    let mut rng = StdRng::seed_from_u64(9);
    for t in 0..30 {
        let x = context(&mut rng, D);
        feed(&mut w, t % 3, &x, 0.7, 1e-4);
    }
    let delta = w.state().delta_since(&base);
    assert_eq!(delta.dimension, 3);
    assert_eq!(delta.updates(), 60);
    let (merged, unknown) = base.merge_delta(&delta).unwrap();
    assert!(unknown.is_empty());
    assert_eq!(merged.arm(0).unwrap().counts().feedback, 10);

    // Raw-width delta on a projected snapshot, and the other way round.
    let plain = PolicySnapshot::new(&spec(
        D,
        3,
        PolicyConfig::default(),
        BudgetConfig::default(),
    ))
    .unwrap();
    let mut raw = PolicyWriter::new(plain.clone());
    for t in 0..10 {
        let x = context(&mut rng, D);
        feed(&mut raw, t % 3, &x, 0.7, 1e-4);
    }
    let raw_delta = raw.state().delta_since(&plain);
    assert_eq!(raw_delta.dimension, D);
    assert!(matches!(
        base.merge_delta(&raw_delta),
        Err(DeltaError::Dimension {
            expected: 3,
            found: D
        })
    ));
    assert!(matches!(
        plain.merge_delta(&delta),
        Err(DeltaError::Dimension {
            expected: D,
            found: 3
        })
    ));
    // Same width, another projection: another space.
    let mut other = projection(2);
    other.matrix[0] = 0.25;
    let s = spec(D, 3, PolicyConfig::default(), BudgetConfig::default());
    let other = PolicySnapshot::from_fitted_projected(&s, "q", Some(other), vec![]).unwrap();
    assert!(matches!(
        other.merge_delta(&delta),
        Err(DeltaError::Fingerprint)
    ));
    // A delta whose declared dimension lies about its contents.
    let mut lying = delta.clone();
    lying.dimension = D;
    lying.feature_fingerprint = plain.inner_fingerprint();
    assert!(matches!(
        plain.merge_delta(&lying),
        Err(DeltaError::Corrupt(_))
    ));
    // Cutting across a swap (no common ancestor) does not panic: nothing
    // of the other space is shipped.
    let across = w.state().delta_since(&plain);
    assert_eq!(across.updates(), 0);
}
