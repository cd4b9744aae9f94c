//! Persistence: all SQL lives here. Postgres is the system of record; SQLite
//! is the embedded default for one machine. Knows nothing of axum or of the
//! gateway; callers hand it plain records.

mod batch;
mod batch_pg;
pub mod control;
pub mod dashboard;
pub mod experiments;
pub mod export;
pub mod keys;
pub mod leases;
pub mod lock;
pub mod outbox;
pub mod policies;
pub mod priority;
mod queries;
pub mod records;
pub mod retention;
pub mod scale;
pub mod training;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use queries::StoredDecision;
pub use records::{
    Assignment, AttemptRecord, Event, FeedbackRecord, JsonText, LazyJson, RenderJson, RequestRecord,
};

/// The embedded database used when `DATABASE_URL` is unset.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://switchboard.db";

/// What sqlx's SQLite worker threads (one per connection) are named, so the
/// outbox can find them and lower them with its batch (`priority.rs`).
const SQLITE_THREAD_PREFIX: &str = "sb-sqlite-";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported DATABASE_URL scheme in {0:?}: use postgres:// or sqlite://")]
    Scheme(String),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Write(#[from] rusqlite::Error),
    #[error("an in-memory SQLite database cannot be shared by the router's connections; give a file (sqlite://switchboard.db)")]
    InMemory,
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} need Postgres (SQLite serves one process)")]
    NeedsPostgres(&'static str),
    #[error("the batch writer's thread failed: {0}")]
    WriterThread(String),
}

/// A connection pool to one of the two backends.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqliteStore),
}

/// SQLite: sqlx's pool for every statement but the outbox's batches, which
/// a connection of their own writes (`batch::Writer`: see `batch` for why).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub pool: SqlitePool,
    writer: Arc<batch::Writer>,
}

impl Store {
    /// Connects lazily: a database that is down does not stop the router from
    /// starting (events wait in the outbox and readiness reports it).
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(opts);
            Ok(Store::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                // A multi-row INSERT with triggers keeps a statement journal;
                // past 64 KiB SQLite spills it to a temp file, which cost
                // two `pwrite`s per request row under load (strace,
                // docs/performance.md). In memory it is a few hundred KiB.
                .pragma("temp_store", "memory")
                .thread_name(|id| format!("{SQLITE_THREAD_PREFIX}{id}"))
                .busy_timeout(Duration::from_secs(5));
            // sqlx names an in-memory database `file:sqlx-in-memory-N` and
            // shares it through SQLite's shared cache, which the batch
            // writer's connection would not see.
            let name = opts.get_filename().to_string_lossy();
            if name.starts_with("file:sqlx-in-memory-") || url.contains("mode=memory") {
                return Err(StoreError::InMemory);
            }
            let writer = Arc::new(batch::Writer::new(opts.get_filename().to_owned()));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_lazy_with(opts);
            Ok(Store::Sqlite(SqliteStore { pool, writer }))
        } else {
            Err(StoreError::Scheme(redact_url(url)))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// The threads of this process that run the store's statements: SQLite's
    /// workers; none for Postgres, whose work is another process's.
    pub fn worker_threads(&self) -> Vec<priority::ThreadId> {
        match self {
            Store::Postgres(_) => Vec::new(),
            Store::Sqlite(_) => priority::threads_named(SQLITE_THREAD_PREFIX),
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await?,
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::migrate!("migrations/sqlite").run(pool).await?
            }
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ())?,
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::query("SELECT 1").execute(pool).await.map(|_| ())?
            }
        }
        Ok(())
    }

    /// Writes a batch in one transaction; replaying a batch is harmless
    /// (request ids and feedback ids are unique, duplicates are skipped).
    pub async fn write_batch(&self, events: &[Event]) -> Result<(), StoreError> {
        match self {
            // Postgres: one array per column (`batch_pg`), far fewer binds per row.
            Store::Postgres(pool) => Ok(batch_pg::write_events(pool, events).await?),
            // SQLite's calls block, so they run on a blocking-pool thread,
            // which needs its own copy of the events. Imports, replays and
            // tests come here; the outbox calls `write_batch_blocking`.
            Store::Sqlite(SqliteStore { writer, .. }) => {
                let (writer, events) = (writer.clone(), events.to_vec());
                tokio::task::spawn_blocking(move || writer.write_events(&events))
                    .await
                    .map_err(|e| StoreError::WriterThread(e.to_string()))?
                    .map_err(StoreError::from)
            }
        }
    }

    /// `write_batch` from a thread that may block (the outbox's): SQLite's
    /// batch is written right here; Postgres's is driven through `runtime`.
    pub fn write_batch_blocking(
        &self,
        events: &[Event],
        runtime: &tokio::runtime::Handle,
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(_) => runtime.block_on(self.write_batch(events)),
            Store::Sqlite(SqliteStore { writer, .. }) => Ok(writer.write_events(events)?),
        }
    }

    pub async fn request_exists(&self, id: &str) -> Result<bool, StoreError> {
        let sql = "SELECT COUNT(*) FROM requests WHERE id = $1";
        let n: i64 = match self {
            Store::Postgres(pool) => sqlx::query_scalar(sql).bind(id).fetch_one(pool).await?,
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::query_scalar(sql).bind(id).fetch_one(pool).await?
            }
        };
        Ok(n > 0)
    }

    pub async fn close(&self) {
        match self {
            Store::Postgres(pool) => pool.close().await,
            Store::Sqlite(SqliteStore { pool, .. }) => pool.close().await,
        }
    }
}

/// Hides the password of a database URL before it reaches a log or an error.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_in_memory_sqlite_database_is_refused_with_a_reason() {
        for url in ["sqlite::memory:", "sqlite://x.db?mode=memory"] {
            let refused = Store::connect_lazy(url).expect_err(url);
            assert!(matches!(refused, StoreError::InMemory), "{url}: {refused}");
        }
        assert!(Store::connect_lazy("sqlite://switchboard.db").is_ok());
    }
}
