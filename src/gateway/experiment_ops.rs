//! Operator actions on experiments: start (define, or run again), stop and
//! promote. Each is checked against the serving catalog and the experiments
//! in effect, stored (so it survives a reload and a restart and reaches
//! every replica), then applied at once (`Live::refresh_control`).

use chrono::Utc;
use serde::Deserialize;

use super::live::Live;
use super::operate::OpError;
use crate::experiments::{ArmState, AutoPromote, Experiment, ExperimentKind, Status, StickyBy};
use crate::store::control::{ArmRow, ExperimentRow};

fn window(w: u64) -> Option<i64> {
    Some(i64::try_from(w).unwrap_or(i64::MAX))
}
/// A new experiment, as the API and the CLI describe it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentDef {
    pub route: String,
    pub kind: ExperimentKind,
    pub candidate: String,
    pub share: f64,
    #[serde(default)]
    pub sticky_by: Option<StickyBy>,
    #[serde(default)]
    pub auto_promote: Option<AutoPromote>,
    /// Only requests whose client key carries this feature flag take part;
    /// the others are served as if the experiment did not exist.
    #[serde(default)]
    pub key_flag: Option<String>,
}

/// How a promotion treats the route's other models.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteOptions {
    /// Retire every other model of the route (candidate models only).
    #[serde(default)]
    pub replace: bool,
    /// Over this many seconds (0: at once).
    #[serde(default)]
    pub window_s: u64,
}

impl Live {
    /// Starts `name`: a new experiment when `def` is given, else one that
    /// exists (in the file, or stopped) runs again.
    pub async fn start_experiment(
        &self,
        name: &str,
        def: Option<ExperimentDef>,
    ) -> Result<(), OpError> {
        let gw = self.current();
        let control = gw.plan.load().control.clone();
        let existing = control.experiment(name);
        let now = Utc::now();
        let row = match (def, existing) {
            (Some(_), Some(e)) if e.source == "config" => {
                return Err(OpError::Conflict(format!(
                    "Experiment `{name}` is defined in the configuration file; start it without a definition, or change the file."
                )));
            }
            (Some(d), _) => {
                self.check_definition(name, &d).await?;
                ExperimentRow {
                    name: name.to_owned(),
                    route: d.route,
                    kind: d.kind.as_str().into(),
                    candidate: d.candidate,
                    share: d.share,
                    sticky_by: d.sticky_by.map(|_| "user".into()),
                    status: Status::Running.as_str().into(),
                    source: "api".into(),
                    params: params(d.auto_promote, d.key_flag.as_deref()),
                    note: None,
                    created_at: now,
                    updated_at: now,
                }
            }
            (None, Some(e)) => {
                let d = ExperimentDef {
                    route: e.route.clone(),
                    kind: e.kind,
                    candidate: e.candidate.clone(),
                    share: e.share,
                    sticky_by: e.sticky_by,
                    auto_promote: e.auto_promote,
                    key_flag: e.key_flag.clone(),
                };
                self.check_definition(name, &d).await?;
                let mut row = to_row(e);
                row.status = Status::Running.as_str().into();
                row.updated_at = now;
                row
            }
            (None, None) => {
                return Err(OpError::NotFound(format!(
                    "No experiment `{name}`: give its route, kind, candidate and share to create it."
                )));
            }
        };
        gw.store.upsert_experiment(&row).await?;
        self.refresh_control().await?;
        Ok(())
    }

    async fn check_definition(&self, name: &str, d: &ExperimentDef) -> Result<(), OpError> {
        let gw = self.current();
        if name.is_empty() || name.len() > 128 {
            return Err(OpError::Invalid(
                "`name` must be 1 to 128 characters".into(),
                "name",
            ));
        }
        let r = gw
            .catalog
            .route_index(&d.route)
            .ok_or_else(|| OpError::Invalid(format!("No route `{}`.", d.route), "route"))?;
        if !(d.share.is_finite() && (0.0..=1.0).contains(&d.share)) {
            return Err(OpError::Invalid(
                format!("`share` {} must be in [0, 1]", d.share),
                "share",
            ));
        }
        if let Some(f) = &d.key_flag {
            crate::auth::issue::check_flags(std::slice::from_ref(f))
                .map_err(|e| OpError::Invalid(e.to_string(), "key_flag"))?;
        }
        let is_model = gw.catalog.model(&d.candidate).is_some();
        let is_route = gw.catalog.route_index(&d.candidate).is_some_and(|c| c != r);
        let policy_of_route = || async {
            matches!(gw.store.policy(&d.candidate).await, Ok(Some(p)) if p.route == d.route)
        };
        let ok = match d.kind {
            ExperimentKind::Canary => is_model || policy_of_route().await,
            ExperimentKind::Ab => is_route || policy_of_route().await,
            ExperimentKind::Shadow => is_model,
            ExperimentKind::ShadowPolicy => policy_of_route().await,
        };
        if !ok {
            let wants = match d.kind {
                ExperimentKind::Canary => "a model or a policy version of the route",
                ExperimentKind::Ab => "another route or a policy version of the route",
                ExperimentKind::Shadow => "a model",
                ExperimentKind::ShadowPolicy => "a policy version of the route",
            };
            return Err(OpError::Invalid(
                format!("`candidate` {:?} is not {wants}", d.candidate),
                "candidate",
            ));
        }
        let control = gw.plan.load().control.clone();
        let busy = control.experiments.iter().find(|e| {
            e.name != name
                && e.route == d.route
                && in_effect(e)
                && (e.kind == d.kind || (e.kind.acts() && d.kind.acts()))
        });
        if let Some(e) = busy {
            return Err(OpError::Conflict(format!(
                "Experiment `{}` ({}) already runs on route `{}`; stop it first.",
                e.name,
                e.kind.as_str(),
                e.route
            )));
        }
        Ok(())
    }

