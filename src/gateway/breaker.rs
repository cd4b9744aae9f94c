//! Per-model circuit breakers: after `threshold` consecutive failures a model
//! is taken out of every route for `cooldown`; then one half-open probe
//! request decides whether it is back.
//!
//! Each breaker is a tiny mutex held for a few instructions, never across
//! an await.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The probe is in flight; nobody else may use the model until it ends.
    HalfOpen,
}

pub struct Breakers {
    /// Shared with the next generation after a reload (`adopt`).
    states: Vec<Arc<Mutex<State>>>,
    threshold: u32,
    cooldown: Duration,
    /// Model names for the state gauge; empty means no gauge.
    names: Vec<String>,
}

impl Breakers {
    pub fn new(models: usize, threshold: u32, cooldown: Duration) -> Self {
        Self {
            states: (0..models)
                .map(|_| Arc::new(Mutex::new(State::Closed { failures: 0 })))
                .collect(),
            threshold: threshold.max(1),
            cooldown,
            names: Vec::new(),
        }
    }

    /// Publishes each model's state as `switchboard_circuit_state{model}`
    /// (0 closed, 1 open, 2 half-open), set on every change of state.
    pub fn named(mut self, names: Vec<String>) -> Self {
        self.names = names;
        for i in 0..self.states.len() {
            self.publish(i, State::Closed { failures: 0 });
        }
        self
    }

    /// After a reload: every model that was configured before keeps its
    /// breaker (the very same cell, so requests still running under the old
    /// configuration and new ones see one state). Matched by name.
    pub fn adopt(&mut self, old: &Breakers) {
        for (i, name) in self.names.iter().enumerate() {
            if let Some(j) = old.names.iter().position(|n| n == name) {
                if let (Some(cell), Some(prev)) = (self.states.get_mut(i), old.states.get(j)) {
                    *cell = Arc::clone(prev);
                }
            }
        }
    }

    fn publish(&self, model: usize, state: State) {
        if let Some(name) = self.names.get(model) {
            let v = match state {
                State::Closed { .. } => 0.0,
                State::Open { .. } => 1.0,
                State::HalfOpen => 2.0,
            };
            metrics::gauge!(crate::telemetry::names::BREAKER_STATE, "model" => name.clone()).set(v);
        }
    }

    fn with<R>(&self, model: usize, f: impl FnOnce(&mut State) -> R) -> Option<R> {
        let cell = self.states.get(model)?;
        let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
        let before = std::mem::discriminant(&*guard);
        let r = f(&mut guard);
        if std::mem::discriminant(&*guard) != before {
            self.publish(model, *guard);
        }
        Some(r)
    }

    /// May the policy consider this model now? (Does not take the probe.)
    pub fn is_available(&self, model: usize, now: Instant) -> bool {
        self.with(model, |s| match *s {
            State::Closed { .. } => true,
            State::Open { until } => now >= until,
            State::HalfOpen => false,
        })
        .unwrap_or(false)
    }

    /// Claims the right to send a request; an expired open circuit turns
    /// half-open and this caller becomes its single probe.
    pub fn try_acquire(&self, model: usize, now: Instant) -> bool {
        self.with(model, |s| match *s {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *s = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        })
        .unwrap_or(false)
    }

    pub fn on_success(&self, model: usize) {
        self.with(model, |s| *s = State::Closed { failures: 0 });
    }

    /// Returns true when this failure opened the circuit.
    pub fn on_failure(&self, model: usize, now: Instant) -> bool {
        let (threshold, cooldown) = (self.threshold, self.cooldown);
        self.with(model, |s| match *s {
            State::Closed { failures } if failures + 1 >= threshold => {
                *s = State::Open {
                    until: now + cooldown,
                };
                true
            }
            State::Closed { failures } => {
                *s = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::HalfOpen | State::Open { .. } => {
                *s = State::Open {
                    until: now + cooldown,
                };
                true
            }
        })
        .unwrap_or(false)
    }

    /// A request that neither succeeded nor failed on the model's account
    /// (e.g. the client's own bad input) releases a half-open probe.
    pub fn on_neutral(&self, model: usize, now: Instant) {
        self.with(model, |s| {
            if *s == State::HalfOpen {
                *s = State::Open { until: now };
            }
        });
    }

    pub fn is_open(&self, model: usize, now: Instant) -> bool {
        !self.is_available(model, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_recovers_through_one_probe() {
        let b = Breakers::new(1, 3, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(!b.on_failure(0, t0));
        assert!(!b.on_failure(0, t0));
        assert!(b.on_failure(0, t0), "third failure opens");
        assert!(!b.is_available(0, t0));
        assert!(!b.try_acquire(0, t0 + Duration::from_secs(5)));
        let later = t0 + Duration::from_secs(11);
        assert!(b.is_available(0, later));
        assert!(b.try_acquire(0, later), "first caller is the probe");
        assert!(!b.try_acquire(0, later), "only one probe at a time");
        b.on_success(0);
        assert!(b.try_acquire(0, later));
    }

    #[test]
    fn failed_probe_reopens() {
        let b = Breakers::new(1, 1, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(b.on_failure(0, t0));
        let later = t0 + Duration::from_secs(11);
        assert!(b.try_acquire(0, later));
        assert!(b.on_failure(0, later));
        assert!(!b.is_available(0, later + Duration::from_secs(1)));
    }

    #[test]
    fn success_resets_the_count() {
        let b = Breakers::new(1, 2, Duration::from_secs(10));
        let t0 = Instant::now();
        b.on_failure(0, t0);
        b.on_success(0);
        assert!(!b.on_failure(0, t0), "count restarted after a success");
    }
}
