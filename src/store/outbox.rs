//! The outbox: the request path hands events to a bounded channel and moves
//! on; one background task writes them in batches. When the database fails,
//! batches spill to an append-only JSONL file that is replayed once the
//! database answers again. Replays are idempotent (unique ids).
//!
//! Invariant: `Outbox::send` never awaits and never touches the network,
//! and no batch is encoded on the runtime's worker threads (`write_beside`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use super::priority;
use super::records::Event;
use super::{Store, StoreError};
use crate::config::StoreConfig;
use crate::telemetry::names;

/// The sending half, cheap to clone, held by the request path.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Event>,
    spill: Arc<Spill>,
    /// Registered once: the `gauge!` macro looks its key up on every call.
    depth: metrics::Gauge,
}

impl Outbox {
    /// Queues an event. When the queue is full the event goes straight to the
    /// spill file (a short buffered append, no fsync) rather than being lost.
    pub fn send(&self, event: Event) {
        self.depth
            .set((self.tx.max_capacity() - self.tx.capacity()) as f64);
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event))
            | Err(mpsc::error::TrySendError::Closed(event)) => {
                if let Err(e) = self.spill.append(std::slice::from_ref(&event)) {
                    metrics::counter!(names::EVENTS_DROPPED).increment(1);
                    tracing::error!(error = %e, "An event could not be queued nor spilled and is lost.");
                }
            }
        }
    }
}

/// The background writer; run it with `tokio::spawn(writer.run(shutdown))`.
pub struct OutboxWriter {
    rx: mpsc::Receiver<Event>,
    store: Store,
    spill: Arc<Spill>,
    batch_size: usize,
    /// How long a batch may fill after its first event (`flush_interval_ms`).
    linger: Duration,
    replay_every: Duration,
    /// `[store] writer_yields`.
    yields: bool,
}

pub fn outbox(store: Store, cfg: &StoreConfig) -> (Outbox, OutboxWriter) {
    let (tx, rx) = mpsc::channel(cfg.outbox_capacity);
    let spill = Arc::new(Spill::new(PathBuf::from(&cfg.spill_path)));
    let writer = OutboxWriter {
        rx,
        store,
        spill: spill.clone(),
        batch_size: cfg.batch_size,
        linger: Duration::from_millis(cfg.flush_interval_ms),
        replay_every: Duration::from_millis(cfg.flush_interval_ms.max(1) * 25),
        yields: cfg.writer_yields,
    };
    let depth = metrics::gauge!(names::OUTBOX_DEPTH);
    (Outbox { tx, spill, depth }, writer)
}

impl OutboxWriter {
    /// Writes until `shutdown` turns true, then drains what is queued.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut buf = Vec::with_capacity(self.batch_size);
        let mut replay = tokio::time::interval(self.replay_every);
        replay.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut buf, self.batch_size) => {
                    if n == 0 { break; }
                    self.fill(&mut buf).await;
                    self.flush(&mut buf).await;
                }
                _ = replay.tick() => self.replay_spill().await,
                _ = shutdown.changed() => {
                    self.rx.close();
                    while self.rx.recv_many(&mut buf, self.batch_size).await > 0 {
                        self.flush(&mut buf).await;
                    }
                    break;
                }
            }
        }
        self.replay_spill().await;
        tracing::info!("The outbox is drained.");
    }

    /// Lets a batch fill for up to `linger` after its first event, or until
    /// it is full. Without it, light traffic wrote one transaction per event:
    /// at 1 request in flight that was ~70 % of the router's CPU per request
    /// with SQLite (callgrind, docs/performance.md); batched, the
    /// transaction's fixed cost is shared. Events already queued are never
    /// held back by the network: `send` stays a non-blocking `try_send`.
    async fn fill(&mut self, buf: &mut Vec<Event>) {
        let until = tokio::time::Instant::now() + self.linger;
        while buf.len() < self.batch_size {
            let room = self.batch_size - buf.len();
            match tokio::time::timeout_at(until, self.rx.recv_many(buf, room)).await {
                Ok(n) if n > 0 => {}
                // The linger is over, or every sender is gone.
                _ => break,
            }
        }
    }

    async fn flush(&mut self, buf: &mut Vec<Event>) {
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=3 {
            let yields = self.yields && self.rx.len() < self.batch_size;
            match write_beside(&self.store, buf, yields).await {
                Ok(()) => {
                    metrics::counter!(names::EVENTS_WRITTEN).increment(buf.len() as u64);
                    metrics::histogram!(names::OUTBOX_BATCH_SIZE).record(buf.len() as f64);
                    buf.clear();
                    return;
                }
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %e, attempt, "Writing a batch of events failed; retrying.");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                Err(e) => {
                    tracing::error!(error = %e, events = buf.len(), "The database is unreachable; spilling events to disk.");
                }
            }
        }
        if let Err(e) = self.spill.append(buf) {
            metrics::counter!(names::EVENTS_DROPPED).increment(buf.len() as u64);
            tracing::error!(error = %e, events = buf.len(), "Spilling events failed; they are lost.");
        }
        buf.clear();
    }

    async fn replay_spill(&mut self) {
        match self.spill.take_pending() {
            Ok(None) => {}
            Ok(Some(pending)) => match replay_file(&self.store, &pending, self.batch_size).await {
                Ok(n) => {
                    let _ = std::fs::remove_file(&pending);
                    tracing::info!(events = n, "Replayed spilled events into the database.");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Replaying spilled events failed; will retry.")
                }
            },
            Err(e) => tracing::warn!(error = %e, "Reading the spill file failed."),
        }
    }
}

