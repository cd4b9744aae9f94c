//! Running tallies of the demo's traffic as the client saw it: answers per
//! model, cost, reward, latency, errors, a recent window (so a learning
//! policy's shift shows), and what each single model and the oracle would
//! have scored on the same prompts. [`Stats::summary`] turns them into plain
//! numbers for the report.

use std::collections::{BTreeMap, VecDeque};

use super::dataset::{Dataset, Row};

/// How many of the latest answers the "recent" share looks at.
pub const RECENT_WINDOW: usize = 200;

#[derive(Debug, Clone, Default)]
struct Tally {
    count: u64,
    cost: f64,
    reward: f64,
    latencies_ms: Vec<f64>,
}

/// What one answered prompt would have scored with one fixed choice.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Baseline {
    pub reward: f64,
    pub cost: f64,
}

#[derive(Debug, Clone)]
pub struct Stats {
    /// Model ids, in the dataset's order.
    models: Vec<String>,
    planned: usize,
    per_model: Vec<Tally>,
    recent: VecDeque<usize>,
    errors: BTreeMap<String, u64>,
    feedback_errors: u64,
    streamed: u64,
    /// The policy version the router last reported.
    policy: Option<String>,
    /// Sums over answered prompts: one per model, then the oracle.
    baselines: Vec<Baseline>,
}

/// One model's line of the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLine {
    pub model: String,
    pub count: u64,
    pub share: f64,
    pub recent_share: f64,
    pub total_cost: f64,
    pub mean_cost: f64,
    pub mean_reward: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

/// Everything the report prints, computed once.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub planned: usize,
    pub answered: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub feedback_errors: u64,
    pub streamed: u64,
    /// The router's policy version, from `x-switchboard-policy-version`.
    pub policy: Option<String>,
    pub models: Vec<ModelLine>,
    pub total_cost: f64,
    pub mean_cost: f64,
    pub mean_reward: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// (label, mean reward, mean cost) of each single model and the oracle
    /// on the prompts that were answered.
    pub baselines: Vec<(String, Baseline)>,
}

impl Summary {
    pub fn done(&self) -> u64 {
        self.answered + self.errors
    }
}

impl Stats {
    pub fn new(dataset: &Dataset, planned: usize) -> Self {
        let n = dataset.models.len();
        Self {
            models: dataset.models.iter().map(|m| m.model_id.clone()).collect(),
            planned,
            per_model: vec![Tally::default(); n],
            recent: VecDeque::with_capacity(RECENT_WINDOW),
            errors: BTreeMap::new(),
            feedback_errors: 0,
            streamed: 0,
            policy: None,
            baselines: vec![Baseline::default(); n + 1],
        }
    }

    /// An answer from model `model` (an index into the dataset's models).
    pub fn record_answer(
        &mut self,
        row: &Row,
        model: usize,
        latency_ms: f64,
        cost: f64,
        stream: bool,
    ) {
        let Some(t) = self.per_model.get_mut(model) else {
            return;
        };
        let reward = row.arms.get(&self.models[model]).map_or(0.0, |a| a.reward);
        t.count += 1;
        t.cost += cost;
        t.reward += reward;
        t.latencies_ms.push(latency_ms);
        if self.recent.len() == RECENT_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(model);
        self.streamed += u64::from(stream);
        let mut best: Option<Baseline> = None;
        for (i, id) in self.models.iter().enumerate() {
            if let Some(a) = row.arms.get(id) {
                self.baselines[i].reward += a.reward;
                self.baselines[i].cost += a.cost;
                // The oracle: the best reward, the cheapest among ties.
                let better = best.is_none_or(|b| {
                    a.reward > b.reward || (a.reward == b.reward && a.cost < b.cost)
                });
                if better {
                    best = Some(Baseline {
                        reward: a.reward,
                        cost: a.cost,
                    });
                }
            }
        }
        if let (Some(b), Some(o)) = (best, self.baselines.last_mut()) {
            o.reward += b.reward;
            o.cost += b.cost;
        }
    }

