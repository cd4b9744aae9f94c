//! An experiment's status and results, as `GET /admin/experiments/{name}`
//! and `switchboard experiment status` show them: per arm, traffic,
//! errors, cost, latency (mean, p95) and reward with its confidence
//! interval, and the candidate-minus-control difference. A shadow policy's
//! value is estimated off-policy (IPS) on the decisions it scored.

use serde_json::{json, Value};

use super::Gateway;
use crate::experiments::stats::{self, ArmSummary, Interval, Logged, Obs};
use crate::experiments::{Experiment, ExperimentKind};
use crate::store::experiments::ExperimentObs;
use crate::store::StoreError;

/// Confidence of the intervals shown (auto-promotion uses its own).
const CONFIDENCE: f64 = 0.95;
/// Rewarded requests the candidate needs before its mean becomes a prior.
const PRIOR_MIN_SAMPLES: u64 = 30;

fn obs(rows: &[ExperimentObs], arm: &str) -> Vec<Obs> {
    rows.iter()
        .filter(|r| r.arm == arm)
        .map(|r| Obs {
            ok: r.ok,
            cost_usd: r.cost_usd,
            latency_ms: r.latency_ms,
            reward: r.reward,
        })
        .collect()
}

/// Per-arm summaries of an experiment: `(arm, summary)`.
pub async fn arms(
    gw: &Gateway,
    e: &Experiment,
    confidence: f64,
) -> Result<Vec<(String, ArmSummary)>, StoreError> {
    Ok(match e.kind {
        ExperimentKind::Canary | ExperimentKind::Ab => {
            let rows = gw.store.experiment_rows("assigned", &e.name).await?;
            ["control", "candidate"]
                .iter()
                .map(|a| {
                    (
                        (*a).to_owned(),
                        stats::summarize(&obs(&rows, a), confidence),
                    )
                })
                .collect()
        }
        ExperimentKind::Shadow => {
            let mirrors = gw.store.experiment_rows("assigned", &e.name).await?;
            let originals = gw.store.experiment_rows("mirrored", &e.name).await?;
            let all: Vec<Obs> = obs(&originals, "control")
                .into_iter()
                .chain(
                    originals
                        .iter()
                        .filter(|r| r.arm != "control")
                        .map(|r| Obs {
                            ok: r.ok,
                            cost_usd: r.cost_usd,
                            latency_ms: r.latency_ms,
                            reward: r.reward,
                        }),
                )
                .collect();
            vec![
                ("control".into(), stats::summarize(&all, confidence)),
                (
                    "shadow".into(),
                    stats::summarize(&obs(&mirrors, "shadow"), confidence),
                ),
            ]
        }
        ExperimentKind::ShadowPolicy => {
            let rows = scored(gw, e).await?;
            let logged: Vec<Obs> = rows
                .iter()
                .map(|r| Obs {
                    ok: r.ok,
                    cost_usd: r.cost_usd,
                    latency_ms: r.latency_ms,
                    reward: r.reward,
                })
                .collect();
            vec![("logged".into(), stats::summarize(&logged, confidence))]
        }
    })
}

async fn scored(gw: &Gateway, e: &Experiment) -> Result<Vec<ExperimentObs>, StoreError> {
    let rows = gw.store.experiment_rows("scored", &e.route).await?;
    Ok(rows
        .into_iter()
        .filter(|r| {
            r.counterfactual
                .as_ref()
                .and_then(|c| c.get("experiment"))
                .and_then(Value::as_str)
                == Some(e.name.as_str())
        })
        .collect())
}

/// The shadow policy's IPS value on the decisions it scored, and how often
/// it would have chosen the model that was chosen.
pub async fn shadow_policy_value(
    gw: &Gateway,
    e: &Experiment,
    confidence: f64,
) -> Result<(Option<Interval>, Option<f64>), StoreError> {
    let rows = scored(gw, e).await?;
    let logged: Vec<Logged> = rows
        .iter()
        .filter_map(|r| {
            let cf = r.counterfactual.as_ref()?;
            Some(Logged {
                reward: r.reward?,
                p_logged: r.propensity?,
                p_target: cf.get("p_logged")?.as_f64()?,
            })
        })
        .collect();
    let agree = rows
        .iter()
        .filter(|r| {
            r.counterfactual
                .as_ref()
                .and_then(|c| c.get("choice"))
                .and_then(Value::as_str)
                == r.model.as_deref()
        })
        .count();
    let agreement = (!rows.is_empty()).then(|| agree as f64 / rows.len() as f64);
    Ok((stats::ips(&logged, confidence), agreement))
}

/// The candidate arm's mean reward, once it has enough feedback.
pub async fn candidate_reward(gw: &Gateway, e: &Experiment) -> Option<f64> {
    let arms = arms(gw, e, CONFIDENCE).await.ok()?;
    let (_, s) = arms
        .iter()
        .find(|(a, _)| a == "candidate" || a == "shadow")?;
    s.reward
        .filter(|r| r.n >= PRIOR_MIN_SAMPLES)
        .map(|r| r.mean.clamp(0.0, 1.0))
}

/// The full status document.
pub async fn report(gw: &Gateway, e: &Experiment) -> Result<Value, StoreError> {
    let plan = gw.plan.load();
    let problem = plan
        .problems
        .iter()
        .find(|(n, _)| *n == e.name)
        .map(|(_, why)| why.clone());
    let arms = arms(gw, e, CONFIDENCE).await?;
    let mut doc = json!({
        "name": e.name,
        "route": e.route,
        "kind": e.kind,
        "candidate": e.candidate,
        "share": e.share,
        "sticky_by": e.sticky_by,
        "auto_promote": e.auto_promote,
        "key_flag": e.key_flag,
        "status": e.status,
        "source": e.source,
        "note": e.note,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
        "problem": problem,
        "confidence": CONFIDENCE,
        "arms": arms.iter().map(|(a, s)| (a.clone(), json!(s))).collect::<serde_json::Map<_, _>>(),
    });
    let mean = |name: &str| {
        arms.iter()
            .find(|(a, _)| a == name)
            .and_then(|(_, s)| s.reward)
    };
    let candidate = mean("candidate").or_else(|| mean("shadow"));
    if let (Some(c), Some(k)) = (candidate, mean("control")) {
        doc["difference"] = json!(difference(c, k));
    }
    if let Some(v) = super::rollout::verdict(gw, e).await {
        doc["auto_promote_verdict"] = json!(v);
    }
    if e.kind == ExperimentKind::ShadowPolicy {
        let (value, agreement) = shadow_policy_value(gw, e, CONFIDENCE).await?;
        doc["off_policy"] = json!({"estimator": "ips", "value": value, "agreement": agreement});
        if let (Some(v), Some(k)) = (value, mean("logged")) {
            doc["difference"] = json!(difference(v, k));
        }
    }
    Ok(doc)
}

/// Candidate minus control with a Welch interval (from the two intervals'
/// half-widths, which share the z).
pub fn difference(c: Interval, k: Interval) -> Interval {
    let hc = (c.hi - c.lo) / 2.0;
    let hk = (k.hi - k.lo) / 2.0;
    let half = (hc * hc + hk * hk).sqrt();
    let d = c.mean - k.mean;
    Interval {
        mean: d,
        lo: d - half,
        hi: d + half,
        n: c.n.min(k.n),
    }
}