/// How long a batch's threads may stay lowered. Lowered, a batch gets only
/// the CPU that requests leave over, so it takes several times its CPU
/// time: with a 20 ms cap, at one bandit request in flight, batches outlasted
/// it and finished at ordinary priority, and the request worker still
/// waited 0.3 ms or more behind SQLite's threads 166 times in 3 s, against
/// 29 with this cap (perf sched, docs/performance.md). Past the cap the
/// threads were most likely starved (the core saturated, or another
/// process), so they go back to ordinary priority and the batch finishes
/// normally; its rows then appear at most this much later.
const LOWERED_AT_MOST: Duration = Duration::from_millis(250);

/// Writes `buf` from a blocking-pool thread (SQLite's batch is written on
/// it; Postgres's is driven through the runtime's handle); `buf` comes back
/// with the same events either way.
///
/// Why: building a batch's statements is synchronous work (about 30 binds a
/// row, the feature vector and receipt written as JSON), up to several ms
/// for a full batch. Polled on a runtime worker it held up every request
/// queued behind it: at one request in flight, 40 ms per second of worker
/// polls longer than 200 µs, up to 7.8 ms each (docs/performance.md).
/// From its own thread the kernel preempts it when a request needs the core
/// (most of the time: perf sched, docs/performance.md). With `yields`
/// (`[store] writer_yields`, and less than a batch queued behind this one)
/// that thread and the SQLite pool's threads (reads meanwhile) drop to
/// `SCHED_IDLE` (`priority.rs`), so requests always go first, for at most
/// `LOWERED_AT_MOST`; a backlog is written at ordinary priority, so the
/// router's own load cannot starve it. Off by default: other processes'
/// load delays idle threads, and a CI run of this suite then read its rows
/// late.
async fn write_beside(store: &Store, buf: &mut Vec<Event>, yields: bool) -> Result<(), StoreError> {
    let batch = Arc::new(std::mem::take(buf));
    let (store, shared, handle) = (store.clone(), batch.clone(), Handle::current());
    let sqlite = store.clone();
    let (written, capped) = priority::run_beside(
        yields,
        LOWERED_AT_MOST,
        move || sqlite.worker_threads(),
        move || store.write_batch_blocking(&shared, &handle),
    )
    .await;
    if capped {
        metrics::counter!(names::OUTBOX_LOWERING_ENDED).increment(1);
    }
    // The closure and its copy are gone once the join resolves, whether the
    // write finished, panicked or never started (runtime shutdown).
    *buf = Arc::try_unwrap(batch).unwrap_or_else(|still_shared| still_shared.as_ref().clone());
    written.unwrap_or_else(|e| Err(StoreError::WriterThread(e.to_string())))
}

async fn replay_file(store: &Store, path: &Path, batch_size: usize) -> Result<usize, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::Sql(sqlx::Error::Io(e)))?;
    let mut batch = Vec::with_capacity(batch_size);
    let mut total = 0;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| StoreError::Sql(sqlx::Error::Io(e)))?;
        // A torn last line (crash mid-append) is skipped, not fatal.
        if let Ok(event) = serde_json::from_str::<Event>(&line) {
            batch.push(event);
        }
        if batch.len() == batch_size {
            store.write_batch(&batch).await?;
            total += batch.len();
            batch.clear();
        }
    }
    store.write_batch(&batch).await?;
    Ok(total + batch.len())
}

/// The append-only spill file. `pending` is the file being replayed; a crash
/// mid-replay leaves it in place and the next replay finishes it.
struct Spill {
    path: PathBuf,
    pending: PathBuf,
    lock: Mutex<()>,
}

impl Spill {
    fn new(path: PathBuf) -> Self {
        let mut pending = path.clone().into_os_string();
        pending.push(".replaying");
        Self {
            path,
            pending: PathBuf::from(pending),
            lock: Mutex::new(()),
        }
    }

    fn append(&self, events: &[Event]) -> std::io::Result<()> {
        let mut text = String::new();
        for e in events {
            text.push_str(&serde_json::to_string(e).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        let _guard = self
            .lock
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        metrics::counter!(names::EVENTS_SPILLED).increment(events.len() as u64);
        Ok(())
    }

    /// Moves the spill file aside for replay, unless a replay is unfinished.
    fn take_pending(&self) -> std::io::Result<Option<PathBuf>> {
        let _guard = self
            .lock
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        if self.pending.exists() {
            return Ok(Some(self.pending.clone()));
        }
        if self.path.exists() {
            std::fs::rename(&self.path, &self.pending)?;
            return Ok(Some(self.pending.clone()));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A yielding write finds the store's threads by name (SQLite's
    /// workers) and leaves none of them lowered.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_yielding_write_finds_the_store_threads_and_restores_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("yield.db").display());
        let store = Store::connect_lazy(&url).expect("sqlite url");
        store.migrate().await.expect("migrations");
        let threads = store.worker_threads();
        assert!(
            !threads.is_empty(),
            "SQLite's workers are named {}*",
            super::super::SQLITE_THREAD_PREFIX
        );
        let mut buf = Vec::new();
        write_beside(&store, &mut buf, true)
            .await
            .expect("an empty batch");
        // Other tests' stores may own some of these threads; none of them
        // lowers any, so none may be left idle (a thread gone since is -1).
        for thread in threads {
            assert_ne!(priority::policy_of(thread), libc::SCHED_IDLE, "{thread}");
        }
        store.close().await;
    }
}
