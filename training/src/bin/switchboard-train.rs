//! `switchboard-train`: the batch side of the `switchboard` CLI (`train`),
//! a separate binary so linfa/ndarray never link into the router; the
//! `switchboard train ...` command and `serve --retrain-every` run it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::config::Env;
use switchboard_training::command::{self, TrainArgs};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr: stdout carries the report (`serve --retrain-every`
    // and scripts read it).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let env: Env = std::env::vars().collect();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Train(a) => rt.block_on(command::run(&a, &env)),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
