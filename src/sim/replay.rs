//! Offline replay of a full-information routing dataset through the live
//! policy code (the protocol of `shared/data/README.md`).
//!
//! Owns: the JSONL dataset format, the replay loop, baselines (single
//! models, uniform random, per-prompt oracle, single-model upper convex
//! hull) and the report. Must not reimplement any policy logic: decisions go
//! through `PolicySnapshot::decide` on snapshots published by a
//! `PolicyWriter`, and updates through `apply_outcome` / `apply_quality`,
//! exactly as in the gateway. Invariants: only the chosen arm's reward and
//! cost are revealed to the policy; the prompt order depends only on the
//! seed; features are computed once per prompt (they are deterministic).
//! Cost: O(seeds * prompts * K d^2).

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::bandit::{
    Algorithm, ArmSpec, BudgetConfig, DecideError, DecisionRequest, DriftSignal, Objective,
    Outcome, PolicyConfig, PolicySnapshot, PolicyWriter, Quality, RouteSpec, SnapshotError,
    UpdateError,
};
use crate::domain::{ModelName, Reward, Usd};
use crate::features::{Encoder, FeatureError, FeatureSpec, Features, PromptView};

mod report;
pub use report::{hull, Spread};

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct RawArm {
    reward: f64,
    cost: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct RawRow {
    prompt: String,
    #[serde(default)]
    source: String,
    arms: HashMap<String, RawArm>,
}

/// One prompt with every arm's (validated) reward and cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub prompt: String,
    pub source: String,
    pub arms: HashMap<String, (Reward, Usd)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dataset {
    pub records: Vec<Record>,
}

/// A route arm; dataset arm ids match either name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayArm {
    pub name: String,
    pub upstream_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading dataset: {0}")]
    Io(#[from] std::io::Error),
    #[error("dataset line {line}: {msg}")]
    Parse { line: usize, msg: String },
    #[error("dataset is empty")]
    Empty,
    #[error("dataset line {line} has no result for arm {arm:?}")]
    MissingArm { line: usize, arm: String },
    #[error("arm name: {0}")]
    Name(String),
    #[error(transparent)]
    Feature(#[from] FeatureError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Decide(#[from] DecideError),
    #[error(transparent)]
    Update(#[from] UpdateError),
}

pub fn load_dataset(path: impl AsRef<Path>) -> Result<Dataset, ReplayError> {
    let text = std::fs::read_to_string(path)?;
    let mut records = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |msg: String| ReplayError::Parse { line: i + 1, msg };
        let raw: RawRow = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let mut arms = HashMap::new();
        for (k, a) in raw.arms {
            let r = Reward::new(a.reward).map_err(|e| bad(e.to_string()))?;
            let c = Usd::new(a.cost).map_err(|e| bad(e.to_string()))?;
            arms.insert(k, (r, c));
        }
        records.push(Record {
            prompt: raw.prompt,
            source: raw.source,
            arms,
        });
    }
    if records.is_empty() {
        return Err(ReplayError::Empty);
    }
    Ok(Dataset { records })
}

/// The opening stretch of a pass over which `early_reward` is measured.
pub const EARLY_PROMPTS: usize = 200;

/// (mean reward, mean cost) of one way of routing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub name: String,
    pub reward: f64,
    pub cost: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub reward: f64,
    pub cost: f64,
    /// Traffic share per arm, in `ReplayReport::arms` order.
    pub shares: Vec<f64>,
    pub greedy_share: f64,
    /// Mean reward and cost over the first `EARLY_PROMPTS` of the pass:
    /// how well the policy starts (cold versus warm).
    pub early_reward: f64,
    pub early_cost: f64,
    /// Mean cost over the second half of the pass (pacing steady state).
    pub late_cost: f64,
    pub final_lambda: f64,
    /// Drift alarms raised (quality, cost); a stationary replay should raise few.
    pub drift_alarms: (usize, usize),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    pub algorithm: Algorithm,
    pub prompts: usize,
    pub target_usd_per_request: Option<f64>,
    pub arms: Vec<String>,
    pub seeds: Vec<SeedResult>,
    pub reward: Spread,
    pub cost: Spread,
    pub early_reward: Spread,
    pub early_cost: Spread,
    /// Per seed, the opening's reward minus the single-model hull at the
    /// opening's cost (reward at equal cost; seeds cheaper than every
    /// single model are left out).
    pub early_minus_hull: Spread,
    pub shares: Vec<f64>,
    pub single_models: Vec<Point>,
    pub uniform_random: Point,
    pub oracle: Point,
    /// Best mix of single models at the router's mean cost (None if the
    /// router is cheaper than the cheapest model).
    pub hull_at_cost: Option<f64>,
    pub reward_minus_hull: Option<f64>,
}

/// Replays with the default feature spec.
pub fn replay(
    dataset: &Dataset,
    arms: &[ReplayArm],
    policy_config: &PolicyConfig,
    objective: Objective,
    budget: BudgetConfig,
    seeds: Range<u64>,
) -> Result<ReplayReport, ReplayError> {
    replay_with_features(
        dataset,
        arms,
        &FeatureSpec::default(),
        policy_config,
        objective,
        budget,
        seeds,
    )
}

/// Replays from a cold start (every arm at its prior).
pub fn replay_with_features(
    dataset: &Dataset,
    arms: &[ReplayArm],
    features: &FeatureSpec,
    policy_config: &PolicyConfig,
    objective: Objective,
    budget: BudgetConfig,
    seeds: Range<u64>,
) -> Result<ReplayReport, ReplayError> {
    replay_route(
        dataset,
        &ReplayRoute {
            arms,
            features,
            config: policy_config,
            objective,
            budget,
            start: None,
        },
        seeds,
    )
}

/// A route as the replay runs it.
#[derive(Debug, Clone)]
pub struct ReplayRoute<'a> {
    pub arms: &'a [ReplayArm],
    pub features: &'a FeatureSpec,
    pub config: &'a PolicyConfig,
    pub objective: Objective,
    pub budget: BudgetConfig,
    /// Learned state every seed starts from (e.g. a warm-start version),
    /// prepared against the route; `None` starts cold.
    pub start: Option<&'a PolicySnapshot>,
}

