//! What the controls in force mean for one gateway's catalog: for each
//! route, the acting experiment (canary or A/B), the shadow mirror, the
//! shadow policy, and the arms being onboarded or retired; for each model,
//! whether an operator disabled it.
//!
//! Built off the hot path (a policy-version candidate is read from the
//! store and prepared against the route) and swapped in whole
//! (`Gateway::plan`); the request path only loads it. A control that
//! cannot take effect (an unknown candidate, a policy version of another
//! route) is left out and listed in `problems`, never half-applied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::learning::route_spec;
use super::Gateway;
use crate::bandit::PolicySnapshot;
use crate::experiments::{Control, Experiment, ExperimentKind, Status};
use crate::store::control::ControlRows;
use crate::store::Store;

pub struct Plan {
    pub control: Arc<Control>,
    /// The stored rows `control` was merged from (a reload re-merges them
    /// with the new file without a database round trip).
    pub rows: Arc<ControlRows>,
    /// Per catalog model.
    pub disabled: Vec<bool>,
    /// Per catalog route.
    pub routes: Vec<RoutePlan>,
    /// (experiment, why it is not in effect).
    pub problems: Vec<(String, String)>,
}

#[derive(Default)]
pub struct RoutePlan {
    pub acting: Option<Acting>,
    pub shadow: Option<Mirror>,
    pub shadow_policy: Option<ShadowPolicy>,
    pub onboarding: Vec<Onboarding>,
    pub retiring: Vec<Retiring>,
}

/// Who decides for the candidate arm of an acting experiment.
pub enum Target {
    Model(usize),
    Route(usize),
    Policy {
        version: String,
        snapshot: Arc<PolicySnapshot>,
    },
}

pub struct Acting {
    pub name: Arc<str>,
    pub share: f64,
    pub sticky: bool,
    /// Only requests whose client key carries this flag take part.
    pub key_flag: Option<Arc<str>>,
    pub target: Target,
}

pub struct Mirror {
    pub name: Arc<str>,
    pub share: f64,
    pub sticky: bool,
    /// Only requests whose client key carries this flag take part.
    pub key_flag: Option<Arc<str>>,
    pub model: usize,
}

pub struct ShadowPolicy {
    pub name: Arc<str>,
    pub share: f64,
    pub sticky: bool,
    /// Only requests whose client key carries this flag take part.
    pub key_flag: Option<Arc<str>>,
    pub version: String,
    pub snapshot: Arc<PolicySnapshot>,
}

pub struct Onboarding {
    pub model: usize,
    pub share: f64,
    pub quota: u64,
    /// Forced decisions so far (shared across reloads).
    pub used: Arc<AtomicU64>,
    /// `onboard:<model>`, recorded on forced requests.
    pub experiment: Arc<str>,
}

impl Onboarding {
    pub fn has_quota(&self) -> bool {
        self.used.load(Ordering::Relaxed) < self.quota
    }
}

pub struct Retiring {
    pub model: usize,
    pub started: DateTime<Utc>,
    pub window: Duration,
}

impl Retiring {
    /// Share multiplier: 1 at the start of the window, 0 at its end.
    pub fn weight(&self, now: DateTime<Utc>) -> f64 {
        if self.window.is_zero() {
            return 0.0;
        }
        let elapsed = (now - self.started).to_std().unwrap_or(Duration::ZERO);
        (1.0 - elapsed.as_secs_f64() / self.window.as_secs_f64()).clamp(0.0, 1.0)
    }
}

/// Forced-exploration counts per (route, model), kept across reloads and
/// seeded from the store (the `forced` rows) the first time.
#[derive(Default)]
pub struct QuotaCounters {
    counts: Mutex<HashMap<(String, String), Arc<AtomicU64>>>,
}

impl QuotaCounters {
    async fn get(&self, store: &Store, route: &str, model: &str) -> Arc<AtomicU64> {
        let key = (route.to_owned(), model.to_owned());
        if let Some(c) = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return c.clone();
        }
        let seen = store
            .forced_decisions(route, &format!("onboard:{model}"))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(route, model, error = %e, "Counting past forced decisions failed; the quota starts at 0.");
                0
            });
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert_with(|| Arc::new(AtomicU64::new(seen.max(0) as u64)))
            .clone()
    }
}

