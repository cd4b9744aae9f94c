//! Replay report: spread statistics, the single-model hull and the table.
//!
//! Owns: how replay numbers are summarised and printed. Must not import the
//! bandit: it only formats numbers the replay produced. Invariant: `hull`
//! is the best reward any mix of single models reaches at a mean cost (the
//! upper concave envelope, non-decreasing in cost). O(K^2) per hull query.

use std::fmt;

use serde::Serialize;

use super::{Point, ReplayReport};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub(crate) fn of(v: &[f64]) -> Self {
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Self {
            mean,
            std: var.sqrt(),
            min,
            max,
        }
    }
}

/// Upper concave envelope of single-model (cost, reward) points at `cost`:
/// the best reward any mix of single models achieves with mean cost <= cost.
pub fn hull(points: &[Point], cost: f64) -> Option<f64> {
    let mut best: Option<f64> = None;
    let mut offer = |v: f64| best = Some(best.map_or(v, |b: f64| b.max(v)));
    for a in points {
        if a.cost <= cost {
            offer(a.reward);
        }
        for b in points {
            if a.cost <= cost && cost <= b.cost && b.cost > a.cost {
                let w = (cost - a.cost) / (b.cost - a.cost);
                offer(a.reward + w * (b.reward - a.reward));
            }
        }
    }
    best
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |s: &str| {
            s.rsplit('/')
                .next()
                .unwrap_or(s)
                .chars()
                .take(22)
                .collect::<String>()
        };
        let target = self
            .target_usd_per_request
            .map_or("none".into(), |t| format!("${t:.6}"));
        writeln!(
            f,
            "replay: {:?}, {} prompts, target {target}/request",
            self.algorithm, self.prompts
        )?;
        write!(
            f,
            "{:>6} {:>8} {:>11} {:>8} {:>11} {:>10} {:>7} {:>7} {:>7}",
            "seed",
            "reward",
            "cost $",
            "early r",
            "early $",
            "late $",
            "greedy",
            "lambda",
            "alarms"
        )?;
        for a in &self.arms {
            write!(f, " {:>22}", short(a))?;
        }
        writeln!(f)?;
        for s in &self.seeds {
            write!(
                f,
                "{:>6} {:>8.4} {:>11.7} {:>8.4} {:>11.7} {:>10.7} {:>7.3} {:>7.4} {:>7}",
                s.seed,
                s.reward,
                s.cost,
                s.early_reward,
                s.early_cost,
                s.late_cost,
                s.greedy_share,
                s.final_lambda,
                format!("{}/{}", s.drift_alarms.0, s.drift_alarms.1)
            )?;
            for sh in &s.shares {
                write!(f, " {:>22.3}", sh)?;
            }
            writeln!(f)?;
        }
        write!(
            f,
            "{:>6} {:>8.4} {:>11.7} {:>8.4} {:>11.7}",
            "mean", self.reward.mean, self.cost.mean, self.early_reward.mean, self.early_cost.mean
        )?;
        writeln!(
            f,
            "   (reward sd {:.4}, range {:.4}..{:.4}; cost sd {:.7})",
            self.reward.std, self.reward.min, self.reward.max, self.cost.std
        )?;
        writeln!(f, "baselines (reward @ mean cost):")?;
        for p in self
            .single_models
            .iter()
            .chain([&self.uniform_random, &self.oracle])
        {
            writeln!(
                f,
                "  {:<34} {:.4} @ ${:.7}",
                short(&p.name),
                p.reward,
                p.cost
            )?;
        }
        writeln!(
            f,
            "  first {} prompts: reward {:.4} at ${:.7}, {:+.4} against the hull at that cost",
            super::EARLY_PROMPTS.min(self.prompts),
            self.early_reward.mean,
            self.early_cost.mean,
            self.early_minus_hull.mean
        )?;
        match (self.hull_at_cost, self.reward_minus_hull) {
            (Some(h), Some(d)) => writeln!(
                f,
                "  single-model hull at ${:.7}: {h:.4}  -> router {d:+.4}",
                self.cost.mean
            ),
            _ => writeln!(f, "  router is cheaper than every single model"),
        }
    }
}
