//! Recent decisions, kept in memory by request id so that feedback can be
//! checked and joined to its decision without a database round trip.
//! Bounded in count and age; older feedback falls back to the store.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::features::Features;

/// What feedback needs to teach the policy about one decision.
#[derive(Debug, Clone)]
pub struct DecisionMemo {
    /// Index of the route in the catalog; `None` for a direct model request.
    pub route: Option<usize>,
    /// Catalog index of the model that answered (or was last tried).
    pub model: Option<usize>,
    pub features: Option<Features>,
    /// The policy has had its quality signal for this decision (a failure
    /// counts as quality 0; then only the first feedback teaches online).
    pub quality_taught: bool,
}

#[derive(Clone)]
pub struct RecentDecisions {
    cache: Cache<String, Arc<DecisionMemo>>,
}

impl RecentDecisions {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            // LRU, not moka's default TinyLFU: every decision must be admitted
            // (a rejected one would 404 its feedback until its row is written).
            cache: Cache::builder()
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    pub fn insert(&self, request_id: &str, memo: DecisionMemo) {
        self.cache.insert(request_id.to_owned(), Arc::new(memo));
    }

    /// Forgets everything (as a restart would).
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    pub fn get(&self, request_id: &str) -> Option<Arc<DecisionMemo>> {
        self.cache.get(request_id)
    }
}

/// The previous configuration's table, for feedback on requests decided
/// before a reload: its memos hold that configuration's route and model
/// indices, translated here by name into the current ones.
pub struct Previous {
    pub table: RecentDecisions,
    /// Old route index -> new route index (`None`: the route is gone).
    pub routes: Vec<Option<usize>>,
    /// Old model index -> new model index.
    pub models: Vec<Option<usize>>,
}

impl Previous {
    pub fn recall(&self, request_id: &str) -> Option<DecisionMemo> {
        let m = self.table.get(request_id)?;
        Some(DecisionMemo {
            route: m.route.and_then(|r| self.routes.get(r).copied().flatten()),
            model: m.model.and_then(|i| self.models.get(i).copied().flatten()),
            features: m.features.clone(),
            quality_taught: m.quality_taught,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_decision_is_always_admitted_when_full() {
        let recent = RecentDecisions::new(100, Duration::from_secs(60));
        let memo = DecisionMemo {
            route: Some(0),
            model: Some(0),
            features: None,
            quality_taught: false,
        };
        for i in 0..5_000 {
            let id = format!("req-{i}");
            recent.insert(&id, memo.clone());
            assert!(recent.get(&id).is_some(), "decision {i} was not admitted");
        }
    }
}
