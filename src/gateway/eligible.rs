//! Which of a route's models may answer this request: the circuit must be
//! closed (or due a probe), the client must not have excluded it, and it must
//! have the capabilities and context window the request needs. Each exclusion
//! keeps its reason for the decision receipt.

use std::time::Instant;

use serde::Serialize;

use super::breaker::Breakers;
use super::catalog::{Catalog, RouteEntry};
use super::latency::LatencyStats;
use super::options::{Needs, RouterOptions};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Exclusion {
    pub model: String,
    pub reason: String,
}

pub struct Eligible {
    /// Catalog model indices, in the route's arm order.
    pub models: Vec<usize>,
    pub excluded: Vec<Exclusion>,
}

pub fn eligible(
    catalog: &Catalog,
    route: &RouteEntry,
    breakers: &Breakers,
    opts: &RouterOptions,
    needs: &Needs,
    now: Instant,
) -> Eligible {
    let mut models = Vec::with_capacity(route.arms.len());
    let mut excluded = Vec::new();
    for &i in &route.arms {
        let m = &catalog.models[i];
        let reason = if opts.exclude_models.iter().any(|x| x == m.name.as_str()) {
            Some("excluded by the request".to_owned())
        } else if let Some(cap) = needs.capabilities.iter().find(|c| !m.supports(**c)) {
            Some(format!("lacks capability {cap:?}"))
        } else if m
            .context_window
            .is_some_and(|w| needs.prompt_tokens_estimate > w)
        {
            Some("prompt exceeds its context window".to_owned())
        } else if !breakers.is_available(i, now) {
            Some("circuit open".to_owned())
        } else {
            None
        };
        match reason {
            Some(reason) => excluded.push(Exclusion {
                model: m.name.as_str().to_owned(),
                reason,
            }),
            None => models.push(i),
        }
    }
    Eligible { models, excluded }
}

/// Drops models whose recent p95 latency breaks the route's SLO — unless
/// that would leave none, in which case the set is kept as it is.
pub fn apply_latency_slo(
    el: &mut Eligible,
    catalog: &Catalog,
    slo_ms: u64,
    latency: &LatencyStats,
) {
    let breaks = |m: usize| latency.p95_ms(m).is_some_and(|p| p > slo_ms as f64);
    if el.models.iter().all(|&m| breaks(m)) {
        return;
    }
    let (keep, slow): (Vec<usize>, Vec<usize>) = el.models.iter().partition(|&&m| !breaks(m));
    for m in slow {
        el.excluded.push(Exclusion {
            model: catalog.models[m].name.as_str().to_owned(),
            reason: format!(
                "recent p95 {:.0} ms breaks the route's {slo_ms} ms SLO",
                latency.p95_ms(m).unwrap_or(f64::NAN)
            ),
        });
    }
    el.models = keep;
}
