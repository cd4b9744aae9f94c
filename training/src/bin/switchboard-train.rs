//! `switchboard-train`: the batch side of the `switchboard` CLI (`train`),
//! a separate binary so linfa/ndarray never link into the router; the
//! `switchboard train ...` command runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use clap::{Parser, Subcommand};
use switchboard::config::{self, Env};
use switchboard::startup::database_url;
use switchboard::store::Store;
use switchboard_training::job::{summary, train_route, RouteSetup, TrainOptions};
use switchboard_training::warm::warm_start;

#[derive(Parser)]
#[command(
    name = "switchboard-train",
    version,
    about = "switchboard batch retraining"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Retrain routes from the logged traffic (or warm-start from a labelled file).
    Train(TrainArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Route to train (default: every route).
    #[arg(long)]
    route: Option<String>,
    /// Full-information JSONL file to fit priors from instead of the log.
    #[arg(long)]
    labelled: Option<PathBuf>,
    /// Start of the window: RFC 3339, or an age like `30d`, `12h`, `15m`.
    #[arg(long, default_value = "30d")]
    since: String,
    /// Feedback later than this after its request is ignored (e.g. `7d`).
    #[arg(long, default_value = "7d")]
    attribution_window: String,
    /// Reward units by which the candidate's DR lower bound must beat the active policy.
    #[arg(long, default_value_t = 0.0)]
    margin: f64,
    /// One in N rows (by request id) is held out for off-policy evaluation.
    #[arg(long, default_value_t = 5)]
    holdout: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn parse_age(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    match unit {
        "s" => Some(Duration::seconds(n)),
        "m" => Some(Duration::minutes(n)),
        "h" => Some(Duration::hours(n)),
        "d" => Some(Duration::days(n)),
        _ => None,
    }
}

fn parse_since(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Some(age) = parse_age(s) {
        return Ok(now - age);
    }
    Ok(DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("--since {s:?}: not RFC 3339 nor an age like 30d"))?
        .with_timezone(&Utc))
}

async fn train(a: TrainArgs, env: Env) -> anyhow::Result<()> {
    let config = config::load(a.config.as_deref(), &env)?;
    let store = Store::connect_lazy(&database_url(&env))?;
    store.migrate().await.context("applying migrations")?;
    let routes: Vec<String> = match &a.route {
        Some(r) => vec![r.clone()],
        None => config.routes.iter().map(|r| r.name.to_string()).collect(),
    };
    let now = Utc::now();
    let opts = TrainOptions {
        since: parse_since(&a.since, now)?,
        until: now,
        attribution_s: parse_age(&a.attribution_window)
            .context("--attribution-window: an age like 7d")?
            .num_seconds() as f64,
        margin: a.margin,
        holdout: a.holdout,
        seed: a.seed,
    };
    for route in routes {
        let setup = RouteSetup::new(&config, &route)?;
        if let Some(path) = &a.labelled {
            let r = warm_start(&store, &config, &setup, path).await?;
            println!(
                "route {route}: warm start {} from {} prompts of {} ({} arms matched), stored as active",
                r.version,
                r.prompts,
                r.file,
                r.matched.len()
            );
        } else {
            let r = train_route(&store, &setup, &opts).await?;
            print!("{}", summary(&r));
        }
    }
    store.close().await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    switchboard::telemetry::init_tracing(false);
    let env: Env = std::env::vars().collect();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Train(a) => rt.block_on(train(a, env)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
