//! Online learning for every route: the encoder and the lock-free policy
//! handle the request path reads, and the one writer task that owns the
//! mutable statistics, applies outcomes and feedback, publishes snapshots and
//! persists them to the store (every few seconds and on shutdown).
//!
//! The request path only ever `try_send`s an update; it never waits for the
//! writer, and the writer never holds anything the request path needs.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::catalog::Catalog;
use crate::bandit::{
    Algorithm, ArmSpec, BudgetConfig, Objective, Outcome, PolicyConfig, PolicyHandle,
    PolicySnapshot, PolicyWriter, Quality, RouteSpec,
};
use crate::config::{Config, RouteConfig};
use crate::domain::ModelName;
use crate::features::{Encoder, FeatureError};
use crate::store::Store;
use crate::telemetry::names;

/// Label of snapshots learned online (a training job writes its own).
const ONLINE_LABEL: &str = "online";
/// How often the writer saves changed state to the store.
const PERSIST_EVERY: Duration = Duration::from_secs(10);
const UPDATE_QUEUE: usize = 65_536;

/// What the request path needs to decide for one route.
pub struct RouteLearner {
    pub encoder: Encoder,
    pub policy: PolicyHandle,
    pub objective: Objective,
    pub exploration_cap: Option<f64>,
    pub tier_exploration_caps: std::collections::BTreeMap<String, f64>,
    /// Snapshot arm position -> catalog model index.
    pub arm_models: Vec<usize>,
    arm_names: Vec<ModelName>,
}

impl RouteLearner {
    pub fn arm_of_model(&self, model: usize) -> Option<usize> {
        self.arm_models.iter().position(|&m| m == model)
    }

    /// The exploration cap for a request: its tier's, else the route's.
    pub fn exploration_cap_for(&self, tier: Option<&str>) -> Option<f64> {
        tier.and_then(|t| self.tier_exploration_caps.get(t).copied())
            .or(self.exploration_cap)
    }

    pub fn arm_name(&self, model: usize) -> Option<&ModelName> {
        self.arm_of_model(model).map(|a| &self.arm_names[a])
    }

    /// The version string clients see in `x-switchboard-policy-version`.
    pub fn version(snapshot: &PolicySnapshot) -> String {
        let label = if snapshot.label().is_empty() {
            ONLINE_LABEL
        } else {
            snapshot.label()
        };
        format!("{label}.{}", snapshot.version())
    }
}

#[derive(Debug)]
pub enum Update {
    Outcome {
        route: usize,
        outcome: Outcome,
    },
    Quality {
        route: usize,
        quality: Quality,
    },
    /// An activated policy version replaces the route's state.
    Swap {
        route: usize,
        snapshot: Box<PolicySnapshot>,
    },
}

pub struct Learning {
    pub routes: Vec<RouteLearner>,
    tx: mpsc::Sender<Update>,
}

#[derive(Debug, thiserror::Error)]
pub enum LearningError {
    #[error("route {route}: features: {source}")]
    Features { route: String, source: FeatureError },
    #[error("route {route}: policy: {reason}")]
    Policy { route: String, reason: String },
}

/// The writer half; run it with `tokio::spawn(writer.run(shutdown))`.
pub struct LearningWriter {
    writers: Vec<PolicyWriter>,
    routes: Vec<String>,
    rx: mpsc::Receiver<Update>,
    store: Store,
    dirty: Vec<bool>,
    specs: Vec<RouteSpec>,
    tx: mpsc::Sender<Update>,
}

impl Learning {
    /// Builds each route's policy, resuming from the store's saved state
    /// when it fits the route as configured now.
    pub async fn build(
        config: &Config,
        catalog: &Catalog,
        store: &Store,
    ) -> Result<(Self, LearningWriter), LearningError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut writers = Vec::with_capacity(config.routes.len());
        let mut specs = Vec::with_capacity(config.routes.len());
        for (r, entry) in config.routes.iter().zip(&catalog.routes) {
            let name = r.name.as_str().to_owned();
            let encoder =
                Encoder::new(r.features.clone().unwrap_or_default()).map_err(|source| {
                    LearningError::Features {
                        route: name.clone(),
                        source,
                    }
                })?;
            let spec = route_spec(r, &encoder, config);
            let fresh = || {
                PolicySnapshot::new(&spec).map_err(|e| LearningError::Policy {
                    route: name.clone(),
                    reason: e.to_string(),
                })
            };
            let snapshot = match store.load_policy_state(&name).await {
                Ok(Some(text)) => {
                    match PolicySnapshot::from_json(&text).and_then(|s| s.prepare(&spec)) {
                        Ok(s) => {
                            tracing::info!(route = %name, version = s.version(), "Resumed the route's policy from the store.");
                            s
                        }
                        Err(e) => {
                            tracing::warn!(route = %name, error = %e, "The saved policy does not fit the route any more; starting fresh.");
                            fresh()?
                        }
                    }
                }
                Ok(None) => fresh()?,
                Err(e) => {
                    tracing::warn!(route = %name, error = %e, "The saved policy could not be read; starting fresh.");
                    fresh()?
                }
            };
            let snapshot = super::policy_watch::reconcile(store, &name, &spec, snapshot).await;
            let writer = PolicyWriter::new(snapshot);
            routes.push(RouteLearner {
                encoder,
                policy: writer.handle(),
                objective: Objective {
                    cost_weight: r.objective.cost_weight,
                    latency_weight: r.objective.latency_weight,
                },
                exploration_cap: r.exploration_cap,
                tier_exploration_caps: r.tier_exploration_caps.clone(),
                arm_models: entry.arms.clone(),
                arm_names: spec.arms.iter().map(|a| a.name.clone()).collect(),
            });
            writers.push(writer);
            specs.push(spec);
        }
        let (tx, rx) = mpsc::channel(UPDATE_QUEUE);
        let writer = LearningWriter {
            dirty: vec![false; writers.len()],
            routes: config
                .routes
                .iter()
                .map(|r| r.name.as_str().to_owned())
                .collect(),
            writers,
            rx,
            store: store.clone(),
            specs,
            tx: tx.clone(),
        };
        Ok((Self { routes, tx }, writer))
    }

    /// Hands an update to the writer without waiting. A full queue drops it
    /// (counted): learning is best-effort, serving is not.
    pub fn send(&self, update: Update) {
        if self.tx.try_send(update).is_err() {
            metrics::counter!(names::LEARNING_DROPPED).increment(1);
        }
    }
}

