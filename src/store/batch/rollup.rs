//! The rollups a batch adds to, summed in the writer (see `batch`'s module
//! comment for why not in triggers): one upsert per group and batch.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use rusqlite::{params, Transaction};

use crate::store::dashboard::LATENCY_BUCKETS_MS;
use crate::store::records::RequestRecord;

/// `rollup_hourly`'s key: the hour's first second, then route, model,
/// provider, policy version, API key and tenant ('' for none).
type HourKey<'a> = (i64, [&'a str; 6]);

/// One `rollup_hourly` group's sums over the rows of a batch (quality is
/// credited by the feedback triggers, not here).
#[derive(Default)]
struct Sums {
    requests: i64,
    errors: i64,
    cost_usd: f64,
    prompt_tokens: i64,
    completion_tokens: i64,
    latency_ms_sum: f64,
    ttft_ms_sum: f64,
    ttft_count: i64,
}

/// The rollup rows a batch adds to, summed in the writer.
#[derive(Default)]
pub(super) struct Rollup<'a> {
    // foldhash, not SipHash: the keys are our own rows' text, and SipHash
    // was ~1,400 instructions a request here (callgrind, c = 64).
    hourly: HashMap<HourKey<'a>, Sums, RandomState>,
    /// (hour, model, latency bucket) -> requests.
    latency: HashMap<(i64, &'a str, i64), i64, RandomState>,
    /// (hour, model, error kind) -> failed requests: `rollup_errors_hourly`.
    errors: HashMap<(i64, &'a str, &'a str), i64, RandomState>,
}

/// The hour a row counts in, as the dashboards read it: Unix seconds of
/// the hour's start (SQLite's `strftime('%s', created_at) / 3600 * 3600`).
fn hour_of(r: &RequestRecord) -> i64 {
    r.created_at.timestamp() / 3600 * 3600
}

/// The largest bucket whose lower bound is at or below `latency_ms`.
fn latency_bucket(latency_ms: f64) -> i64 {
    let above = LATENCY_BUCKETS_MS.partition_point(|&lower| lower <= latency_ms);
    above.saturating_sub(1) as i64
}

impl<'a> Rollup<'a> {
    /// Counts one inserted row.
    pub(super) fn add(&mut self, r: &'a RequestRecord) {
        let hour = hour_of(r);
        let text = |v: &'a Option<String>| v.as_deref().unwrap_or("");
        let model = text(&r.model);
        let key = [
            text(&r.route),
            model,
            text(&r.provider),
            text(&r.policy_version),
            text(&r.api_key_id),
            text(&r.tenant),
        ];
        let s = self.hourly.entry((hour, key)).or_default();
        s.requests += 1;
        s.errors += i64::from(!r.ok);
        s.cost_usd += r.cost_usd;
        s.prompt_tokens += i64::from(r.prompt_tokens.unwrap_or(0));
        s.completion_tokens += i64::from(r.completion_tokens.unwrap_or(0));
        s.latency_ms_sum += r.latency_ms;
        s.ttft_ms_sum += r.ttft_ms.unwrap_or(0.0);
        s.ttft_count += i64::from(r.ttft_ms.is_some());
        *self
            .latency
            .entry((hour, model, latency_bucket(r.latency_ms)))
            .or_default() += 1;
        if !r.ok {
            let kind = text(&r.error_kind);
            *self.errors.entry((hour, model, kind)).or_default() += 1;
        }
    }

    /// One upsert per group, each a cached one-row statement.
    pub(super) fn write(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        const HOURLY: &str = "INSERT INTO rollup_hourly (hour, route, model, provider, \
            policy_version, api_key_id, tenant, requests, errors, cost_usd, prompt_tokens, \
            completion_tokens, latency_ms_sum, ttft_ms_sum, ttft_count) \
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
            ON CONFLICT (hour, route, model, provider, policy_version, api_key_id, tenant) \
            DO UPDATE SET requests = requests + excluded.requests, \
            errors = errors + excluded.errors, cost_usd = cost_usd + excluded.cost_usd, \
            prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
            completion_tokens = completion_tokens + excluded.completion_tokens, \
            latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum, \
            ttft_ms_sum = ttft_ms_sum + excluded.ttft_ms_sum, \
            ttft_count = ttft_count + excluded.ttft_count";
        const LATENCY: &str = "INSERT INTO rollup_latency_hourly (hour, model, bucket, requests) \
            VALUES (?, ?, ?, ?) \
            ON CONFLICT (hour, model, bucket) DO UPDATE SET requests = requests + excluded.requests";
        const ERRORS: &str =
            "INSERT INTO rollup_errors_hourly (hour, model, error_kind, requests) \
            VALUES (?, ?, ?, ?) \
            ON CONFLICT (hour, model, error_kind) DO UPDATE SET \
            requests = requests + excluded.requests";
        let mut hourly = tx.prepare_cached(HOURLY)?;
        for ((hour, [route, model, provider, version, key, tenant]), s) in &self.hourly {
            hourly.execute(params![
                hour,
                route,
                model,
                provider,
                version,
                key,
                tenant,
                s.requests,
                s.errors,
                s.cost_usd,
                s.prompt_tokens,
                s.completion_tokens,
                s.latency_ms_sum,
                s.ttft_ms_sum,
                s.ttft_count,
            ])?;
        }
        let mut latency = tx.prepare_cached(LATENCY)?;
        for ((hour, model, bucket), requests) in &self.latency {
            latency.execute(params![hour, model, bucket, requests])?;
        }
        let mut errors = tx.prepare_cached(ERRORS)?;
        for ((hour, model, kind), requests) in &self.errors {
            errors.execute(params![hour, model, kind, requests])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_lands_in_the_largest_bucket_at_or_below_it() {
        let last = LATENCY_BUCKETS_MS.len() as i64 - 1;
        for (ms, want) in [
            (0.0, 0),
            (4.999, 0),
            (5.0, 1),
            (7.0, 1),
            (99.9, 6),
            (100.0, 7),
            (119_999.0, last - 1),
            (120_000.0, last),
            (1e9, last),
        ] {
            assert_eq!(latency_bucket(ms), want, "{ms} ms");
        }
    }
}
