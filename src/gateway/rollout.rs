//! Policies roll out like code: automatic promotion and rollback of a
//! policy-version candidate running as a canary or A/B arm (or in shadow)
//! with `auto_promote.enabled`.
//!
//! Promotion needs both:
//! - offline: the candidate's doubly-robust lower bound from its training
//!   report (`policy_snapshots.metrics`: `candidate.dr.lo`) beats the
//!   incumbent's estimate on the same logs (`active.dr.value`);
//! - online: the lower end of the interval of (candidate − control) mean
//!   reward on live traffic is above 0 (for a shadow policy: its IPS value
//!   against the logged reward), each side with `min_samples` rewarded
//!   requests.
//!
//! Rollback: the upper end of that interval is below 0 — the candidate is
//! worse with the stated confidence. Otherwise: wait. A promoted canary or
//! A/B candidate becomes the active version (every replica swaps to it); a
//! shadow policy that wins moves on to a canary of `SHADOW_TO_CANARY` of the
//! traffic, itself auto-promoted. The evaluator runs on the control task
//! (`control.rs`) every `EVERY` and never on the request path.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::experiment_ops::ExperimentDef;
use super::live::Live;
use super::report::{self, difference};
use super::Gateway;
use crate::experiments::stats::Interval;
use crate::experiments::{AutoPromote, Experiment, ExperimentKind, Status};

pub const EVERY: Duration = Duration::from_secs(5);
/// The canary share a winning shadow policy moves on to.
const SHADOW_TO_CANARY: f64 = 0.05;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    Promote { reason: String },
    RollBack { reason: String },
    Wait { reason: String },
}

/// Is `e`'s candidate a stored policy version (not a model or a route)?
fn policy_candidate(gw: &Gateway, e: &Experiment) -> bool {
    match e.kind {
        ExperimentKind::Canary => gw.catalog.model(&e.candidate).is_none(),
        ExperimentKind::Ab => gw.catalog.route_index(&e.candidate).is_none(),
        ExperimentKind::ShadowPolicy => true,
        ExperimentKind::Shadow => false,
    }
}

/// The offline check, from the candidate's training report.
async fn offline(gw: &Gateway, version: &str) -> Result<String, String> {
    let row = gw
        .store
        .policy(version)
        .await
        .map_err(|e| format!("reading the report failed: {e}"))?
        .ok_or_else(|| format!("no stored version {version:?}"))?;
    let metrics = row.metrics.unwrap_or(Value::Null);
    let lo = metrics.pointer("/candidate/dr/lo").and_then(Value::as_f64);
    let incumbent = metrics.pointer("/active/dr/value").and_then(Value::as_f64);
    match (lo, incumbent) {
        (Some(lo), Some(inc)) if lo > inc => Ok(format!(
            "offline DR lower bound {lo:.4} > incumbent {inc:.4}"
        )),
        (Some(lo), Some(inc)) => Err(format!(
            "offline DR lower bound {lo:.4} does not beat the incumbent's {inc:.4}"
        )),
        _ => Err(
            "the version's report has no offline estimate (candidate.dr.lo, active.dr.value)"
                .into(),
        ),
    }
}

/// The online comparison: (candidate − control) with its interval.
async fn online(gw: &Gateway, e: &Experiment, a: &AutoPromote) -> Result<Interval, String> {
    let arms = report::arms(gw, e, a.confidence)
        .await
        .map_err(|err| format!("reading results failed: {err}"))?;
    let reward = |name: &str| {
        arms.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, s)| s.reward)
    };
    let (candidate, control) = if e.kind == ExperimentKind::ShadowPolicy {
        let (value, _) = report::shadow_policy_value(gw, e, a.confidence)
            .await
            .map_err(|err| format!("reading results failed: {err}"))?;
        (value, reward("logged"))
    } else {
        (reward("candidate"), reward("control"))
    };
    let (Some(c), Some(k)) = (candidate, control) else {
        return Err("no rewarded requests yet".into());
    };
    if c.n < a.min_samples || k.n < a.min_samples {
        return Err(format!(
            "{} and {} rewarded requests so far; {} each needed",
            c.n, k.n, a.min_samples
        ));
    }
    Ok(difference(c, k))
}

/// What the evaluator would do with `e` now.
pub async fn verdict(gw: &Gateway, e: &Experiment) -> Option<Verdict> {
    let a = e.auto_promote.filter(|a| a.enabled)?;
    if e.status != Status::Running || !policy_candidate(gw, e) {
        return None;
    }
    let d = match online(gw, e, &a).await {
        Ok(d) => d,
        Err(reason) => return Some(Verdict::Wait { reason }),
    };
    let online = format!(
        "online difference {:.4} [{:.4}, {:.4}] at {:.0}%",
        d.mean,
        d.lo,
        d.hi,
        a.confidence * 100.0
    );
    if d.hi < 0.0 {
        return Some(Verdict::RollBack {
            reason: format!("the candidate does worse: {online}"),
        });
    }
    if d.lo <= 0.0 {
        return Some(Verdict::Wait {
            reason: format!("not yet better: {online}"),
        });
    }
    Some(match offline(gw, &e.candidate).await {
        Ok(why) => Verdict::Promote {
            reason: format!("{why}; {online}"),
        },
        Err(why) => Verdict::Wait {
            reason: format!("online better ({online}) but {why}"),
        },
    })
}

/// Applies the verdicts of every auto-promoted experiment.
pub async fn evaluate(live: &Live) {
    let gw = live.current();
    let control = gw.plan.load().control.clone();
    for e in &control.experiments {
        let Some(v) = verdict(&gw, e).await else {
            continue;
        };
        let result = match &v {
            Verdict::Wait { .. } => Ok(()),
            Verdict::RollBack { reason } => {
                tracing::warn!(experiment = %e.name, %reason, "Rolling back a policy candidate.");
                live.set_status(&e.name, Status::RolledBack, Some(reason))
                    .await
            }
            Verdict::Promote { reason } if e.kind == ExperimentKind::ShadowPolicy => {
                tracing::info!(experiment = %e.name, %reason, "A shadow policy won; it moves on to a canary.");
                let canary = ExperimentDef {
                    route: e.route.clone(),
                    kind: ExperimentKind::Canary,
                    candidate: e.candidate.clone(),
                    share: SHADOW_TO_CANARY,
                    sticky_by: e.sticky_by,
                    auto_promote: e.auto_promote,
                    key_flag: e.key_flag.clone(),
                };
                match live
                    .set_status(&e.name, Status::Promoted, Some(reason))
                    .await
                {
                    Ok(()) => {
                        live.start_experiment(&format!("{}-canary", e.name), Some(canary))
                            .await
                    }
                    Err(err) => Err(err),
                }
            }
            Verdict::Promote { reason } => {
                tracing::info!(experiment = %e.name, %reason, "Promoting a policy candidate.");
                match live.promote_experiment(&e.name, Default::default()).await {
                    Ok(()) => {
                        live.set_status(&e.name, Status::Promoted, Some(reason))
                            .await
                    }
                    Err(err) => Err(err),
                }
            }
        };
        if let Err(err) = result {
            tracing::warn!(experiment = %e.name, error = %err, "Applying an automatic verdict failed; will retry.");
        }
    }
}