/// The bandit configuration a route asks for: its `[routes.bandit]` table
/// with the route-level `policy` and `exploration_cap` on top.
pub fn policy_config(r: &RouteConfig) -> PolicyConfig {
    let mut config: PolicyConfig = r.bandit.clone().unwrap_or_default();
    config.algorithm = r.policy;
    if let Some(cap) = r.exploration_cap {
        config.exploration_cap = cap;
    }
    if config.algorithm == Algorithm::Fixed && config.fixed_arm.is_none() {
        config.fixed_arm = r.models.first().cloned();
    }
    config
}

/// The policy shape serving builds for a route (the training job builds the
/// same one, so its snapshots `prepare` cleanly in serving).
pub fn route_spec(r: &RouteConfig, encoder: &Encoder, all: &Config) -> RouteSpec {
    let config = policy_config(r);
    let arms = r
        .models
        .iter()
        .map(|m| {
            let mut arm = ArmSpec::new(m.clone());
            // A new arm's cost prior: a typical exchange (~500 tokens in,
            // ~250 out) at its list prices, until it has been observed.
            if let Some(p) = all.models.iter().find(|c| c.name == *m) {
                arm.prior_cost_usd = Some(
                    ((500.0 * p.input_usd_per_mtok + 250.0 * p.output_usd_per_mtok) / 1e6)
                        .max(1e-9),
                );
            }
            arm
        })
        .collect();
    RouteSpec {
        dimension: encoder.dimension(),
        feature_fingerprint: encoder.fingerprint(),
        config,
        budget: BudgetConfig {
            target_usd_per_request: r.budget.map(|b| b.target_usd_per_request),
        },
        arms,
    }
}

impl LearningWriter {
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut buf = Vec::with_capacity(256);
        let mut persist = tokio::time::interval(PERSIST_EVERY);
        persist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let labels = self
            .writers
            .iter()
            .map(|w| w.state().label().to_owned())
            .collect();
        tokio::spawn(super::policy_watch::run(
            self.store.clone(),
            self.routes.clone(),
            std::mem::take(&mut self.specs),
            labels,
            self.tx.clone(),
            shutdown.clone(),
        ));
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut buf, 256) => {
                    if n == 0 { break; }
                    self.apply(&mut buf);
                }
                _ = persist.tick() => self.persist().await,
                _ = shutdown.changed() => {
                    self.rx.close();
                    while self.rx.recv_many(&mut buf, 256).await > 0 {
                        self.apply(&mut buf);
                    }
                    break;
                }
            }
        }
        self.persist().await;
        tracing::info!("The learner saved its state.");
    }

    /// Applies a batch, then publishes each touched route once.
    fn apply(&mut self, buf: &mut Vec<Update>) {
        let mut touched = vec![false; self.writers.len()];
        for update in buf.drain(..) {
            let (route, result) = match &update {
                Update::Outcome { route, outcome } => (
                    *route,
                    self.writers
                        .get_mut(*route)
                        .map(|w| w.apply_outcome(outcome)),
                ),
                Update::Swap { route, snapshot } => (
                    *route,
                    self.writers.get_mut(*route).map(|w| {
                        w.replace((**snapshot).clone());
                        Ok(Default::default())
                    }),
                ),
                Update::Quality { route, quality } => {
                    metrics::histogram!(names::REWARD, "route" => self.routes[*route].clone())
                        .record(quality.reward.get());
                    (
                        *route,
                        self.writers
                            .get_mut(*route)
                            .map(|w| w.apply_quality(quality)),
                    )
                }
            };
            match result {
                Some(Ok(report)) => {
                    touched[route] = true;
                    for event in report.drift {
                        tracing::warn!(route = %self.routes[route], ?event, "Drift detected: the arm's statistics now decay faster and it is explored more.");
                        metrics::counter!(names::DRIFT_EVENTS, "route" => self.routes[route].clone()).increment(1);
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "An update was rejected by the policy."),
                None => {}
            }
        }
        for (i, t) in touched.into_iter().enumerate() {
            if t {
                self.writers[i].publish();
                self.dirty[i] = true;
            }
        }
    }

    async fn persist(&mut self) {
        for i in 0..self.writers.len() {
            if !self.dirty[i] {
                continue;
            }
            let state = self.writers[i].state();
            let version = RouteLearner::version(state);
            let value = match serde_json::to_value(state) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "Serialising a policy failed.");
                    continue;
                }
            };
            match self
                .store
                .save_policy_state(&self.routes[i], &version, &value)
                .await
            {
                Ok(()) => self.dirty[i] = false,
                Err(e) => {
                    tracing::warn!(route = %self.routes[i], error = %e, "Saving the policy failed; will retry.")
                }
            }
        }
    }
}