    pub async fn stop_experiment(&self, name: &str) -> Result<(), OpError> {
        self.set_status(name, Status::Stopped, None).await
    }

    /// Sets an experiment's status (the file's experiments keep a status row).
    pub(super) async fn set_status(
        &self,
        name: &str,
        status: Status,
        note: Option<&str>,
    ) -> Result<(), OpError> {
        let gw = self.current();
        if gw.plan.load().control.experiment(name).is_none() {
            return Err(OpError::NotFound(format!("No experiment `{name}`.")));
        }
        gw.store
            .set_experiment_status(name, status.as_str(), note)
            .await?;
        self.refresh_control().await?;
        Ok(())
    }

    /// The candidate wins: a model joins the route (with `replace`, the
    /// others retire); a route candidate takes all of the route's traffic
    /// in one step (blue-green); a policy version becomes the active one.
    pub async fn promote_experiment(
        &self,
        name: &str,
        opts: PromoteOptions,
    ) -> Result<(), OpError> {
        let gw = self.current();
        let control = gw.plan.load().control.clone();
        let e = control
            .experiment(name)
            .ok_or_else(|| OpError::NotFound(format!("No experiment `{name}`.")))?
            .clone();
        if e.status != Status::Running {
            return Err(OpError::Conflict(format!(
                "Experiment `{name}` is {}; only a running experiment can be promoted.",
                e.status.as_str()
            )));
        }
        let is_model = gw.catalog.model(&e.candidate).is_some()
            && matches!(e.kind, ExperimentKind::Canary | ExperimentKind::Shadow);
        let is_route =
            e.kind == ExperimentKind::Ab && gw.catalog.route_index(&e.candidate).is_some();
        if is_model {
            let now = Utc::now();
            // The candidate keeps what the experiment learned of it as its
            // prior, and needs no forced exploration.
            let prior = super::report::candidate_reward(&gw, &e).await;
            gw.store
                .upsert_arm(&ArmRow {
                    route: e.route.clone(),
                    model: e.candidate.clone(),
                    state: ArmState::Added.as_str().into(),
                    prior_quality: prior,
                    explore_quota: Some(0),
                    explore_share: Some(0.0),
                    window_s: None,
                    started_at: now,
                    updated_at: now,
                })
                .await?;
            if opts.replace {
                if let Some(r) = gw.catalog.route_index(&e.route) {
                    for m in &gw.effective.routes[r].models {
                        if m.as_str() == e.candidate {
                            continue;
                        }
                        gw.store
                            .upsert_arm(&ArmRow {
                                route: e.route.clone(),
                                model: m.as_str().to_owned(),
                                state: ArmState::Retiring.as_str().into(),
                                prior_quality: None,
                                explore_quota: None,
                                explore_share: None,
                                window_s: window(opts.window_s),
                                started_at: now,
                                updated_at: now,
                            })
                            .await?;
                    }
                }
            }
        } else if !is_route {
            gw.store
                .activate_policy(&e.candidate)
                .await
                .map_err(|err| {
                    OpError::Conflict(format!("Activating `{}` failed: {err}", e.candidate))
                })?;
        }
        gw.store
            .set_experiment_status(name, Status::Promoted.as_str(), None)
            .await?;
        self.refresh_control().await?;
        Ok(())
    }
}

/// Is the experiment acting on or observing traffic now?
fn in_effect(e: &Experiment) -> bool {
    e.status == Status::Running || (e.status == Status::Promoted && e.kind == ExperimentKind::Ab)
}

fn to_row(e: &Experiment) -> ExperimentRow {
    let now = Utc::now();
    ExperimentRow {
        name: e.name.clone(),
        route: e.route.clone(),
        kind: e.kind.as_str().into(),
        candidate: e.candidate.clone(),
        share: e.share,
        sticky_by: e.sticky_by.map(|_| "user".into()),
        status: e.status.as_str().into(),
        source: e.source.clone(),
        params: params(e.auto_promote, e.key_flag.as_deref()),
        note: e.note.clone(),
        created_at: e.created_at.unwrap_or(now),
        updated_at: now,
    }
}

/// What a stored experiment keeps beyond its columns (`experiments.params`).
fn params(auto_promote: Option<AutoPromote>, key_flag: Option<&str>) -> Option<serde_json::Value> {
    let mut p = serde_json::Map::new();
    if let Some(a) = auto_promote {
        p.insert("auto_promote".into(), serde_json::json!(a));
    }
    if let Some(f) = key_flag {
        p.insert("key_flag".into(), serde_json::json!(f));
    }
    (!p.is_empty()).then_some(serde_json::Value::Object(p))
}
