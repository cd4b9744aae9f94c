//! The product bar: on the validation file, with a budget of 3/4 of
//! mistral-large's mean cost, LinUCB and Thompson land within 10% of the
//! target cost and at least 0.01 above the single-model convex hull.

use switchboard::bandit::{Algorithm, BudgetConfig, Objective, PolicyConfig};
use switchboard::sim::replay::{load_dataset, replay, ReplayArm};

const TARGET: f64 = 0.0004;

fn arms() -> Vec<ReplayArm> {
    [
        "meta-llama/llama-3.1-8b-instruct",
        "mistralai/mistral-large-2512",
        "google/gemini-2.5-pro",
    ]
    .iter()
    .map(|n| ReplayArm {
        name: n.to_string(),
        upstream_name: n.to_string(),
    })
    .collect()
}

fn check(algorithm: Algorithm) {
    let data = load_dataset(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/routing-val.jsonl"
    ))
    .unwrap();
    assert_eq!(data.records.len(), 1785);
    let config = PolicyConfig {
        algorithm,
        ..PolicyConfig::default()
    };
    let budget = BudgetConfig {
        target_usd_per_request: Some(TARGET),
    };
    let report = replay(&data, &arms(), &config, Objective::default(), budget, 0..5).unwrap();
    println!("{report}");
    let cost = report.cost.mean;
    assert!(
        (cost - TARGET).abs() <= 0.1 * TARGET,
        "{algorithm:?}: mean cost {cost} not within 10% of {TARGET}"
    );
    let hull = report.hull_at_cost.unwrap();
    assert!(
        report.reward.mean >= hull + 0.01,
        "{algorithm:?}: mean reward {:.4} is not 0.01 above the hull {hull:.4}",
        report.reward.mean
    );
    // Sanity of the baselines the bar is measured against.
    assert!((report.single_models[1].reward - 0.925).abs() < 0.001);
    assert!((report.oracle.reward - 0.964).abs() < 0.001);
}

#[test]
fn linucb_beats_the_single_model_hull_on_budget() {
    check(Algorithm::Linucb);
}

#[test]
fn thompson_beats_the_single_model_hull_on_budget() {
    check(Algorithm::Thompson);
}