impl Plan {
    /// No experiments, nothing disabled (until `build` has run).
    pub fn empty(control: Arc<Control>, rows: Arc<ControlRows>) -> Plan {
        Plan {
            control,
            rows,
            disabled: Vec::new(),
            routes: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// The plan for `gw`'s catalog under `control`.
    pub async fn build(gw: &Gateway, control: Arc<Control>, rows: Arc<ControlRows>) -> Plan {
        let catalog = &gw.catalog;
        let disabled = catalog
            .models
            .iter()
            .map(|m| control.disabled.contains_key(m.name.as_str()))
            .collect();
        let mut routes: Vec<RoutePlan> = catalog
            .routes
            .iter()
            .map(|_| RoutePlan::default())
            .collect();
        let mut problems = Vec::new();
        for e in &control.experiments {
            let live = e.status == Status::Running
                || (e.status == Status::Promoted
                    && e.kind == ExperimentKind::Ab
                    && catalog.route_index(&e.candidate).is_some());
            if !live {
                continue;
            }
            let Some(r) = catalog.route_index(&e.route) else {
                problems.push((
                    e.name.clone(),
                    format!("route {:?} does not exist", e.route),
                ));
                continue;
            };
            if let Err(why) = place(gw, e, r, &mut routes[r]).await {
                tracing::warn!(experiment = %e.name, reason = %why, "An experiment is not in effect.");
                problems.push((e.name.clone(), why));
            }
        }
        for (r, route) in gw.effective.routes.iter().enumerate() {
            let Some(plan) = routes.get_mut(r) else {
                continue;
            };
            for (model, o) in &route.onboard {
                let Some(m) = catalog.model(model.as_str()) else {
                    continue;
                };
                plan.onboarding.push(Onboarding {
                    model: m.index,
                    share: o.explore_share,
                    quota: o.explore_quota,
                    used: gw
                        .quota
                        .get(&gw.store, route.name.as_str(), model.as_str())
                        .await,
                    experiment: format!("onboard:{}", model.as_str()).into(),
                });
            }
            for (model, cfg) in &route.retire {
                let Some(m) = catalog.model(model.as_str()) else {
                    continue;
                };
                let started = control
                    .arm(route.name.as_str(), model.as_str())
                    .map_or_else(Utc::now, |a| a.started_at);
                plan.retiring.push(Retiring {
                    model: m.index,
                    started,
                    window: Duration::from_secs(cfg.window_s),
                });
            }
        }
        Plan {
            control,
            rows,
            disabled,
            routes,
            problems,
        }
    }

    pub fn is_disabled(&self, model: usize) -> bool {
        self.disabled.get(model).copied().unwrap_or(false)
    }
}

/// Puts one live experiment into its route's plan.
async fn place(gw: &Gateway, e: &Experiment, r: usize, plan: &mut RoutePlan) -> Result<(), String> {
    let name: Arc<str> = e.name.as_str().into();
    let share = if e.status == Status::Promoted {
        1.0
    } else {
        e.share
    };
    match e.kind {
        ExperimentKind::Canary | ExperimentKind::Ab => {
            if plan.acting.is_some() {
                return Err("another canary or A/B experiment already acts on the route".into());
            }
            let target = if let (ExperimentKind::Canary, Some(m)) =
                (e.kind, gw.catalog.model(&e.candidate))
            {
                Target::Model(m.index)
            } else if let (ExperimentKind::Ab, Some(c)) =
                (e.kind, gw.catalog.route_index(&e.candidate))
            {
                if c == r {
                    return Err("a route cannot be its own candidate".into());
                }
                Target::Route(c)
            } else {
                let snapshot = candidate_policy(gw, r, &e.candidate).await?;
                Target::Policy {
                    version: e.candidate.clone(),
                    snapshot,
                }
            };
            plan.acting = Some(Acting {
                name,
                share,
                sticky: e.sticky(),
                key_flag: e.key_flag.as_deref().map(Arc::from),
                target,
            });
        }
        ExperimentKind::Shadow => {
            let m = gw
                .catalog
                .model(&e.candidate)
                .ok_or_else(|| format!("no model {:?}", e.candidate))?;
            plan.shadow = Some(Mirror {
                name,
                share,
                sticky: e.sticky(),
                key_flag: e.key_flag.as_deref().map(Arc::from),
                model: m.index,
            });
        }
        ExperimentKind::ShadowPolicy => {
            let snapshot = candidate_policy(gw, r, &e.candidate).await?;
            plan.shadow_policy = Some(ShadowPolicy {
                name,
                share,
                sticky: e.sticky(),
                key_flag: e.key_flag.as_deref().map(Arc::from),
                version: e.candidate.clone(),
                snapshot,
            });
        }
    }
    Ok(())
}

/// A stored policy version, prepared for route `r` as configured now.
async fn candidate_policy(
    gw: &Gateway,
    r: usize,
    version: &str,
) -> Result<Arc<PolicySnapshot>, String> {
    let route = &gw.effective.routes[r];
    let row = gw
        .store
        .policy(version)
        .await
        .map_err(|e| format!("reading policy version {version:?}: {e}"))?
        .ok_or_else(|| format!("{version:?} is not a model, a route or a stored policy version"))?;
    if row.route != route.name.as_str() {
        return Err(format!(
            "policy version {version:?} belongs to route {:?}",
            row.route
        ));
    }
    let learner = &gw.learning.routes[r];
    let spec = route_spec(route, &learner.encoder, &gw.effective);
    PolicySnapshot::from_json(&row.parameters)
        .and_then(|s| s.prepare(&spec))
        .map(|s| Arc::new(s.relabelled(version)))
        .map_err(|e| format!("policy version {version:?} does not fit the route: {e}"))
}
