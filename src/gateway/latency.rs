//! Rolling latency per model: the last `WINDOW` successful requests' total
//! latency and time to first token, and their p95, for latency SLOs and the
//! decision receipt. Writers take a per-model mutex for a push (and, every
//! few pushes, a selection over `WINDOW` numbers); readers only load an atomic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Requests remembered per model: small enough that a slowdown shows in
/// the p95 after a handful of slow answers.
const WINDOW: usize = 64;
/// Recompute the p95 every this many samples (and for the first few).
const REFRESH_EVERY: u64 = 4;

struct Window {
    samples: VecDeque<f64>,
    pushes: u64,
    /// The samples, reordered to find the p95.
    scratch: Vec<f64>,
}

pub struct ModelLatency {
    window: Mutex<Window>,
    /// p95 in ms as f64 bits; NaN until there are samples.
    p95_ms: AtomicU64,
}

impl ModelLatency {
    fn new() -> Self {
        Self {
            window: Mutex::new(Window {
                samples: VecDeque::with_capacity(WINDOW),
                pushes: 0,
                scratch: Vec::with_capacity(WINDOW),
            }),
            p95_ms: AtomicU64::new(f64::NAN.to_bits()),
        }
    }

    fn record(&self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.samples.len() == WINDOW {
            w.samples.pop_front();
        }
        w.samples.push_back(ms);
        w.pushes += 1;
        if w.pushes <= WINDOW as u64 || w.pushes % REFRESH_EVERY == 0 {
            // The rank's value, as a full sort would place it, in linear
            // time and in a buffer kept between refreshes (a sort and an
            // allocation cost ~2,000 instructions a request).
            let Window {
                samples, scratch, ..
            } = &mut *w;
            scratch.clear();
            scratch.extend(samples.iter().copied());
            let len = scratch.len();
            let rank = ((len as f64) * 0.95).ceil() as usize;
            let (_, p95, _) =
                scratch.select_nth_unstable_by(rank.clamp(1, len) - 1, f64::total_cmp);
            self.p95_ms.store(p95.to_bits(), Ordering::Relaxed);
        }
    }

    pub fn p95_ms(&self) -> Option<f64> {
        let v = f64::from_bits(self.p95_ms.load(Ordering::Relaxed));
        v.is_finite().then_some(v)
    }
}

pub struct LatencyStats {
    models: Vec<Arc<ModelLatency>>,
}

impl LatencyStats {
    pub fn new(models: usize) -> Self {
        Self {
            models: (0..models).map(|_| Arc::new(ModelLatency::new())).collect(),
        }
    }

    /// After a reload: models configured before keep their window (shared
    /// with the old generation), matched by name; new ones start empty.
    pub fn carried(names: &[&str], old: &LatencyStats, old_names: &[&str]) -> Self {
        Self {
            models: names
                .iter()
                .map(|n| {
                    old_names
                        .iter()
                        .position(|o| o == n)
                        .and_then(|j| old.models.get(j).cloned())
                        .unwrap_or_else(|| Arc::new(ModelLatency::new()))
                })
                .collect(),
        }
    }

    pub fn record(&self, model: usize, latency_ms: f64) {
        if let Some(m) = self.models.get(model) {
            m.record(latency_ms);
        }
    }

    pub fn p95_ms(&self, model: usize) -> Option<f64> {
        self.models.get(model).and_then(|m| m.p95_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_follows_a_slowdown_within_a_few_samples() {
        let s = LatencyStats::new(1);
        assert_eq!(s.p95_ms(0), None);
        for _ in 0..60 {
            s.record(0, 100.0);
        }
        assert_eq!(s.p95_ms(0), Some(100.0));
        for _ in 0..8 {
            s.record(0, 3000.0);
        }
        assert_eq!(s.p95_ms(0), Some(3000.0));
    }

    #[test]
    fn junk_samples_are_ignored() {
        let s = LatencyStats::new(1);
        s.record(0, f64::NAN);
        s.record(0, -1.0);
        assert_eq!(s.p95_ms(0), None);
        s.record(5, 1.0);
    }
}