pub fn replay_route(
    dataset: &Dataset,
    route: &ReplayRoute<'_>,
    seeds: Range<u64>,
) -> Result<ReplayReport, ReplayError> {
    let ReplayRoute {
        arms,
        features,
        config: policy_config,
        objective,
        budget,
        start,
    } = route.clone();
    if dataset.records.is_empty() {
        return Err(ReplayError::Empty);
    }
    let names = arms
        .iter()
        .map(|a| ModelName::parse(&a.name).map_err(|e| ReplayError::Name(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    // outcomes[r][k] = (reward, cost) of arm k on record r.
    let mut outcomes = Vec::with_capacity(dataset.records.len());
    for (line, rec) in dataset.records.iter().enumerate() {
        let row = arms
            .iter()
            .map(|a| {
                rec.arms
                    .get(&a.name)
                    .or_else(|| rec.arms.get(&a.upstream_name))
                    .map(|(r, c)| (r.get(), c.get()))
                    .ok_or_else(|| ReplayError::MissingArm {
                        line: line + 1,
                        arm: a.name.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        outcomes.push(row);
    }
    let encoder = Encoder::new(features.clone())?;
    let xs: Vec<Features> = dataset
        .records
        .iter()
        .map(|r| encoder.features(&PromptView::single_user(&r.prompt)))
        .collect();
    let spec = RouteSpec {
        dimension: encoder.dimension(),
        feature_fingerprint: encoder.fingerprint(),
        config: policy_config.clone(),
        budget,
        arms: names.iter().cloned().map(ArmSpec::new).collect(),
    };
    let start = match start {
        Some(s) => s.clone().prepare(&spec)?,
        None => PolicySnapshot::new(&spec)?,
    };
    let mut results = Vec::new();
    for seed in seeds {
        let run = Run {
            start: &start,
            names: &names,
            xs: &xs,
            outcomes: &outcomes,
            objective,
        };
        results.push(run_seed(seed, &run)?);
    }
    let k = arms.len();
    let n = outcomes.len() as f64;
    let single_models: Vec<Point> = (0..k)
        .map(|j| Point {
            name: arms[j].name.clone(),
            reward: outcomes.iter().map(|o| o[j].0).sum::<f64>() / n,
            cost: outcomes.iter().map(|o| o[j].1).sum::<f64>() / n,
        })
        .collect();
    let uniform_random = Point {
        name: "uniform random".into(),
        reward: single_models.iter().map(|p| p.reward).sum::<f64>() / k as f64,
        cost: single_models.iter().map(|p| p.cost).sum::<f64>() / k as f64,
    };
    let (mut or, mut oc) = (0.0, 0.0);
    for o in &outcomes {
        let best = o.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        let cheapest = o
            .iter()
            .filter(|p| p.0 >= best)
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min);
        or += best;
        oc += cheapest;
    }
    let oracle = Point {
        name: "oracle".into(),
        reward: or / n,
        cost: oc / n,
    };
    let reward = Spread::of(&results.iter().map(|r| r.reward).collect::<Vec<_>>());
    let cost = Spread::of(&results.iter().map(|r| r.cost).collect::<Vec<_>>());
    let early_reward = Spread::of(&results.iter().map(|r| r.early_reward).collect::<Vec<_>>());
    let early_cost = Spread::of(&results.iter().map(|r| r.early_cost).collect::<Vec<_>>());
    let shares = (0..k)
        .map(|j| results.iter().map(|r| r.shares[j]).sum::<f64>() / results.len().max(1) as f64)
        .collect();
    let hull_at_cost = hull(&single_models, cost.mean);
    let early_minus_hull = Spread::of(
        &results
            .iter()
            .filter_map(|r| hull(&single_models, r.early_cost).map(|h| r.early_reward - h))
            .collect::<Vec<_>>(),
    );
    Ok(ReplayReport {
        algorithm: policy_config.algorithm,
        prompts: outcomes.len(),
        target_usd_per_request: budget.target_usd_per_request,
        arms: arms.iter().map(|a| a.name.clone()).collect(),
        reward_minus_hull: hull_at_cost.map(|h| reward.mean - h),
        seeds: results,
        reward,
        cost,
        early_reward,
        early_cost,
        early_minus_hull,
        shares,
        single_models,
        uniform_random,
        oracle,
        hull_at_cost,
    })
}

/// What every seed's pass shares.
struct Run<'a> {
    start: &'a PolicySnapshot,
    names: &'a [ModelName],
    xs: &'a [Features],
    outcomes: &'a [Vec<(f64, f64)>],
    objective: Objective,
}

fn run_seed(seed: u64, run: &Run<'_>) -> Result<SeedResult, ReplayError> {
    let Run {
        start,
        names,
        xs,
        outcomes,
        objective,
    } = *run;
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    // Decisions draw from their own stream so the order is seed-only.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x005e_ed0f_5107_c4a1);
    let mut writer = PolicyWriter::new(start.clone());
    let handle = writer.handle();
    let eligible: Vec<usize> = (0..names.len()).collect();
    let mut counts = vec![0usize; names.len()];
    let (mut reward, mut cost, mut late_cost, mut greedy) = (0.0, 0.0, 0.0, 0usize);
    let (mut early_reward, mut early_cost) = (0.0, 0.0);
    let early = order.len().min(EARLY_PROMPTS);
    let mut alarms = (0usize, 0usize);
    let half = order.len() / 2;
    for (t, &r) in order.iter().enumerate() {
        let snap = handle.load();
        let d = snap.decide(
            &DecisionRequest::new(&xs[r], &eligible, objective),
            &mut rng,
        )?;
        let (rw, c) = outcomes[r][d.arm];
        counts[d.arm] += 1;
        greedy += usize::from(d.greedy);
        reward += rw;
        cost += c;
        if t < early {
            early_reward += rw;
            early_cost += c;
        }
        if t >= half {
            late_cost += c;
        }
        let arm = names[d.arm].clone();
        let x = xs[r].clone();
        let usd = Usd::new(c).map_err(|e| ReplayError::Name(e.to_string()))?;
        let rew = Reward::new(rw).map_err(|e| ReplayError::Name(e.to_string()))?;
        let o = Outcome {
            arm: arm.clone(),
            x: x.clone(),
            cost_usd: usd,
            latency_s: 0.0,
            ok: true,
        };
        let mut events = writer.apply_outcome(&o)?.drift;
        events.extend(
            writer
                .apply_quality(&Quality {
                    arm,
                    x,
                    reward: rew,
                })?
                .drift,
        );
        for e in events {
            match e.signal {
                DriftSignal::Quality => alarms.0 += 1,
                DriftSignal::Cost => alarms.1 += 1,
            }
        }
        writer.publish();
    }
    let n = order.len() as f64;
    Ok(SeedResult {
        seed,
        reward: reward / n,
        cost: cost / n,
        shares: counts.iter().map(|&c| c as f64 / n).collect(),
        greedy_share: greedy as f64 / n,
        early_reward: early_reward / early.max(1) as f64,
        early_cost: early_cost / early.max(1) as f64,
        late_cost: late_cost / (order.len() - half).max(1) as f64,
        final_lambda: writer.state().pacing().lambda(),
        drift_alarms: alarms,
    })
}
