//! The `switchboard` command line (DESIGN.md, "Command line").

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use switchboard::config::{self, Env};
use switchboard::startup;

/// jemalloc instead of glibc's malloc: allocation and free were ~23 % of
/// the router's CPU under load. It gave the router 26 % more throughput at
/// 64 requests in flight for ~7 MiB more with 1,000 open streams; mimalloc
/// was as fast but held 40 MiB more (docs/performance.md, "Allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "A learned LLM router")]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run the batch retraining job every PERIOD (e.g. 15m) beside the
        /// router; one replica at a time trains (a database lock).
        #[arg(long, env = "SWITCHBOARD_RETRAIN_EVERY", value_parser = switchboard::cli::age::parse_period)]
        retrain_every: Option<std::time::Duration>,
        /// With --retrain-every: each run also fits a K-component PCA
        /// projection of the hashed features (`switchboard train --pca K`).
        #[arg(long, env = "SWITCHBOARD_RETRAIN_PCA", requires = "retrain_every")]
        retrain_pca: Option<usize>,
    },
    /// Zero setup: simulated providers, the router on embedded SQLite, traffic and a live summary.
    Demo(switchboard::sim::demo::DemoOptions),
    /// Replay a full-information routing file through a route's policy (bandit feedback).
    Replay {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        route: String,
        #[arg(long)]
        data: PathBuf,
        /// First seed of the shuffles.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How many seeds (passes) to run, from `--seed` on.
        #[arg(long, default_value_t = 5)]
        seeds: u64,
        /// Start every pass from this stored policy version (e.g. a warm
        /// start) instead of a cold policy; read from DATABASE_URL.
        #[arg(long)]
        start_from: Option<String>,
    },
    /// Apply database migrations to DATABASE_URL (or the embedded SQLite file).
    Migrate,
    /// Batch retraining (runs the `switchboard-train` binary beside this one,
    /// so the training libraries stay out of the router): see `switchboard train --help`.
    #[command(disable_help_flag = true)]
    Train {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Policy versions: list, show, activate, rollback.
    #[command(subcommand)]
    Policy(switchboard::cli::policy::PolicyCommand),
    /// Experiments on a running router: start, status, promote, stop.
    Experiment {
        #[command(subcommand)]
        command: switchboard::cli::experiment::ExperimentCommand,
        #[command(flatten)]
        target: switchboard::cli::experiment::Target,
    },
    /// The history (configuration, decisions with their outcomes, feedback,
    /// policy versions) as JSONL files, or `--import DIR` into a fresh database.
    Export(switchboard::cli::export::ExportArgs),
    /// Client keys: create, list, revoke.
    Keys {
        #[command(subcommand)]
        command: switchboard::cli::keys::KeysCommand,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Demo(_) => switchboard::sim::demo::init_tracing(cli.json_logs),
        _ => switchboard::telemetry::init_tracing(cli.json_logs),
    }
    let env: Env = std::env::vars().collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, env));
    switchboard::telemetry::shutdown_tracing();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, env: Env) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            config: path,
            retrain_every,
            retrain_pca,
        } => {
            let config = config::load(path.as_deref(), &env)?;
            let running = startup::start(config, &env).await?;
            let (stop_retrain, stopping) = tokio::sync::watch::channel(false);
            let retrain = retrain_every.map(|every| {
                let schedule = switchboard::retrain::Schedule {
                    every,
                    program: switchboard::retrain::trainer_program(),
                    config: path.clone(),
                    database_url: startup::database_url(&env),
                    pca: retrain_pca,
                };
                AbortOnDrop(tokio::spawn(switchboard::retrain::run(schedule, stopping)))
            });
            startup::shutdown_signal().await;
            // A run in progress is killed (the trainer stores nothing half-way).
            let _ = stop_retrain.send(true);
            drop(retrain);
            tracing::info!("Shutting down: finishing in-flight requests and flushing events.");
            running.shutdown().await;
            Ok(())
        }
        Command::Demo(opts) => switchboard::sim::demo::run(opts, &env).await,
        Command::Replay {
            config,
            route,
            data,
            seed,
            seeds,
            start_from,
        } => {
            let seeds = seed..seed.saturating_add(seeds);
            switchboard::cli::replay::run(
                &config,
                &route,
                &data,
                seeds,
                start_from.as_deref(),
                &env,
            )
            .await
        }
        Command::Migrate => {
            let url = startup::database_url(&env);
            let store = switchboard::store::Store::connect_lazy(&url)?;
            store.migrate().await?;
            println!(
                "migrations applied to {}",
                switchboard::store::redact_url(&url)
            );
            Ok(())
        }
        Command::Train { args } => {
            let exe = switchboard::retrain::trainer_program();
            let status = std::process::Command::new(&exe)
                .arg("train")
                .args(args)
                .status()
                .with_context(|| format!("running {}", exe.display()))?;
            anyhow::ensure!(status.success(), "training failed ({status})");
            Ok(())
        }
        Command::Policy(cmd) => {
            let store = switchboard::store::Store::connect_lazy(&startup::database_url(&env))?;
            store.migrate().await?;
            let out = switchboard::cli::policy::run(&store, cmd).await;
            store.close().await;
            println!("{}", out?);
            Ok(())
        }
        Command::Export(a) => {
            println!("{}", switchboard::cli::export::run(&a, &env).await?);
            Ok(())
        }
        Command::Keys { command } => switchboard::cli::keys::run(command, &env).await,
        Command::Experiment { command, target } => {
            let out = switchboard::cli::experiment::run(command, target.url, &env).await?;
            println!("{out}");
            Ok(())
        }
        Command::CheckConfig { config } => {
            let c = config::load(config.as_deref(), &env)?;
            println!(
                "configuration is valid: {} providers, {} models, {} routes",
                c.providers.len(),
                c.models.len(),
                c.routes.len()
            );
            Ok(())
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
