//! What the admin API shows about replication: this replica's status and
//! every replica's row (`GET /admin/replicas`), and a route's merged policy
//! state (part of `GET /admin/routes/{name}/policy`).

use serde_json::{json, Map, Value};

use crate::gateway::Gateway;
use crate::store::{Store, StoreError};

/// `/admin/replicas`: this replica, and all of them with their liveness.
pub async fn replicas(gw: &Gateway) -> Result<Value, StoreError> {
    let (learning, store) = (&gw.learning, &gw.store);
    let Some((rep, status)) = &learning.replica else {
        let reason = match store {
            Store::Sqlite(_) => "SQLite serves one process: scale-out needs Postgres",
            Store::Postgres(_) => "[scale] enabled = false",
        };
        return Ok(json!({ "enabled": false, "reason": reason }));
    };
    let rows = store.list_replicas(rep.stale_ms()).await?;
    let me = status.load();
    Ok(json!({
        "enabled": true,
        "self": &**me,
        "stale_after_ms": rep.stale_ms(),
        "delta_flush_ms": rep.flush.as_millis() as u64,
        "live": rows.iter().filter(|r| r.live).count(),
        "replicas": rows,
    }))
}

/// The replication part of `/admin/routes/{name}/policy` (`views::policy`)
/// for the route at catalog index `index`: `merged` is null without
/// scale-out, else the log position (`watermark`) and `epoch` the replica
/// task has merged the route to; with `full`, also the whole snapshots:
/// `serving` (the merged state plus this replica's unshipped updates) and
/// `merged.state`. Replicas at the same watermark hold bit-identical merged
/// states.
pub fn route_policy(gw: &Gateway, index: usize, full: bool) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(learner) = gw.learning.routes.get(index) else {
        return out;
    };
    let merged = gw.learning.replica.as_ref().and_then(|(_, status)| {
        let s = status.load();
        s.routes.iter().find(|r| r.slot == learner.slot).map(|r| {
            let mut m = json!({ "watermark": r.watermark, "epoch": r.epoch });
            if full {
                m["state"] = json!(&*r.merged);
            }
            m
        })
    });
    out.insert("merged".into(), merged.unwrap_or(Value::Null));
    if full {
        out.insert("serving".into(), json!(&*learner.policy.load_full()));
    }
    out
}
