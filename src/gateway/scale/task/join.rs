//! The replica task's membership and persistence: (re)joining from the
//! checkpoints, checking a route a reload added against its checkpoint,
//! the leader's checkpoint and compaction, and the shutdown sign-off.

use std::time::{Duration, Instant};

use super::ReplicaTask;
use crate::store::StoreError;
use crate::telemetry::names;

/// How long shutdown keeps trying to ship the last flushes.
const FINAL_DEADLINE: Duration = Duration::from_secs(5);

impl ReplicaTask {
    /// (Re)joins: registers with watermark 0 (holding back compaction),
    /// then restarts each route from the checkpoint when it is ahead.
    pub(super) async fn rejoin(&mut self) -> Result<(), StoreError> {
        self.joined = false;
        self.store
            .heartbeat(&self.rep.me, self.progress(), self.rep.stale_ms())
            .await?;
        let live: Vec<usize> = self.slots.live().map(|(i, _)| i).collect();
        let changed = self.adopt_checkpoints(&live).await?;
        self.joined = true;
        self.rejoins += 1;
        metrics::counter!(names::SCALE_REJOINS).increment(1);
        self.notify(changed).await;
        Ok(())
    }

    /// Restarts each of `slots` from its route's checkpoint when that is
    /// ahead of its fold. Returns the slots that restarted.
    pub(super) async fn adopt_checkpoints(
        &mut self,
        slots: &[usize],
    ) -> Result<Vec<bool>, StoreError> {
        let own = self
            .store
            .own_delta_positions(&self.rep.me.incarnation)
            .await?;
        let mut changed = vec![false; self.slots.len()];
        for &i in slots {
            let Some(name) = self.slots.live_mut(i).map(|s| s.name.clone()) else {
                continue;
            };
            let Some(cp) = self.store.load_checkpoint(&name).await? else {
                continue;
            };
            let Some(slot) = self.slots.live_mut(i) else {
                continue;
            };
            let w = cp.watermark;
            // Own deltas at or below the checkpoint are in it; committed
            // ones no longer in the log were compacted (only ever below a
            // checkpoint).
            changed[i] = slot.adopt(&cp, |seq| {
                own.iter()
                    .find(|(s, r, _)| *s as u64 == seq && *r == name)
                    .is_none_or(|(_, _, pos)| *pos <= w)
            });
        }
        Ok(changed)
    }

    /// Saves the merged states (when this replica is the lowest-named live
    /// one, or `always`) and compacts the log.
    pub(super) async fn checkpoint(&mut self, always: bool) {
        if !self.joined {
            return;
        }
        let leader = match self.store.list_replicas(self.rep.stale_ms()).await {
            Ok(rows) => {
                let live: Vec<_> = rows.iter().filter(|r| r.live).collect();
                metrics::gauge!(names::SCALE_REPLICAS_LIVE).set(live.len() as f64);
                live.first().is_none_or(|r| r.id == self.rep.me.id)
            }
            Err(_) => false,
        };
        if !(leader || always) {
            return;
        }
        let due: Vec<usize> = self
            .slots
            .live()
            .filter(|(_, s)| s.log.watermark > s.saved)
            .map(|(i, _)| i)
            .collect();
        for i in due {
            let Some(slot) = self.slots.get(i) else {
                continue;
            };
            let (version, value) = match slot.checkpoint() {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "Serialising a checkpoint failed.");
                    continue;
                }
            };
            let (w, epoch, name) = (
                slot.log.watermark,
                slot.log.epoch.clone(),
                slot.name.clone(),
            );
            match self
                .store
                .save_checkpoint(&name, &version, &value, w, &epoch)
                .await
            {
                Ok(_) => {
                    if let Some(s) = self.slots.live_mut(i) {
                        s.saved = w;
                    }
                }
                Err(e) => {
                    tracing::warn!(route = %name, error = %e, "Saving the checkpoint failed; will retry.");
                    return;
                }
            }
        }
        match self.store.compact_deltas(self.rep.stale_ms()).await {
            Ok(n) => metrics::counter!(names::SCALE_DELTAS_COMPACTED).increment(n),
            Err(e) => tracing::warn!(error = %e, "Compacting the delta log failed."),
        }
    }

    /// Shutdown: ship what is left (bounded), checkpoint, sign off.
    pub(super) async fn finish(&mut self) {
        let deadline = Instant::now() + FINAL_DEADLINE;
        loop {
            self.step().await;
            if self.queue.is_empty() && self.database_ok {
                break;
            }
            if Instant::now() >= deadline {
                let lost: u64 = self
                    .queue
                    .iter()
                    .flat_map(|f| &f.deltas)
                    .map(|d| d.delta.updates())
                    .sum();
                tracing::error!(updates = lost, "The database stayed unreachable; this replica's last updates were not shipped.");
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.checkpoint(true).await;
        if let Err(e) = self.store.replica_stopped(&self.rep.me).await {
            tracing::warn!(error = %e, "Signing off in `replicas` failed.");
        }
    }
}
