//! `switchboard replay`: the offline replay protocol (data/README.md) run
//! through the same policy code as `serve`, for one route of a config file.

use std::path::Path;

use anyhow::{bail, Context};

use crate::bandit::{BudgetConfig, Objective};
use crate::config::{self, Env};
use crate::gateway::learning::policy_config;
use crate::sim::replay::{load_dataset, replay_with_features, ReplayArm};

pub fn run(
    config_path: &Path,
    route: &str,
    data: &Path,
    seed: u64,
    seeds: u64,
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
    if seeds == 0 {
        bail!("--seeds must be at least 1");
    }
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
    let report = replay_with_features(
        &dataset,
        &arms,
        &r.features.clone().unwrap_or_default(),
        &policy_config(r),
        Objective {
            cost_weight: r.objective.cost_weight,
            latency_weight: r.objective.latency_weight,
        },
        BudgetConfig {
            target_usd_per_request: r.budget.map(|b| b.target_usd_per_request),
        },
        seed..seed + seeds,
    )
    .context("replaying")?;
    println!("{report}");
    Ok(())
}
