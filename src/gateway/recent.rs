//! Recent decisions, kept in memory by request id so that feedback can be
//! checked and joined to its decision without a database round trip.
//! Bounded in count and age; older feedback falls back to the store.
//!
//! A table of its own rather than a general cache: decisions arrive in time
//! order and all live equally long, so one first-in-first-out queue per
//! shard bounds both count and age exactly, with one short lock per insert
//! or lookup and no background upkeep. (A moka cache did this before; its
//! SipHash keys, eviction bookkeeping and table rehashing were ~9 % of the
//! router's CPU on a fixed route at 64 requests in flight,
//! docs/performance.md.)

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

use crate::features::Features;

/// Enough that the request path's tokio workers almost never meet on one.
const SHARDS: usize = 16;

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

/// Shared: clones see the same table.
#[derive(Clone)]
pub struct RecentDecisions {
    table: Arc<Table>,
}

struct Table {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    ttl: Duration,
}

#[derive(Default)]
struct Shard {
    memos: HashMap<Arc<str>, Held, RandomState>,
    /// Every id in `memos`, in the order it was inserted, tagged with the
    /// insert's number. An expired id inserted again leaves its old entry
    /// behind here; that entry no longer matches and is just dropped.
    order: VecDeque<(Arc<str>, Instant, u64)>,
    /// Numbers the inserts.
    inserts: u64,
}

struct Held {
    memo: Arc<DecisionMemo>,
    at: Instant,
    insert: u64,
}

/// Expired ids forgotten per insert at most. After an idle spell a whole
/// shard may have expired; forgetting it a few ids per insert keeps every
/// lock hold short (`get` never returns an expired memo meanwhile).
const EXPIRED_PER_INSERT: usize = 8;

impl Shard {
    /// Forgets the oldest ids while more than `keep` are held, and up to
    /// `EXPIRED_PER_INSERT` more that are older than `ttl`.
    fn evict(&mut self, now: Instant, keep: usize, ttl: Duration) {
        let mut expired = 0;
        while let Some((id, at, insert)) = self.order.front() {
            if self.order.len() <= keep {
                if expired == EXPIRED_PER_INSERT || now.duration_since(*at) < ttl {
                    break;
                }
                expired += 1;
            }
            if self.memos.get(id).is_some_and(|h| h.insert == *insert) {
                self.memos.remove(id);
            }
            self.order.pop_front();
        }
    }
}

