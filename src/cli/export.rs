//! `switchboard export [--since T] --out DIR` and `switchboard export
//! --import DIR`: the router's history as plain files, so users are never
//! locked in, and back into a fresh database.
//!
//! DIR holds `config.toml` (the configuration as loaded, defaults spelled
//! out; secrets are never in it, only the names of the variables holding
//! them), `requests.jsonl` (one decision with its outcome per line: eligible
//! models, propensity, features, policy version, tokens, cost, latency,
//! status, fallback chain), `feedback.jsonl` (the feedback of those
//! requests), `policies.jsonl` (every policy version) and `manifest.json`
//! (format version, window, counts). Lines are the records the router
//! writes (`store::records`), so the files are the store's own contract.
//! Files are streamed both ways: memory does not grow with the history.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::config::{self, Env};
use crate::startup::database_url;
use crate::store::export::PolicyRecord;
use crate::store::{Event, FeedbackRecord, RequestRecord, Store};

/// Bump when a file's line format changes incompatibly.
pub const FORMAT: u32 = 1;
const BATCH: usize = 1_000;

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Configuration to export (as `serve` finds it by default).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Only requests from this time on: RFC 3339 or an age like `30d`
    /// (default: everything).
    #[arg(long, conflicts_with = "import")]
    pub since: Option<String>,
    /// Directory to write (created if missing).
    #[arg(long, required_unless_present = "import", conflicts_with = "import")]
    pub out: Option<PathBuf>,
    /// Restore a previous export from this directory into DATABASE_URL,
    /// which must hold no history yet.
    #[arg(long, value_name = "DIR")]
    pub import: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    exported_at: DateTime<Utc>,
    since: Option<DateTime<Utc>>,
    requests: u64,
    feedback: u64,
    policies: u64,
}

pub async fn run(a: &ExportArgs, env: &Env) -> anyhow::Result<String> {
    let store = Store::connect_lazy(&database_url(env))?;
    store.migrate().await.context("applying migrations")?;
    let result = match (&a.import, &a.out) {
        (Some(dir), _) => import(&store, dir).await,
        (None, Some(out)) => export(&store, a, out, env).await,
        (None, None) => Err(anyhow::anyhow!("give --out DIR to export or --import DIR")),
    };
    store.close().await;
    result
}

async fn export(store: &Store, a: &ExportArgs, out: &Path, env: &Env) -> anyhow::Result<String> {
    let config = config::load(a.config.as_deref(), env)?;
    let since = match &a.since {
        Some(s) => Some(super::age::parse_since(s, Utc::now()).map_err(anyhow::Error::msg)?),
        None => None,
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let text = toml::to_string(&config).context("serialising the configuration")?;
    std::fs::write(out.join("config.toml"), text).context("writing config.toml")?;
    let from = since.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let requests = write_lines(out, "requests.jsonl", store.export_requests(from)).await?;
    let feedback = write_lines(out, "feedback.jsonl", store.export_feedback(from)).await?;
    let policies = store.export_policies().await?;
    let policy_stream =
        futures_util::stream::iter(policies.into_iter().map(Ok::<_, std::io::Error>)).boxed();
    let policies = write_lines(out, "policies.jsonl", policy_stream).await?;
    let manifest = Manifest {
        format: FORMAT,
        exported_at: Utc::now(),
        since,
        requests,
        feedback,
        policies,
    };
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )
    .context("writing manifest.json")?;
    Ok(format!(
        "exported {requests} requests, {feedback} feedback and {policies} policy versions to {}",
        out.display()
    ))
}

async fn write_lines<T: Serialize, E: std::error::Error + Send + Sync + 'static>(
    dir: &Path,
    name: &str,
    mut rows: futures_util::stream::BoxStream<'_, Result<T, E>>,
) -> anyhow::Result<u64> {
    let path = dir.join(name);
    let mut w = BufWriter::new(File::create(&path).with_context(|| format!("creating {name}"))?);
    let mut n = 0u64;
    while let Some(row) = rows.next().await {
        let row = row.with_context(|| format!("reading the rows of {name}"))?;
        serde_json::to_writer(&mut w, &row)?;
        w.write_all(b"\n")?;
        n += 1;
    }
    w.flush().with_context(|| format!("writing {name}"))?;
    Ok(n)
}

/// Parsed lines of `name` in `dir`, with the line number in errors.
fn read_lines<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> anyhow::Result<impl Iterator<Item = anyhow::Result<T>>> {
    let path = dir.join(name);
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let name = name.to_owned();
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(move |(i, l)| {
            let l = l.with_context(|| format!("{name}: reading line {}", i + 1))?;
            serde_json::from_str(&l).with_context(|| format!("{name} line {}", i + 1))
        }))
}

/// Parses every line of `name`; returns how many there are.
fn check<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> anyhow::Result<u64> {
    let mut n = 0u64;
    for row in read_lines::<T>(dir, name)? {
        row?;
        n += 1;
    }
    Ok(n)
}

async fn import(store: &Store, dir: &Path) -> anyhow::Result<String> {
    let manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json"))
            .with_context(|| format!("{}: not an export (no manifest.json)", dir.display()))?,
    )
    .context("manifest.json")?;
    if manifest.format != FORMAT {
        bail!(
            "{}: export format {} is not the supported format {FORMAT}",
            dir.display(),
            manifest.format
        );
    }
    let existing = store.history_rows().await?;
    if existing > 0 {
        bail!("the database already holds {existing} rows of history (requests, feedback, policy versions); import into a fresh database");
    }
    // Every line is checked before anything is stored: a bad file changes nothing.
    let counts = (
        check::<RequestRecord>(dir, "requests.jsonl")?,
        check::<FeedbackRecord>(dir, "feedback.jsonl")?,
        check::<PolicyRecord>(dir, "policies.jsonl")?,
    );
    let expected = (manifest.requests, manifest.feedback, manifest.policies);
    if counts != expected {
        bail!(
            "{}: the files hold {counts:?} (requests, feedback, policies) but manifest.json says {expected:?}; the export is incomplete",
            dir.display()
        );
    }
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
    let mut requests = 0u64;
    for r in read_lines::<RequestRecord>(dir, "requests.jsonl")? {
        batch.push(Event::Request(Box::new(r?)));
        requests += 1;
        if batch.len() >= BATCH {
            store.write_batch(&batch).await?;
            batch.clear();
        }
    }
    let mut feedback = 0u64;
    for f in read_lines::<FeedbackRecord>(dir, "feedback.jsonl")? {
        batch.push(Event::Feedback(f?));
        feedback += 1;
        if batch.len() >= BATCH {
            store.write_batch(&batch).await?;
            batch.clear();
        }
    }
    store.write_batch(&batch).await?;
    let mut policies = 0u64;
    for p in read_lines::<PolicyRecord>(dir, "policies.jsonl")? {
        store.import_policy(&p?).await?;
        policies += 1;
    }
    Ok(format!(
        "imported {requests} requests, {feedback} feedback and {policies} policy versions from {}; \
         the configuration is {}",
        dir.display(),
        dir.join("config.toml").display()
    ))
}
