//! The trainer lock: at most one batch retraining run at a time across every
//! replica and cron job sharing a database.
//!
//! Postgres: a session-level advisory lock (`pg_try_advisory_lock`) held on
//! a dedicated connection outside the pool, so it cannot leak back into the
//! pool with the lock still held; if the trainer dies, its connection closes
//! and the server releases the lock. SQLite (one machine, no advisory
//! locks): a lease row in `trainer_lock`, taken only when free or expired;
//! a trainer that dies leaves it until the lease runs out (`LEASE`).
//!
//! Never taken on the request path: only the trainer and its schedule use it.

use chrono::{Duration, Utc};
use sqlx::{Connection, PgConnection, SqlitePool};

use super::{SqliteStore, Store, StoreError};

/// Key of the advisory lock (`"sbtrain1"` in ASCII).
pub const ADVISORY_KEY: i64 = 0x7362_7472_6169_6e31;

/// How long an SQLite lease lasts if its trainer never releases it.
pub const LEASE: Duration = Duration::hours(1);

/// Held while a trainer runs; `release` it when done (dropping it also
/// releases on Postgres, and lets the lease expire on SQLite).
#[derive(Debug)]
pub struct TrainerLock {
    inner: Held,
}

#[derive(Debug)]
enum Held {
    Postgres(PgConnection),
    Sqlite { pool: SqlitePool, holder: String },
}

const SQLITE_TAKE: &str =
    "INSERT INTO trainer_lock (name, holder, expires_at) VALUES ('train', $1, $2) \
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
    WHERE trainer_lock.expires_at < $3";

impl Store {
    /// Takes the trainer lock if no other trainer holds it; `None` if one does.
    pub async fn try_trainer_lock(&self) -> Result<Option<TrainerLock>, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(ADVISORY_KEY)
                    .fetch_one(&mut conn)
                    .await?;
                if got {
                    Ok(Some(TrainerLock {
                        inner: Held::Postgres(conn),
                    }))
                } else {
                    conn.close().await?;
                    Ok(None)
                }
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                let holder = uuid::Uuid::new_v4().to_string();
                let now = Utc::now();
                let done = sqlx::query(SQLITE_TAKE)
                    .bind(&holder)
                    .bind((now + LEASE).timestamp())
                    .bind(now.timestamp())
                    .execute(pool)
                    .await?;
                Ok((done.rows_affected() == 1).then(|| TrainerLock {
                    inner: Held::Sqlite {
                        pool: pool.clone(),
                        holder,
                    },
                }))
            }
        }
    }
}

impl TrainerLock {
    /// Lets the next trainer run.
    pub async fn release(self) -> Result<(), StoreError> {
        match self.inner {
            Held::Postgres(mut conn) => {
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(ADVISORY_KEY)
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
            }
            Held::Sqlite { pool, holder } => {
                sqlx::query("DELETE FROM trainer_lock WHERE name = 'train' AND holder = $1")
                    .bind(holder)
                    .execute(&pool)
                    .await?;
            }
        }
        Ok(())
    }
}
