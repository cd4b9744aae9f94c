//! The controls in force: the file's `[[experiments]]`, `onboard` and
//! `retire` entries merged with what operators changed at run time (stored
//! in `experiments`, `route_arms`, `model_flags`), and the effective
//! configuration they give: the file with arms added by promotion or
//! onboarding and arms whose retirement finished taken out.
//!
//! Rules of the merge: the file defines its experiments (the store keeps
//! only their status, so `stop` survives a reload and a restart); an
//! experiment started through the API is defined by its stored row; an
//! arm change never empties a route or adds a model the file does not
//! define.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::spec::{AutoPromote, ExperimentKind, OnboardConfig, RetireConfig, StickyBy};
use crate::config::Config;
use crate::store::control::{ArmRow, ControlRows, ExperimentRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    /// The candidate won: it joined or replaced the route (or became the
    /// active policy); for a route candidate, the route now serves it.
    Promoted,
    Stopped,
    /// Stopped automatically because the candidate did worse.
    RolledBack,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Promoted => "promoted",
            Status::Stopped => "stopped",
            Status::RolledBack => "rolled_back",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "promoted" => Some(Self::Promoted),
            "stopped" => Some(Self::Stopped),
            "rolled_back" => Some(Self::RolledBack),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    pub name: String,
    pub route: String,
    pub kind: ExperimentKind,
    pub candidate: String,
    pub share: f64,
    pub sticky_by: Option<StickyBy>,
    pub auto_promote: Option<AutoPromote>,
    /// Only keys with this feature flag take part.
    pub key_flag: Option<String>,
    pub status: Status,
    /// `config` or `api`.
    pub source: String,
    pub note: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Experiment {
    /// Sticky by user (the only sticky key there is).
    pub fn sticky(&self) -> bool {
        self.sticky_by == Some(StickyBy::User)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArmState {
    Added,
    Retiring,
    Retired,
}

impl ArmState {
    pub fn as_str(self) -> &'static str {
        match self {
            ArmState::Added => "added",
            ArmState::Retiring => "retiring",
            ArmState::Retired => "retired",
        }
    }
}

/// A stored change of one route's arm set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmChange {
    pub route: String,
    pub model: String,
    pub state: ArmState,
    pub onboard: Option<OnboardConfig>,
    pub window_s: Option<u64>,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Control {
    /// Disabled model -> the operator's reason.
    pub disabled: BTreeMap<String, Option<String>>,
    pub experiments: Vec<Experiment>,
    pub arms: Vec<ArmChange>,
}

impl Control {
    pub fn from_rows(rows: &ControlRows, config: &Config) -> Self {
        let disabled = rows
            .flags
            .iter()
            .filter(|f| f.disabled)
            .map(|f| (f.model.clone(), f.reason.clone()))
            .collect();
        let stored = |name: &str| rows.experiments.iter().find(|r| r.name == name);
        let mut experiments: Vec<Experiment> = config
            .experiments
            .iter()
            .map(|e| {
                let row = stored(&e.name);
                Experiment {
                    name: e.name.clone(),
                    route: e.route.as_str().to_owned(),
                    kind: e.kind,
                    candidate: e.candidate.clone(),
                    share: e.share,
                    sticky_by: e.sticky_by,
                    auto_promote: e.auto_promote,
                    key_flag: e.key_flag.clone(),
                    status: row
                        .and_then(|r| Status::parse(&r.status))
                        .unwrap_or(Status::Running),
                    source: "config".into(),
                    note: row.and_then(|r| r.note.clone()),
                    created_at: row.map(|r| r.created_at),
                    updated_at: row.map(|r| r.updated_at),
                }
            })
            .collect();
        experiments.extend(
            rows.experiments
                .iter()
                .filter(|r| r.source == "api")
                .filter(|r| !config.experiments.iter().any(|e| e.name == r.name))
                .filter_map(from_row),
        );
        let arms = rows.arms.iter().filter_map(arm_change).collect();
        Self {
            disabled,
            experiments,
            arms,
        }
    }

    pub fn experiment(&self, name: &str) -> Option<&Experiment> {
        self.experiments.iter().find(|e| e.name == name)
    }

    pub fn arm(&self, route: &str, model: &str) -> Option<&ArmChange> {
        self.arms
            .iter()
            .find(|a| a.route == route && a.model == model)
    }

    /// The file with the stored arm changes applied (see the module docs).
    pub fn effective(&self, file: &Config) -> Config {
        let mut c = file.clone();
        for route in &mut c.routes {
            for a in self.arms.iter().filter(|a| a.route == route.name.as_str()) {
                let Some(model) = file.models.iter().find(|m| m.name.as_str() == a.model) else {
                    continue;
                };
                let name = model.name.clone();
                let present = route.models.contains(&name);
                match a.state {
                    ArmState::Added => {
                        if !present {
                            route.models.push(name.clone());
                        }
                        if let Some(o) = a.onboard {
                            route.onboard.entry(name).or_insert(o);
                        }
                    }
                    ArmState::Retiring => {
                        if present {
                            route.onboard.remove(&name);
                            route.retire.entry(name).or_insert(RetireConfig {
                                window_s: a.window_s.unwrap_or(0),
                            });
                        }
                    }
                    ArmState::Retired => {
                        let fixed = route
                            .bandit
                            .as_ref()
                            .and_then(|b| b.fixed_arm.as_ref())
                            .is_some_and(|f| *f == name);
                        if present && route.models.len() > 1 && !fixed {
                            route.models.retain(|m| *m != name);
                            route.onboard.remove(&name);
                            route.retire.remove(&name);
                        }
                    }
                }
            }
        }
        c
    }
}

fn from_row(r: &ExperimentRow) -> Option<Experiment> {
    let params = r.params.as_ref();
    Some(Experiment {
        name: r.name.clone(),
        route: r.route.clone(),
        kind: ExperimentKind::parse(&r.kind)?,
        candidate: r.candidate.clone(),
        share: r.share,
        sticky_by: match r.sticky_by.as_deref() {
            Some("user") => Some(StickyBy::User),
            _ => None,
        },
        auto_promote: params
            .and_then(|p| p.get("auto_promote"))
            .and_then(|v| serde_json::from_value(v.clone()).ok()),
        key_flag: params
            .and_then(|p| p.get("key_flag"))
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        status: Status::parse(&r.status)?,
        source: r.source.clone(),
        note: r.note.clone(),
        created_at: Some(r.created_at),
        updated_at: Some(r.updated_at),
    })
}

fn arm_change(r: &ArmRow) -> Option<ArmChange> {
    let state = match r.state.as_str() {
        "added" => ArmState::Added,
        "retiring" => ArmState::Retiring,
        "retired" => ArmState::Retired,
        _ => return None,
    };
    let onboard = match (r.explore_quota, r.explore_share, r.prior_quality) {
        (None, None, None) => None,
        (quota, share, prior) => {
            let d = OnboardConfig::default();
            Some(OnboardConfig {
                prior_quality: prior,
                explore_quota: quota.map_or(d.explore_quota, |q| q.max(0) as u64),
                explore_share: share.unwrap_or(d.explore_share),
            })
        }
    };
    Some(ArmChange {
        route: r.route.clone(),
        model: r.model.clone(),
        state,
        onboard,
        window_s: r.window_s.map(|w| w.max(0) as u64),
        started_at: r.started_at,
    })
}
