//! Warm start from labelled data: priors fitted on one half of
//! `data/routing-val.jsonl` (through `switchboard train --labelled`'s code
//! path, stored in Postgres as the route's active version), then the replay
//! protocol on the file's other half, once from that stored version and once
//! from a cold policy (same seeds, same prompt orders). The warm start must
//! open better: over the first `EARLY_PROMPTS` prompts, a reward further
//! above the single-model hull at the cost spent, at no higher cost; and end
//! further above the hull over the whole pass.

use switchboard::bandit::{BudgetConfig, Objective, PolicySnapshot};
use switchboard::config::{self, Env};
use switchboard::gateway::learning::policy_config;
use switchboard::sim::replay::{
    load_dataset, replay_route, Dataset, ReplayArm, ReplayReport, ReplayRoute, EARLY_PROMPTS,
};
use switchboard::store::Store;
use switchboard_training::job::RouteSetup;
use switchboard_training::warm::warm_start;

use crate::helpers::fresh_postgres;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/routing-val.jsonl");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/routing-val.toml");

fn replay(data: &Dataset, config: &config::Config, start: Option<&PolicySnapshot>) -> ReplayReport {
    let r = config
        .routes
        .iter()
        .find(|r| r.name.as_str() == "auto")
        .unwrap();
    let arms: Vec<ReplayArm> = r
        .models
        .iter()
        .map(|m| {
            let c = config.models.iter().find(|c| &c.name == m).unwrap();
            ReplayArm {
                name: m.to_string(),
                upstream_name: c.upstream_name().to_owned(),
            }
        })
        .collect();
    let features = r.features.clone().unwrap_or_default();
    let pc = policy_config(r);
    let route = ReplayRoute {
        arms: &arms,
        features: &features,
        config: &pc,
        objective: Objective {
            cost_weight: r.objective.cost_weight,
            latency_weight: r.objective.latency_weight,
        },
        budget: BudgetConfig {
            target_usd_per_request: r.budget.map(|b| b.target_usd_per_request),
        },
        start,
    };
    replay_route(data, &route, 0..5).unwrap()
}

#[tokio::test]
async fn warm_start_from_one_half_opens_better_than_cold_on_the_other_half() {
    let text = std::fs::read_to_string(DATA).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1785);
    let (first, second) = lines.split_at(lines.len() / 2);
    let dir = tempfile::tempdir().unwrap();
    let (train_path, replay_path) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    std::fs::write(&train_path, first.join("\n")).unwrap();
    std::fs::write(&replay_path, second.join("\n")).unwrap();

    let config = config::load(Some(std::path::Path::new(CONFIG)), &Env::new()).unwrap();
    let store = Store::connect_lazy(&fresh_postgres().await).unwrap();
    store.migrate().await.unwrap();
    let setup = RouteSetup::new(&config, "auto").unwrap();
    let report = warm_start(&store, &config, &setup, &train_path)
        .await
        .unwrap();
    assert_eq!(report.prompts, first.len());
    // The file names arms by upstream name; all three match the route.
    assert_eq!(report.matched.len(), 3, "{:?}", report.matched);
    assert!(report.arms.iter().all(|a| a.quality.is_some()));

    // Serving would load exactly this: the route's active stored version.
    let row = store.active_policy("auto").await.unwrap().unwrap();
    assert_eq!(row.version, report.version);
    let warm_snapshot = PolicySnapshot::from_json(&row.parameters).unwrap();
    store.close().await;

    let data = load_dataset(&replay_path).unwrap();
    assert_eq!(data.records.len(), second.len());
    let cold = replay(&data, &config, None);
    let warm = replay(&data, &config, Some(&warm_snapshot));
    println!(
        "cold start:\n{cold}\nwarm start from {}:\n{warm}",
        row.version
    );
    // Reward at equal cost: each opening against the single-model hull at
    // the cost it spent (the budget route trades one for the other).
    let (cold_open, warm_open) = (cold.early_minus_hull.mean, warm.early_minus_hull.mean);
    println!(
        "first {EARLY_PROMPTS} prompts: cold {:.4} @ ${:.6} ({cold_open:+.4} vs hull), \
         warm {:.4} @ ${:.6} ({warm_open:+.4} vs hull); whole pass: cold {:.4} @ ${:.6}, \
         warm {:.4} @ ${:.6}",
        cold.early_reward.mean,
        cold.early_cost.mean,
        warm.early_reward.mean,
        warm.early_cost.mean,
        cold.reward.mean,
        cold.cost.mean,
        warm.reward.mean,
        warm.cost.mean
    );
    assert!(
        warm_open > cold_open + 0.01,
        "warm start opens {warm_open:+.4} against the hull, cold {cold_open:+.4}"
    );
    assert!(
        warm.early_cost.mean <= cold.early_cost.mean,
        "warm start buys its opening: ${:.6} vs ${:.6}",
        warm.early_cost.mean,
        cold.early_cost.mean
    );
    let (c, w) = (
        cold.reward_minus_hull.unwrap(),
        warm.reward_minus_hull.unwrap(),
    );
    assert!(w > c, "over the pass: warm {w:+.4}, cold {c:+.4} vs hull");
}
