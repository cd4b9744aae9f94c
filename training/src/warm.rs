//! Warm start: priors from a full-information labelled file (every arm's
//! reward and cost for each prompt, the format of `data/routing-val.jsonl`).
//!
//! Each prompt is encoded with the route's encoder; every arm the file
//! names (matched to the route's models by `name` or `upstream_name`) adds
//! its reward to the arm's quality moments and its log-cost to the outcome
//! moments (latency, absent from the file, is held at the route's prior).
//! The fits go through the same cross-validated ridge as `job.rs`.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use switchboard::bandit::PolicySnapshot;
use switchboard::config::Config;
use switchboard::features::PromptView;
use switchboard::sim::replay::load_dataset;
use switchboard::store::Store;

use crate::fit::{bucket, ArmFitReport, Fitter, FOLDS};
use crate::job::{publish, RouteSetup};

#[derive(Debug, Clone, Serialize)]
pub struct WarmReport {
    pub kind: &'static str,
    pub route: String,
    pub version: String,
    pub file: String,
    pub prompts: usize,
    /// File arm id -> route arm, for the arms that matched.
    pub matched: Vec<(String, String)>,
    pub arms: Vec<ArmFitReport>,
}

/// Fits priors from `path` for the route; returns the snapshot and report.
pub fn fit_labelled(
    config: &Config,
    setup: &RouteSetup,
    path: &Path,
    label: &str,
) -> anyhow::Result<(PolicySnapshot, WarmReport)> {
    let data = load_dataset(path).with_context(|| format!("reading {}", path.display()))?;
    let latency = setup.spec.config.prior_latency_s;
    let mut fitter = Fitter::new(&setup.spec);
    let mut matched: Vec<(String, String)> = Vec::new();
    for (i, rec) in data.records.iter().enumerate() {
        let x = setup
            .encoder
            .features(&PromptView::single_user(&rec.prompt));
        for (id, (reward, cost)) in &rec.arms {
            let Some(arm) = arm_for(config, setup, id) else {
                continue;
            };
            if i == 0 || !matched.iter().any(|(f, _)| f == id) {
                if let Some(a) = setup.spec.arms.get(arm) {
                    matched.push((id.clone(), a.name.to_string()));
                }
            }
            let fold = bucket(&rec.prompt) as usize % FOLDS;
            fitter.add(
                arm,
                fold,
                x.as_slice(),
                Some(reward.get()),
                Some((cost.get(), latency)),
                false,
            );
        }
    }
    matched.sort();
    matched.dedup();
    anyhow::ensure!(
        !matched.is_empty(),
        "no arm of {} matches a model of route {} by name or upstream_name",
        path.display(),
        setup.name
    );
    let (fits, arms) = fitter.finish();
    let snapshot = PolicySnapshot::from_fitted(&setup.spec, label, fits)?.prepare(&setup.spec)?;
    Ok((
        snapshot,
        WarmReport {
            kind: "warm_start",
            route: setup.name.clone(),
            version: label.to_owned(),
            file: path.display().to_string(),
            prompts: data.records.len(),
            matched,
            arms,
        },
    ))
}

fn arm_for(config: &Config, setup: &RouteSetup, id: &str) -> Option<usize> {
    setup.spec.arms.iter().position(|a| {
        a.name.as_str() == id
            || config
                .models
                .iter()
                .any(|m| m.name == a.name && m.upstream_name() == id)
    })
}

/// Fits and publishes the priors as the route's active version.
pub async fn warm_start(
    store: &Store,
    config: &Config,
    setup: &RouteSetup,
    path: &Path,
) -> anyhow::Result<WarmReport> {
    let version = format!("v{}", store.next_policy_number().await?);
    let (snapshot, report) = fit_labelled(config, setup, path, &version)?;
    let parent = store.active_policy(&setup.name).await?.map(|p| p.version);
    publish(
        store,
        &setup.name,
        &snapshot,
        &report,
        parent.as_deref(),
        true,
    )
    .await?;
    Ok(report)
}
