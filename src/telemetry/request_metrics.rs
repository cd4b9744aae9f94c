//! Per-request metric handles, registered once per (route, model, provider)
//! and reused. `metrics::counter!(name, &labels)` builds a `Key` (label
//! strings allocated, hashed) and looks it up in the recorder's registry on
//! every call: with the six series a request touches that was ~10,000
//! instructions per request (callgrind, docs/performance.md). Here a request
//! does two string-keyed map reads under a read lock (written only the first
//! time a combination is seen; the set is bounded by the configured names)
//! and then updates atomics.
//!
//! Each series is still registered on first use only, so `/metrics` shows
//! exactly the series it showed before (no zero-valued ones appear early).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use foldhash::fast::RandomState;
use metrics::{Counter, Histogram, Label};

use super::names;

/// The handles of one (route, model, provider): labels as the exporter shows them.
pub struct RequestSeries {
    labels: [Label; 3],
    /// By status class: 2xx, 4xx, 5xx.
    requests: [OnceLock<Counter>; 3],
    latency: OnceLock<Histogram>,
    ttft: OnceLock<Histogram>,
    input_tokens: OnceLock<Counter>,
    output_tokens: OnceLock<Counter>,
    cost: OnceLock<Counter>,
}

/// Status classes, in the order of `RequestSeries::requests`.
const STATUS: [&str; 3] = ["2xx", "4xx", "5xx"];

fn status_index(code: u16) -> usize {
    match code {
        200..=299 => 0,
        400..=499 => 1,
        _ => 2,
    }
}

impl RequestSeries {
    fn new(route: &str, model: &str, provider: &str) -> Self {
        Self {
            labels: [
                Label::new("route", route.to_owned()),
                Label::new("model", model.to_owned()),
                Label::new("provider", provider.to_owned()),
            ],
            requests: Default::default(),
            latency: OnceLock::new(),
            ttft: OnceLock::new(),
            input_tokens: OnceLock::new(),
            output_tokens: OnceLock::new(),
            cost: OnceLock::new(),
        }
    }

    fn with(&self, extra: (&'static str, &'static str)) -> Vec<Label> {
        let mut l = self.labels.to_vec();
        l.push(Label::new(extra.0, extra.1));
        l
    }

    /// `switchboard_requests_total{route,model,provider,status}`.
    pub fn request(&self, status_code: u16) {
        let i = status_index(status_code);
        self.requests[i]
            .get_or_init(|| metrics::counter!(names::REQUESTS, self.with(("status", STATUS[i]))))
            .increment(1);
    }

    pub fn latency(&self, seconds: f64) {
        self.latency
            .get_or_init(|| metrics::histogram!(names::REQUEST_LATENCY, self.labels.to_vec()))
            .record(seconds);
    }

    pub fn ttft(&self, seconds: f64) {
        self.ttft
            .get_or_init(|| metrics::histogram!(names::TTFT, self.labels.to_vec()))
            .record(seconds);
    }

    pub fn tokens(&self, input: u32, output: u32) {
        self.input_tokens
            .get_or_init(|| metrics::counter!(names::TOKENS, self.with(("type", "input"))))
            .increment(u64::from(input));
        self.output_tokens
            .get_or_init(|| metrics::counter!(names::TOKENS, self.with(("type", "output"))))
            .increment(u64::from(output));
    }

    /// In micro-dollars: the `metrics` crate's counters are integers.
    pub fn cost_microusd(&self, micro: u64) {
        self.cost
            .get_or_init(|| metrics::counter!(names::COST_USD, self.labels.to_vec()))
            .increment(micro);
    }

    /// `switchboard_request_errors_total{...,kind}`: rare, so not cached.
    pub fn error(&self, kind: &str) {
        let mut l = self.labels.to_vec();
        l.push(Label::new("kind", kind.to_owned()));
        metrics::counter!(names::REQUEST_ERRORS, l).increment(1);
    }
}

/// By model name; a series also carries its provider (a reload may move a
/// model to another provider: then it gets new series). foldhash, not
/// SipHash: two lookups a request of names the config holds.
type ByModel = HashMap<String, Arc<RequestSeries>, RandomState>;

/// The handle cache, process-wide (metric handles belong to the one
/// recorder installed at start, whatever config the gateway runs).
#[derive(Default)]
pub struct RequestMetrics {
    by_route: RwLock<HashMap<String, ByModel, RandomState>>,
}

impl RequestMetrics {
    pub fn global() -> &'static RequestMetrics {
        static CACHE: OnceLock<RequestMetrics> = OnceLock::new();
        CACHE.get_or_init(RequestMetrics::default)
    }

    /// The series of `route`, `model`, `provider` ("-" for none).
    pub fn series(&self, route: &str, model: &str, provider: &str) -> Arc<RequestSeries> {
        let fits = |s: &Arc<RequestSeries>| s.labels[2].value() == provider;
        {
            let map = self.by_route.read().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = map
                .get(route)
                .and_then(|m| m.get(model))
                .filter(|s| fits(s))
            {
                return s.clone();
            }
        }
        let mut map = self.by_route.write().unwrap_or_else(|p| p.into_inner());
        let slot = map
            .entry(route.to_owned())
            .or_default()
            .entry(model.to_owned())
            .or_insert_with(|| Arc::new(RequestSeries::new(route, model, provider)));
        if !fits(slot) {
            *slot = Arc::new(RequestSeries::new(route, model, provider));
        }
        slot.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_names_share_one_series_and_others_do_not() {
        let m = RequestMetrics::default();
        let a = m.series("auto", "m1", "p");
        let b = m.series("auto", "m1", "p");
        let c = m.series("auto", "m1", "q");
        let d = m.series("-", "m1", "p");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(!Arc::ptr_eq(&a, &d));
        assert_eq!(status_index(204), 0);
        assert_eq!(status_index(429), 1);
        assert_eq!(status_index(502), 2);
        assert_eq!(status_index(100), 2);
    }
}
