//! The `switchboard train` run for one route: stream the log once to fit a
//! candidate (rows outside the holdout), stream it again to evaluate the
//! candidate and the active policy off-policy on the holdout, apply the
//! guard, store the version with its report, print a summary.
//!
//! With `--pca K` a first pass takes a bounded sample of the feature
//! vectors and fits a projection of the hashed block (`pca.rs`); the ridge
//! fits then run on projected vectors and the candidate carries the
//! projection. Evaluation hands both policies raw vectors: each snapshot
//! projects (or not) by itself.
//!
//! Rewards are recomputed from raw outcomes under the route's objective as
//! configured now: `quality - cost_weight * usd - latency_weight * s`,
//! quality being the latest `quality` feedback within the attribution
//! window, or 0 for a failed request; rows with neither are used for the
//! cost/latency models only. Memory is bounded by the sufficient statistics
//! and the bootstrap replicates, never by the number of rows.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use switchboard::bandit::{DecisionRequest, Objective, PolicySnapshot, RouteSpec};
use switchboard::config::Config;
use switchboard::features::{Encoder, Projection};
use switchboard::gateway::learning::{policy_config, route_spec};
use switchboard::store::policies::NewPolicy;
use switchboard::store::training::{LogWindow, LoggedRow};
use switchboard::store::Store;

use crate::fit::{bucket, ArmFitReport, Fitter, FOLDS};
use crate::ope::{self, OpeAccumulator, OpeEstimates};
use crate::pca::{self, PcaReport, Reservoir};
use crate::progress::Progress;

/// Knobs of one run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub attribution_s: f64,
    /// Publish only if the candidate's DR lower bound beats the active
    /// policy's DR estimate by more than this (reward units).
    pub margin: f64,
    /// One row in `holdout` (by request-id hash) is kept for evaluation.
    pub holdout: u64,
    pub seed: u64,
    /// Draw progress bars on stderr (the command sets it on a terminal).
    pub progress: bool,
    /// Fit a PCA projection of the hashed features with this many
    /// components (`--pca K`); `None`: the raw features.
    pub pca: Option<usize>,
}

impl TrainOptions {
    /// Whether a request (by id) belongs to the evaluation holdout.
    pub fn held_out(&self, id: &str) -> bool {
        self.holdout > 1 && bucket(id).is_multiple_of(self.holdout)
    }
}

/// The route as serving builds it.
pub struct RouteSetup {
    pub name: String,
    pub encoder: Encoder,
    pub spec: RouteSpec,
    pub objective: Objective,
}

impl RouteSetup {
    pub fn new(config: &Config, route: &str) -> anyhow::Result<Self> {
        let r = config
            .routes
            .iter()
            .find(|r| r.name.as_str() == route)
            .with_context(|| format!("no route {route:?} in the configuration"))?;
        let encoder = Encoder::new(r.features.clone().unwrap_or_default())
            .with_context(|| format!("route {route}: features"))?;
        let spec = route_spec(r, &encoder, config);
        debug_assert_eq!(spec.config, policy_config(r));
        Ok(Self {
            name: route.to_owned(),
            encoder,
            spec,
            objective: Objective {
                cost_weight: r.objective.cost_weight,
                latency_weight: r.objective.latency_weight,
            },
        })
    }

