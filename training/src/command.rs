//! The `switchboard train` command (run by the `switchboard-train` binary):
//! arguments, the trainer lock, and one run over the chosen routes (batch
//! retraining from the log, or a warm start from a labelled file).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use chrono::Utc;
use switchboard::cli::age::{parse_age, parse_since};
use switchboard::config::{self, Config, Env};
use switchboard::retrain::SKIPPED_PREFIX;
use switchboard::startup::database_url;
use switchboard::store::Store;

use crate::job::{pca_applies, summary, train_route, RouteSetup, TrainOptions};
use crate::warm::warm_start;

#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Route to train (default: every route).
    #[arg(long)]
    pub route: Option<String>,
    /// Full-information JSONL file to fit priors from instead of the log.
    #[arg(long)]
    pub labelled: Option<PathBuf>,
    /// Start of the window: RFC 3339, or an age like `30d`, `12h`, `15m`.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// Feedback later than this after its request is ignored (e.g. `7d`).
    #[arg(long, default_value = "7d")]
    pub attribution_window: String,
    /// Reward units by which the candidate's DR lower bound must beat the active policy.
    #[arg(long, default_value_t = 0.0)]
    pub margin: f64,
    /// One in N rows (by request id) is held out for off-policy evaluation.
    #[arg(long, default_value_t = 5)]
    pub holdout: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fit a PCA projection of the hashed word features with K components
    /// (1..=hash_buckets); the candidate carries it and serving applies it.
    #[arg(long, value_name = "K")]
    pub pca: Option<usize>,
}

/// Runs the command: loads the configuration, connects, takes the trainer
/// lock (or reports that another trainer holds it) and trains. Returns what
/// it prints.
pub async fn run(a: &TrainArgs, env: &Env) -> anyhow::Result<String> {
    let config = config::load(a.config.as_deref(), env)?;
    let store = Store::connect_lazy(&database_url(env))?;
    store.migrate().await.context("applying migrations")?;
    let Some(lock) = store
        .try_trainer_lock()
        .await
        .context("taking the trainer lock")?
    else {
        store.close().await;
        return Ok(format!(
            "{SKIPPED_PREFIX} another trainer is running on this database (it holds the trainer lock)\n"
        ));
    };
    let result = train_routes(&store, &config, a).await;
    // Released even when the run failed; a lost connection releases it too.
    let released = lock.release().await;
    store.close().await;
    let out = result?;
    released.context("releasing the trainer lock")?;
    Ok(out)
}

async fn train_routes(store: &Store, config: &Config, a: &TrainArgs) -> anyhow::Result<String> {
    let routes: Vec<String> = match &a.route {
        Some(r) => vec![r.clone()],
        None => config.routes.iter().map(|r| r.name.to_string()).collect(),
    };
    let now = Utc::now();
    let opts = TrainOptions {
        since: parse_since(&a.since, now).map_err(|e| anyhow::anyhow!("--since: {e}"))?,
        until: now,
        attribution_s: parse_age(&a.attribution_window)
            .context("--attribution-window: an age like 7d")?
            .as_secs_f64(),
        margin: a.margin,
        holdout: a.holdout,
        seed: a.seed,
        progress: std::io::stdout().is_terminal(),
        pca: a.pca,
    };
    anyhow::ensure!(
        a.pca.is_none() || a.labelled.is_none(),
        "--pca applies to retraining from the log, not to a --labelled warm start"
    );
    let setups = routes
        .iter()
        .map(|r| RouteSetup::new(config, r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A bad --pca fails before any route is trained (nothing is stored).
    if let Some(k) = a.pca {
        for setup in &setups {
            pca_applies(setup, k).with_context(|| format!("route {}", setup.name))?;
        }
    }
    let mut out = String::new();
    for setup in setups {
        let route = setup.name.clone();
        if let Some(path) = &a.labelled {
            let r = warm_start(store, config, &setup, path).await?;
            out += &format!(
                "route {route}: warm start {} from {} prompts of {} ({} arms matched), stored as active\n",
                r.version,
                r.prompts,
                r.file,
                r.matched.len()
            );
        } else {
            let r = train_route(store, &setup, &opts).await?;
            out += &summary(&r);
        }
    }
    Ok(out)
}
