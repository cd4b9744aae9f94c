//! `serve --retrain-every PERIOD`: the batch retraining job on a schedule,
//! beside the router.
//!
//! Each run is the `switchboard-train` binary as a child process, the same
//! program `switchboard train` and cron run: the training libraries (ndarray,
//! linfa) stay out of the router's binary, a run's memory and CPU never
//! touch the router's heap, and a failed run cannot take serving down. The
//! trainer takes the trainer lock (`store::lock`), so with every replica on
//! the same schedule one trains and the others report that they skipped.
//! A new active version reaches every replica through the usual policy
//! watch (`gateway::policy_watch`).
//!
//! Runs never overlap within one process: the next period starts when a run
//! ends. On shutdown a run in progress is killed; the trainer stores a
//! version in one transaction at its end, so nothing half-written remains.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::watch;

/// The trainer's binary: `switchboard-train` beside the running executable,
/// else on `PATH`.
pub fn trainer_program() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("switchboard-train"))
        .filter(|p| p.exists());
    beside.unwrap_or_else(|| PathBuf::from("switchboard-train"))
}

/// What to run and how often.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub every: Duration,
    pub program: PathBuf,
    /// Passed as `--config`; without it the trainer finds the configuration
    /// as `serve` did (`SWITCHBOARD_CONFIG`, `./switchboard.toml`, defaults).
    pub config: Option<PathBuf>,
    /// The router's database, passed as `DATABASE_URL`.
    pub database_url: String,
    /// Passed as `--pca K`: each run also fits a projection of the hashed
    /// features (`serve --retrain-pca K`).
    pub pca: Option<usize>,
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The trainer ran (its summary).
    Finished(String),
    /// Another trainer held the lock.
    Skipped(String),
    Failed(String),
}

/// Runs the trainer every `every` until `stop` turns true.
pub async fn run(schedule: Schedule, mut stop: watch::Receiver<bool>) {
    tracing::info!(every_s = schedule.every.as_secs(), program = %schedule.program.display(), "Retraining on a schedule.");
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(schedule.every) => {}
        }
        let outcome = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            o = run_once(&schedule) => o,
        };
        match outcome {
            RunOutcome::Finished(summary) => {
                tracing::info!(%summary, "Scheduled retraining finished.");
            }
            RunOutcome::Skipped(why) => {
                tracing::info!(%why, "Scheduled retraining skipped.");
            }
            RunOutcome::Failed(error) => {
                tracing::error!(%error, "Scheduled retraining failed; the active policy is unchanged.");
            }
        }
    }
}

/// One run of the trainer (killed if this future is dropped).
pub async fn run_once(schedule: &Schedule) -> RunOutcome {
    let mut cmd = tokio::process::Command::new(&schedule.program);
    cmd.arg("train")
        .env("DATABASE_URL", &schedule.database_url)
        // Not a terminal: the trainer prints no progress bars.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(c) = &schedule.config {
        cmd.arg("--config").arg(c);
    }
    if let Some(k) = schedule.pca {
        cmd.arg("--pca").arg(k.to_string());
    }
    let out = match cmd.output().await {
        Ok(o) => o,
        Err(e) => return RunOutcome::Failed(format!("{}: {e}", display(&schedule.program))),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return RunOutcome::Failed(format!(
            "{} ({}): {stderr}",
            out.status,
            display(&schedule.program)
        ));
    }
    if stdout.lines().any(|l| l.starts_with(SKIPPED_PREFIX)) {
        RunOutcome::Skipped(stdout)
    } else {
        RunOutcome::Finished(stdout)
    }
}

/// The first words the trainer prints when another trainer holds the lock.
pub const SKIPPED_PREFIX: &str = "skipped:";

fn display(p: &Path) -> String {
    p.display().to_string()
}