    /// Reward under the current objective, if the row has a quality.
    pub fn reward(&self, row: &LoggedRow) -> Option<f64> {
        let q = if row.ok { row.quality? } else { 0.0 };
        Some(
            q - self.objective.cost_weight * row.cost_usd
                - self.objective.latency_weight * row.latency_ms / 1e3,
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Guard {
    pub margin: f64,
    pub passed: bool,
    pub reason: String,
}

/// The run's report (stored as `policy_snapshots.metrics`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub kind: &'static str,
    pub route: String,
    pub version: String,
    pub parent: Option<String>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub attribution_s: f64,
    pub rows_read: u64,
    pub rows_skipped: u64,
    pub rows_trained: u64,
    pub arms: Vec<ArmFitReport>,
    /// The candidate's projection (`--pca`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pca: Option<PcaReport>,
    pub candidate: OpeEstimates,
    pub active: OpeEstimates,
    pub active_version: String,
    /// Mean reward the logging policy actually got on the holdout.
    pub logged_reward: f64,
    pub guard: Guard,
    pub status: &'static str,
}

/// The policy serving runs now: its online state if saved, else the active
/// version, else a fresh policy. Returns it with the active version key.
pub async fn serving_policy(
    store: &Store,
    setup: &RouteSetup,
) -> anyhow::Result<(PolicySnapshot, Option<String>)> {
    let active = store.active_policy(&setup.name).await?;
    let key = active.as_ref().map(|a| a.version.clone());
    if let Some(text) = store.load_policy_state(&setup.name).await? {
        if let Ok(s) = PolicySnapshot::from_json(&text).and_then(|s| s.prepare(&setup.spec)) {
            return Ok((s, key));
        }
    }
    if let Some(a) = &active {
        if let Ok(s) = PolicySnapshot::from_json(&a.parameters).and_then(|s| s.prepare(&setup.spec))
        {
            return Ok((s, key));
        }
    }
    Ok((PolicySnapshot::new(&setup.spec)?, key))
}

/// Arm indices of the eligible names and the chosen arm's position.
fn arms_of(p: &PolicySnapshot, row: &LoggedRow) -> Option<(Vec<usize>, usize)> {
    let mut eligible: Vec<usize> = row.eligible.iter().filter_map(|n| p.arm_index(n)).collect();
    eligible.dedup();
    let chosen = p.arm_index(&row.chosen)?;
    eligible.contains(&chosen).then_some((eligible, chosen))
}

pub async fn train_route(
    store: &Store,
    setup: &RouteSetup,
    opts: &TrainOptions,
) -> anyhow::Result<TrainReport> {
    let window = LogWindow {
        route: setup.name.clone(),
        since: opts.since,
        until: opts.until,
        attribution_s: opts.attribution_s,
    };
    let d = setup.spec.dimension;
    if let Some(k) = opts.pca {
        pca_applies(setup, k)?;
    }
    let (active, active_key) = serving_policy(store, setup).await?;

    // Counting costs an index scan: only worth it for a bar someone watches.
    let total = if opts.progress {
        Some(store.count_logged_rows(&window).await?)
    } else {
        None
    };

    // Pass 0 (`--pca`): sample the rows pass 1 trains on, fit the axes.
    let projection = match opts.pca {
        Some(k) => Some(fit_projection(store, setup, opts, &window, total, k).await?),
        None => None,
    };
    let inner = projection.as_ref().map_or(d, |(p, _)| 1 + p.rows);
    let mut projected = vec![0.0; inner];

    // Pass 1: fit on the rows outside the holdout.
    let mut bar = Progress::new(opts.progress, total, &format!("{}: fitting", setup.name));
    let mut fitter = Fitter::with_dimension(&setup.spec, inner);
    let (mut read, mut skipped, mut trained) = (0u64, 0u64, 0u64);
    let mut rows = store.logged_rows(&window);
    while let Some(row) = rows.next().await {
        let row = row.context("reading the logged requests")?;
        bar.tick();
        read += 1;
        let Some(arm) = setup
            .spec
            .arms
            .iter()
            .position(|a| a.name.as_str() == row.chosen)
        else {
            skipped += 1;
            continue;
        };
        if row.features.len() != d || opts.held_out(&row.id) {
            skipped += u64::from(row.features.len() != d);
            continue;
        }
        let quality = if row.ok { row.quality } else { Some(0.0) };
        let outcome = row.ok.then_some((row.cost_usd, row.latency_ms / 1e3));
        let fold = (bucket(&row.id) / opts.holdout.max(1)) as usize % FOLDS;
        let x = match &projection {
            Some((p, _)) => {
                p.apply_with_bias(&row.features, &mut projected);
                &projected[..]
            }
            None => &row.features[..],
        };
        fitter.add(arm, fold, x, quality, outcome, !row.ok);
        trained += 1;
    }
    drop(rows);
    bar.finish();
    let version = format!("v{}", store.next_policy_number().await?);
    let (fits, arms) = fitter.finish();
    let (projection, pca_report) = projection.unzip();
    let candidate = PolicySnapshot::from_fitted_projected(&setup.spec, &version, projection, fits)
        .context("building the candidate snapshot")?
        .prepare(&setup.spec)
        .context("the candidate does not fit the route")?;

    // Pass 2: evaluate both policies on the holdout.
    let mut rng = ope::rng(opts.seed);
    let (mut cand_acc, mut act_acc) = (OpeAccumulator::new(), OpeAccumulator::new());
    let (mut logged_sum, mut logged_n) = (0.0, 0.0);
    let mut bar = Progress::new(opts.progress, total, &format!("{}: evaluating", setup.name));
    let mut rows = store.logged_rows(&window);
    while let Some(row) = rows.next().await {
        let row = row.context("reading the logged requests")?;
        bar.tick();
        if opts.holdout > 1 && !opts.held_out(&row.id) || row.features.len() != d {
            continue;
        }
        let (Some(r), Some((eligible, chosen))) = (setup.reward(&row), arms_of(&candidate, &row))
        else {
            continue;
        };
        if row.propensity.is_nan() || row.propensity <= 0.0 {
            continue;
        }
        let req = DecisionRequest::new(&row.features, &eligible, setup.objective);
        let r_hat = |arm: usize| {
            candidate
                .predict(arm, &row.features)
                .map_or(0.0, |(q, c, l)| {
                    q - setup.objective.cost_weight * c - setup.objective.latency_weight * l
                })
        };
        let r_logged = r_hat(chosen);
        for (policy, acc) in [(&candidate, &mut cand_acc), (&active, &mut act_acc)] {
            let probs = policy.probabilities(&req)?;
            let pi = probs
                .iter()
                .find(|(a, _)| *a == chosen)
                .map_or(0.0, |p| p.1);
            let direct: f64 = probs.iter().map(|&(a, p)| p * r_hat(a)).sum();
            acc.add(&mut rng, pi / row.propensity, r, r_logged, direct);
        }
        logged_sum += r;
        logged_n += 1.0;
    }
    drop(rows);
    bar.finish();
    let (cand, act) = (cand_acc.finish(), act_acc.finish());
    let passed = cand.rows > 0 && cand.dr.lo > act.dr.value + opts.margin;
    let reason = if cand.rows == 0 {
        "no logged rows with a reward to evaluate on".to_owned()
    } else if passed {
        format!(
            "the candidate's DR lower bound {:.4} beats the active policy's {:.4} by more than {}",
            cand.dr.lo, act.dr.value, opts.margin
        )
    } else {
        format!(
            "the candidate's DR lower bound {:.4} does not beat the active policy's {:.4} + {}",
            cand.dr.lo, act.dr.value, opts.margin
        )
    };
    let report = TrainReport {
        kind: "train",
        route: setup.name.clone(),
        version: version.clone(),
        parent: active_key.clone(),
        since: opts.since,
        until: opts.until,
        attribution_s: opts.attribution_s,
        rows_read: read,
        rows_skipped: skipped,
        rows_trained: trained,
        arms,
        pca: pca_report,
        candidate: cand,
        active: act,
        active_version: active_key.clone().unwrap_or_else(|| "online".into()),
        logged_reward: if logged_n > 0.0 {
            logged_sum / logged_n
        } else {
            0.0
        },
        guard: Guard {
            margin: opts.margin,
            passed,
            reason,
        },
        status: if passed { "active" } else { "candidate" },
    };
    publish(
        store,
        &setup.name,
        &candidate,
        &report,
        active_key.as_deref(),
        passed,
    )
    .await?;
    Ok(report)
}

/// `--pca K` needs raw hashed features on the route: K within the
/// buckets, and no projection configured on the route's features already.
pub fn pca_applies(setup: &RouteSetup, k: usize) -> anyhow::Result<()> {
    let spec = setup.encoder.spec();
    anyhow::ensure!(
        spec.projection.is_none(),
        "--pca: route {} already has a projection in its feature configuration",
        setup.name
    );
    pca::check_components(k, spec.hash_buckets)
}

/// Streams the rows pass 1 will train on into a bounded sample and fits
/// the projection on it (off the async threads: the fit is CPU work).
async fn fit_projection(
    store: &Store,
    setup: &RouteSetup,
    opts: &TrainOptions,
    window: &LogWindow,
    total: Option<u64>,
    k: usize,
) -> anyhow::Result<(Projection, PcaReport)> {
    let d = setup.spec.dimension;
    let mut sample = Reservoir::new(setup.encoder.spec().hash_buckets, opts.seed);
    let mut bar = Progress::new(opts.progress, total, &format!("{}: sampling", setup.name));
    let mut rows = store.logged_rows(window);
    while let Some(row) = rows.next().await {
        let row = row.context("reading the logged requests")?;
        bar.tick();
        let known = setup
            .spec
            .arms
            .iter()
            .any(|a| a.name.as_str() == row.chosen);
        if known && row.features.len() == d && !opts.held_out(&row.id) {
            sample.offer(&row.features);
        }
    }
    drop(rows);
    bar.finish();
    tokio::task::spawn_blocking(move || pca::fit(sample, k, d))
        .await
        .context("the PCA fit stopped")?
}

/// Stores a snapshot version with its report (activating it if asked).
pub async fn publish<R: Serialize>(
    store: &Store,
    route: &str,
    snapshot: &PolicySnapshot,
    report: &R,
    parent: Option<&str>,
    active: bool,
) -> anyhow::Result<()> {
    let parameters = serde_json::to_value(snapshot).context("serialising the snapshot")?;
    let metrics = serde_json::to_value(report).context("serialising the report")?;
    let algorithm = serde_json::to_value(snapshot.config().algorithm)?
        .as_str()
        .unwrap_or("linucb")
        .to_owned();
    store
        .insert_policy(&NewPolicy {
            version: snapshot.label(),
            route,
            algorithm: &algorithm,
            parameters: &parameters,
            metrics: &metrics,
            parent,
            active,
        })
        .await
        .context("storing the policy version")?;
    Ok(())
}

/// The readable summary printed after a run.
pub fn summary(r: &TrainReport) -> String {
    let line = |name: &str, e: &OpeEstimates| {
        format!(
            "  {name:<10} IPS {:.4} [{:.4}, {:.4}]  SNIPS {:.4} [{:.4}, {:.4}]  DR {:.4} [{:.4}, {:.4}]  (ESS {:.0})\n",
            e.ips.value, e.ips.lo, e.ips.hi, e.snips.value, e.snips.lo, e.snips.hi,
            e.dr.value, e.dr.lo, e.dr.hi, e.effective_rows
        )
    };
    let mut s = format!(
        "route {}: {} rows read, {} trained on, {} evaluated (holdout), {} skipped\n",
        r.route, r.rows_read, r.rows_trained, r.candidate.rows, r.rows_skipped
    );
    for a in &r.arms {
        let q = a.quality.as_ref().map_or("prior".to_owned(), |c| {
            format!("lambda {} on {} rows", c.lambda, c.rows)
        });
        let o = a.outcome.as_ref().map_or("prior".to_owned(), |c| {
            format!("lambda {} on {} rows", c.lambda, c.rows)
        });
        s += &format!("  arm {:<24} quality: {q}; cost/latency: {o}\n", a.arm);
    }
    if let Some(p) = &r.pca {
        s += &format!(
            "  pca: {} components, projection {} x {}, explained variance {:.4} of the hashed features (fitted on {} of {} rows)\n",
            p.components, p.rows, p.cols, p.explained_variance, p.sample_rows, p.rows_seen
        );
    }
    s += &format!("  logged policy mean reward {:.4}\n", r.logged_reward);
    s += &line(&r.version, &r.candidate);
    s += &line(&r.active_version, &r.active);
    s += &format!("{} stored as {}: {}\n", r.version, r.status, r.guard.reason);
    s
}