    /// A request that got no answer; `kind` is e.g. `HTTP 503` or `stream cut`.
    pub fn record_error(&mut self, kind: String) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }

    /// The policy version that made the latest decision.
    pub fn record_policy(&mut self, version: &str) {
        if self.policy.as_deref() != Some(version) {
            self.policy = Some(version.to_owned());
        }
    }

    pub fn record_feedback_error(&mut self) {
        self.feedback_errors += 1;
    }

    pub fn summary(&self) -> Summary {
        let answered: u64 = self.per_model.iter().map(|t| t.count).sum();
        let recent_n = self.recent.len().max(1) as f64;
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let models = self
            .models
            .iter()
            .zip(&self.per_model)
            .enumerate()
            .map(|(i, (id, t))| {
                let (p50_ms, p95_ms) = percentiles(&t.latencies_ms);
                ModelLine {
                    model: id.clone(),
                    count: t.count,
                    share: ratio(t.count as f64, answered as f64),
                    recent_share: self.recent.iter().filter(|&&m| m == i).count() as f64 / recent_n,
                    total_cost: t.cost,
                    mean_cost: ratio(t.cost, t.count as f64),
                    mean_reward: ratio(t.reward, t.count as f64),
                    p50_ms,
                    p95_ms,
                }
            })
            .collect();
        let all: Vec<f64> = self
            .per_model
            .iter()
            .flat_map(|t| t.latencies_ms.iter().copied())
            .collect();
        let (p50_ms, p95_ms) = percentiles(&all);
        let total_cost: f64 = self.per_model.iter().map(|t| t.cost).sum();
        let reward: f64 = self.per_model.iter().map(|t| t.reward).sum();
        let n = answered as f64;
        let labels = self.models.iter().cloned().chain(["oracle".to_owned()]);
        let baselines = labels
            .zip(&self.baselines)
            .map(|(l, b)| {
                (
                    l,
                    Baseline {
                        reward: ratio(b.reward, n),
                        cost: ratio(b.cost, n),
                    },
                )
            })
            .collect();
        Summary {
            planned: self.planned,
            answered,
            errors: self.errors.values().sum(),
            errors_by_kind: self.errors.clone(),
            feedback_errors: self.feedback_errors,
            streamed: self.streamed,
            policy: self.policy.clone(),
            models,
            total_cost,
            mean_cost: ratio(total_cost, n),
            mean_reward: ratio(reward, n),
            p50_ms,
            p95_ms,
            baselines,
        }
    }
}

/// Nearest-rank p50 and p95; zeros when empty.
fn percentiles(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.95))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentiles(&v), (50.0, 95.0));
        assert_eq!(percentiles(&[7.0]), (7.0, 7.0));
        assert_eq!(percentiles(&[]), (0.0, 0.0));
    }

    #[test]
    fn summary_tallies_shares_rewards_and_baselines() {
        let d = Dataset::embedded().unwrap();
        let mut s = Stats::new(&d, 10);
        let (r0, r1) = (&d.rows[0], &d.rows[1]);
        s.record_answer(r0, 0, 100.0, 0.001, false);
        s.record_answer(r1, 2, 300.0, 0.003, true);
        s.record_error("HTTP 503".into());
        s.record_policy("uniform");
        let sum = s.summary();
        assert_eq!(sum.answered, 2);
        assert_eq!(sum.done(), 3);
        assert_eq!(sum.errors_by_kind.get("HTTP 503"), Some(&1));
        assert_eq!(sum.streamed, 1);
        assert_eq!(sum.policy.as_deref(), Some("uniform"));
        assert_eq!(sum.models[0].count, 1);
        assert!((sum.models[2].share - 0.5).abs() < 1e-12);
        assert!((sum.models[1].recent_share).abs() < 1e-12);
        assert!((sum.mean_cost - 0.002).abs() < 1e-12);
        let want_reward =
            (r0.arms[&d.models[0].model_id].reward + r1.arms[&d.models[2].model_id].reward) / 2.0;
        assert!((sum.mean_reward - want_reward).abs() < 1e-12);
        let (label, oracle) = sum.baselines.last().unwrap();
        assert_eq!(label, "oracle");
        assert!(sum
            .baselines
            .iter()
            .all(|(_, b)| b.reward <= oracle.reward + 1e-12));
    }
}
