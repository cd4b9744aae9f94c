//! Synthetic logged traffic for the retraining bench and tests: a linear
//! world written straight into Postgres with `generate_series`, so a million
//! logged requests take seconds to seed instead of an hour of serving.
//!
//! The world: feature 0 is the bias, feature 1 is `u ~ U(0, 1)` and carries
//! the signal; the other `d - 2` features are noise (each non-zero with
//! probability 1/2, like real prompts' sparse hashed buckets). A uniform
//! logging policy picks one of the arms (propensity `1/K`); arm `k`'s mean
//! quality is `truth(k, u)`, observed with uniform noise of ±0.1 as a
//! `quality` feedback one second later. Cost and latency differ per arm.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Mean quality of arm `k` of `arms` at `u`: arm 0 is best at low `u`,
/// the last arm at high `u`, linearly in between.
pub fn truth(k: usize, arms: usize, u: f64) -> f64 {
    let t = if arms > 1 {
        k as f64 / (arms - 1) as f64
    } else {
        0.0
    };
    0.8 - 0.6 * (u - t).abs()
}

/// What to seed.
#[derive(Debug, Clone)]
pub struct World<'a> {
    pub route: &'a str,
    pub arms: &'a [&'a str],
    /// Feature dimension of the route (`Encoder::dimension()`).
    pub dimension: usize,
    pub rows: u64,
    /// First request's time; rows are 1 ms apart.
    pub start: DateTime<Utc>,
    /// Distinguishes the ids of several seedings of one database.
    pub tag: &'a str,
}

/// Rows per INSERT statement (keeps each statement's trigger work bounded).
const CHUNK: u64 = 100_000;

const REQUESTS_SQL: &str = "
INSERT INTO requests (id, created_at, route, requested_model, model, eligible_models,
    policy_version, propensity, features, stream, prompt_tokens, completion_tokens,
    cost_usd, latency_ms, status, status_code, fallback_chain, attempts)
SELECT 'syn-' || $7 || '-' || g, $5 + g * interval '1 millisecond', $1, $1, arms[a], $2,
    'online.1', 1.0 / cardinality(arms),
    -- `WHERE g > 0` ties the subquery to the row, so every row draws its own noise.
    to_jsonb(ARRAY[1.0, u] || ARRAY(SELECT CASE WHEN random() < 0.5 THEN 0.0 ELSE random() - 0.5 END
        FROM generate_series(1, $6 - 2) WHERE g > 0)),
    false, 100, 50, 0.0001 * a * (1 + u), 200.0 * a * (1 + 0.2 * u), 'ok', 200, '[]', 1
FROM (SELECT g, ARRAY(SELECT jsonb_array_elements_text($2)) AS arms, random() AS u, random() AS r
      FROM generate_series($3::BIGINT, $4::BIGINT) g) s,
    LATERAL (SELECT 1 + floor(r * cardinality(arms))::INT AS a) pick";

const FEEDBACK_SQL: &str = "
INSERT INTO feedback (request_id, created_at, metric, value, source)
SELECT r.id, r.created_at + interval '1 second', 'quality',
    LEAST(1.0, GREATEST(0.0,
        0.8 - 0.6 * abs((r.features->>1)::DOUBLE PRECISION
            - CASE WHEN $2 > 1 THEN (array_position($3::TEXT[], r.model) - 1)::DOUBLE PRECISION / ($2 - 1)
                   ELSE 0 END)
        + (random() - 0.5) * 0.2)),
    'synthetic'
FROM requests r
WHERE r.id LIKE 'syn-' || $1 || '-%' AND r.created_at >= $4 AND r.created_at < $5";

/// Seeds `world.rows` requests, each with a quality feedback.
pub async fn seed(pool: &PgPool, world: &World<'_>) -> anyhow::Result<()> {
    let arms = serde_json::to_value(world.arms)?;
    let names: Vec<String> = world.arms.iter().map(|s| (*s).to_owned()).collect();
    let mut from = 1u64;
    while from <= world.rows {
        let to = (from + CHUNK - 1).min(world.rows);
        sqlx::query(REQUESTS_SQL)
            .bind(world.route)
            .bind(&arms)
            .bind(from as i64)
            .bind(to as i64)
            .bind(world.start)
            .bind(world.dimension as i32)
            .bind(world.tag)
            .execute(pool)
            .await
            .context("seeding synthetic requests")?;
        let t0 = world.start + chrono::Duration::milliseconds(from as i64);
        let t1 = world.start + chrono::Duration::milliseconds(to as i64 + 1);
        sqlx::query(FEEDBACK_SQL)
            .bind(world.tag)
            .bind(world.arms.len() as i32)
            .bind(&names)
            .bind(t0)
            .bind(t1)
            .execute(pool)
            .await
            .context("seeding synthetic feedback")?;
        from = to + 1;
    }
    sqlx::query("ANALYZE requests")
        .execute(pool)
        .await
        .context("analyzing requests")?;
    sqlx::query("ANALYZE feedback")
        .execute(pool)
        .await
        .context("analyzing feedback")?;
    Ok(())
}