impl RecentDecisions {
    /// Holds at most about `capacity` decisions (rounded up to a multiple of
    /// the shard count), each for at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let per_shard = usize::try_from(capacity)
            .unwrap_or(usize::MAX)
            .div_ceil(SHARDS)
            .max(1);
        Self {
            table: Arc::new(Table {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                hasher: RandomState::default(),
                per_shard,
                ttl,
            }),
        }
    }

    fn shard(&self, request_id: &str) -> MutexGuard<'_, Shard> {
        let i = self.table.hasher.hash_one(request_id) as usize % SHARDS;
        // Nothing in a shard's few steps panics short of running out of
        // memory; a poisoned lock is still a usable table: keep serving.
        self.table.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a decision, or replaces the memo of one already held (it
    /// keeps its age). The newest decision is always admitted.
    pub fn insert(&self, request_id: &str, memo: DecisionMemo) {
        self.insert_at(request_id, memo, Instant::now());
    }

    fn insert_at(&self, request_id: &str, memo: DecisionMemo, now: Instant) {
        let t = &self.table;
        let mut shard = self.shard(request_id);
        if let Some(held) = shard.memos.get_mut(request_id) {
            if now.duration_since(held.at) < t.ttl {
                held.memo = Arc::new(memo);
                return;
            }
            // Expired but not yet forgotten: inserted afresh below.
        }
        shard.evict(now, t.per_shard - 1, t.ttl);
        shard.inserts += 1;
        let insert = shard.inserts;
        let id: Arc<str> = Arc::from(request_id);
        shard.memos.insert(
            id.clone(),
            Held {
                memo: Arc::new(memo),
                at: now,
                insert,
            },
        );
        shard.order.push_back((id, now, insert));
    }

    /// Forgets everything (as a restart would).
    pub fn clear(&self) {
        for shard in self.table.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.memos.clear();
            shard.order.clear();
        }
    }

    pub fn get(&self, request_id: &str) -> Option<Arc<DecisionMemo>> {
        self.get_at(request_id, Instant::now())
    }

    fn get_at(&self, request_id: &str, now: Instant) -> Option<Arc<DecisionMemo>> {
        let shard = self.shard(request_id);
        let held = shard.memos.get(request_id)?;
        (now.duration_since(held.at) < self.table.ttl).then(|| held.memo.clone())
    }

    /// Decisions held, expired ones not yet evicted included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).memos.len())
            .sum()
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

    fn memo(model: usize) -> DecisionMemo {
        DecisionMemo {
            route: Some(0),
            model: Some(model),
            features: None,
            quality_taught: false,
        }
    }

    #[test]
    fn the_newest_decision_is_always_admitted_when_full() {
        let recent = RecentDecisions::new(100, Duration::from_secs(60));
        for i in 0..5_000 {
            let id = format!("req-{i}");
            recent.insert(&id, memo(0));
            assert!(recent.get(&id).is_some(), "decision {i} was not admitted");
        }
    }

    #[test]
    fn the_table_holds_its_capacity_and_forgets_the_oldest_first() {
        let recent = RecentDecisions::new(160, Duration::from_secs(60));
        for i in 0..10_000 {
            recent.insert(&format!("req-{i}"), memo(0));
        }
        assert_eq!(recent.len(), 160, "every shard full, none over");
        // Each shard keeps its ten newest; an id among the last few is held
        // whatever its shard, the first thousand are all gone.
        assert!(recent.get("req-9999").is_some());
        assert!((0..1_000).all(|i| recent.get(&format!("req-{i}")).is_none()));
    }

    #[test]
    fn a_second_insert_replaces_the_memo_and_keeps_one_entry() {
        let recent = RecentDecisions::new(100, Duration::from_secs(60));
        recent.insert("req-1", memo(1));
        recent.insert("req-1", memo(2));
        assert_eq!(recent.get("req-1").and_then(|m| m.model), Some(2));
        assert_eq!(recent.len(), 1);
    }

    #[test]
    fn an_expired_decision_is_not_returned_and_is_evicted_by_later_inserts() {
        let recent = RecentDecisions::new(100, Duration::ZERO);
        recent.insert("req-1", memo(1));
        assert!(recent.get("req-1").is_none(), "older than a zero ttl");
        // A later insert into any shard evicts expired ids in its own shard;
        // re-inserting the same id finds its shard.
        recent.insert("req-1", memo(2));
        assert_eq!(
            recent.len(),
            1,
            "the expired entry was replaced, not duplicated"
        );
    }

    #[test]
    fn eviction_forgets_every_id_over_capacity_but_only_a_few_expired_ones() {
        let born = Instant::now();
        let mut shard = Shard::default();
        for i in 0..100 {
            let id: Arc<str> = Arc::from(format!("req-{i}").as_str());
            let held = Held {
                memo: Arc::new(memo(0)),
                at: born,
                insert: i,
            };
            shard.memos.insert(id.clone(), held);
            shard.order.push_back((id, born, i));
        }
        let ttl = Duration::from_secs(60);
        // Within their ttl: only the count is enforced, all at once.
        shard.evict(born, 50, ttl);
        assert_eq!((shard.memos.len(), shard.order.len()), (50, 50));
        // An hour later all fifty have expired; one step forgets a few.
        let later = born + Duration::from_secs(3600);
        shard.evict(later, 50, ttl);
        assert_eq!(shard.order.len(), 50 - EXPIRED_PER_INSERT);
        assert_eq!(shard.memos.len(), shard.order.len());
        assert!(shard.memos.contains_key("req-99") && !shard.memos.contains_key("req-50"));
    }

    #[test]
    fn an_expired_id_inserted_again_is_held_afresh_and_outlives_its_old_entry() {
        let ttl = Duration::from_secs(60);
        let recent = RecentDecisions::new(16 * 1_000, ttl);
        let born = Instant::now();
        for i in 0..2_000 {
            recent.insert_at(&format!("req-{i}"), memo(0), born);
        }
        // An hour on, the id's shard still holds far more expired ids than
        // one insert forgets, its own old entry among them.
        let later = born + Duration::from_secs(3600);
        recent.insert_at("req-1999", memo(7), later);
        let soon = later + Duration::from_secs(1);
        assert_eq!(
            recent.get_at("req-1999", soon).and_then(|m| m.model),
            Some(7)
        );
        // Forgetting every expired entry, the old one included, leaves it.
        for _ in 0..1_000 {
            recent.shard("req-1999").evict(soon, 1_000, ttl);
        }
        assert_eq!(
            recent.get_at("req-1999", soon).and_then(|m| m.model),
            Some(7)
        );
        let shard = recent.shard("req-1999");
        assert_eq!((shard.memos.len(), shard.order.len()), (1, 1));
    }

    #[test]
    fn clear_forgets_everything_for_every_clone() {
        let recent = RecentDecisions::new(100, Duration::from_secs(60));
        let other = recent.clone();
        for i in 0..50 {
            recent.insert(&format!("req-{i}"), memo(0));
        }
        other.clear();
        assert_eq!(recent.len(), 0);
        assert!(recent.get("req-7").is_none());
    }
}
