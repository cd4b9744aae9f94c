//! `switchboard replay`: the offline replay protocol (data/README.md) run
//! through the same policy code as `serve`, for one route of a config file,
//! from a cold start or from a stored policy version (`--start-from V`, read
//! from `DATABASE_URL`), e.g. to compare a warm start with a cold one.

use std::path::Path;

use anyhow::{bail, Context};

use crate::bandit::{BudgetConfig, Objective, PolicySnapshot};
use crate::config::{self, Env};
use crate::gateway::learning::policy_config;
use crate::sim::replay::{load_dataset, replay_route, ReplayArm, ReplayRoute};
use crate::startup::database_url;
use crate::store::Store;

pub async fn run(
    config_path: &Path,
    route: &str,
    data: &Path,
    seeds: std::ops::Range<u64>,
    start_from: Option<&str>,
    env: &Env,
) -> anyhow::Result<()> {
    let config = config::load(Some(config_path), env)?;
    let Some(r) = config.routes.iter().find(|r| r.name.as_str() == route) else {
        bail!(
            "{}: no route named {route:?} (routes: {})",
            config_path.display(),
            config
                .routes
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if seeds.is_empty() {
        bail!("--seeds must be at least 1");
    }
    let start = match start_from {
        Some(v) => Some(stored_version(env, route, v).await?),
        None => None,
    };
    let arms: Vec<ReplayArm> = r
        .models
        .iter()
        .map(|m| {
            let upstream = config
                .models
                .iter()
                .find(|c| &c.name == m)
                .map(|c| c.upstream_name().to_owned())
                .unwrap_or_else(|| m.as_str().to_owned());
            ReplayArm {
                name: m.as_str().to_owned(),
                upstream_name: upstream,
            }
        })
        .collect();
    let dataset = load_dataset(data).with_context(|| format!("reading {}", data.display()))?;
    let features = r.features.clone().unwrap_or_default();
    let config = policy_config(r);
    let replay = ReplayRoute {
        arms: &arms,
        features: &features,
        config: &config,
        objective: Objective {
            cost_weight: r.objective.cost_weight,
            latency_weight: r.objective.latency_weight,
        },
        budget: BudgetConfig {
            target_usd_per_request: r.budget.map(|b| b.target_usd_per_request),
        },
        start: start.as_ref(),
    };
    let report = replay_route(&dataset, &replay, seeds).context("replaying")?;
    if let Some(v) = start_from {
        println!("starting every pass from policy version {v}");
    }
    println!("{report}");
    Ok(())
}

/// A stored version of `route`, parsed (the replay prepares it).
async fn stored_version(env: &Env, route: &str, version: &str) -> anyhow::Result<PolicySnapshot> {
    let store = Store::connect_lazy(&database_url(env))?;
    let row = store.policy(version).await;
    store.close().await;
    let Some(row) = row.context("reading the policy version")? else {
        bail!("--start-from: no policy version {version:?} in the database");
    };
    if row.route != route {
        bail!(
            "--start-from: version {version} belongs to route {:?}, not {route:?}",
            row.route
        );
    }
    PolicySnapshot::from_json(&row.parameters)
        .with_context(|| format!("--start-from: version {version} is not a valid snapshot"))
}
