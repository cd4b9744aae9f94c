//! Carrying learned policy state across a configuration reload.
//!
//! The reload side (`Learning::reshaped`) prepares every route of the new
//! configuration (encoder, spec, a fallback snapshot from the store or the
//! priors) and sends one `Update::Reshape` to the single writer; the writer
//! (`LearningWriter::reshape`) matches routes by name: a route that still
//! exists keeps its slot and its learned state, with arms that still exist
//! kept, new arms at their prior and removed arms dropped; a new route gets
//! a new slot; a removed route's slot is retired (saved once, then ignored).
//!
//! Invariant: a slot's `PolicyHandle` is replaced, never re-shaped in place
//! — requests still running under the old configuration keep reading a
//! snapshot whose arms match their own arm-to-model table.
//!
//! With scale-out, the writer first ships everything learned under the old
//! route set (a forced cut, in the old shape, so replicas still on the old
//! configuration can use it), then tells the tracker and, through it, the
//! replica task what changed (`scale::RouteChange`): a new slot starts from
//! its checkpoint and watermark (read by `prepare_route`), a carried-over
//! route's merged state is reshaped as its serving state is, a route whose
//! features changed restarts its fold, a removed one stops being read.

use std::time::Duration;

use tokio::sync::oneshot;

use super::catalog::Catalog;
use super::learning::{Learning, LearningError, LearningWriter, Update};
use super::prepare::prepare_route;
use super::scale::RouteChange;
use crate::bandit::{PolicyHandle, PolicySnapshot, RouteSpec};
use crate::config::Config;

/// How long a reload waits for the writer to take the new route set.
const REPLY_WITHIN: Duration = Duration::from_secs(10);

/// One route of the new configuration, as the writer needs it.
#[derive(Debug)]
pub struct ReshapeRoute {
    pub name: String,
    pub spec: RouteSpec,
    /// Used when the route is new, or its learned state cannot carry over
    /// (its feature space changed).
    pub fallback: PolicySnapshot,
    /// Scale-out: the delta-log position `fallback` covers.
    pub watermark: i64,
}

#[derive(Debug)]
pub struct Reshape {
    pub routes: Vec<ReshapeRoute>,
    /// For each route, in order: its slot and the handle to read it from.
    pub reply: oneshot::Sender<Vec<(usize, PolicyHandle)>>,
}

impl Learning {
    /// The learning handles for `config` (already turned into `catalog`),
    /// carrying the running writer's state over. Fails before touching the
    /// writer if any route cannot be prepared.
    pub async fn reshaped(
        &self,
        config: &Config,
        catalog: &Catalog,
        store: &crate::store::Store,
    ) -> Result<Learning, LearningError> {
        let mut prepared = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            prepared.push(prepare_route(r, config, store, self.replica.is_some()).await?);
        }
        let (reply, answer) = oneshot::channel();
        let routes = config
            .routes
            .iter()
            .zip(&mut prepared)
            .map(|(r, p)| ReshapeRoute {
                name: r.name.as_str().to_owned(),
                spec: p.spec.clone(),
                fallback: p.snapshot.clone(),
                watermark: p.watermark,
            })
            .collect();
        let gone = || LearningError::Policy {
            route: "*".into(),
            reason: "the learner is not running".into(),
        };
        self.tx
            .send_timeout(
                Update::Reshape(Box::new(Reshape { routes, reply })),
                REPLY_WITHIN,
            )
            .await
            .map_err(|_| gone())?;
        let handles = tokio::time::timeout(REPLY_WITHIN, answer)
            .await
            .map_err(|_| gone())?
            .map_err(|_| gone())?;
        let routes = prepared
            .into_iter()
            .zip(handles)
            .zip(&catalog.routes)
            .map(|((p, (slot, handle)), entry)| p.parts.learner(handle, entry.arms.clone(), slot))
            .collect();
        Ok(Learning {
            routes,
            tx: self.tx.clone(),
            replica: self.replica.clone(),
        })
    }
}

impl LearningWriter {
    /// Takes the new route set (see the module docs) and answers with each
    /// route's slot and handle.
    pub(super) fn reshape(&mut self, r: Reshape) {
        // Scale-out: what was learned under the old route set ships first.
        self.cut(true);
        let replicated = self.tracker.is_some();
        let mut changes = Vec::new();
        let mut out = Vec::with_capacity(r.routes.len());
        let mut kept = vec![false; self.writers.len()];
        for route in r.routes {
            let existing =
                (0..self.writers.len()).find(|&i| self.live[i] && self.routes[i] == route.name);
            let Some(slot) = existing else {
                tracing::info!(route = %route.name, "A reload added this route.");
                let slot = self.writers.len();
                if replicated {
                    changes.push(RouteChange::Added {
                        slot,
                        name: route.name.clone(),
                        spec: route.spec.clone(),
                        start: Box::new(route.fallback.clone()),
                        watermark: route.watermark,
                    });
                }
                let writer = super::learning::route_writer(route.fallback);
                out.push((slot, writer.handle()));
                self.writers.push(writer);
                self.routes.push(route.name);
                self.specs.push(route.spec);
                self.dirty.push(true);
                self.live.push(true);
                continue;
            };
            kept[slot] = true;
            if self.specs[slot] == route.spec {
                out.push((slot, self.writers[slot].handle()));
                continue;
            }
            let state = self.writers[slot].state().clone();
            let snapshot = match state.reshape(&route.spec) {
                Ok(s) => {
                    tracing::info!(route = %route.name, "A reload changed this route; its learned state carries over.");
                    if replicated {
                        changes.push(RouteChange::Reshaped {
                            slot,
                            spec: route.spec.clone(),
                        });
                    }
                    s
                }
                Err(e) => {
                    tracing::warn!(route = %route.name, error = %e, "A reload changed this route so its learned state cannot carry over; it starts again.");
                    if replicated {
                        changes.push(RouteChange::Restarted {
                            slot,
                            spec: route.spec.clone(),
                            start: Box::new(route.fallback.clone()),
                            watermark: route.watermark,
                        });
                    }
                    route.fallback
                }
            };
            let writer = super::learning::route_writer(snapshot);
            out.push((slot, writer.handle()));
            self.writers[slot] = writer;
            self.specs[slot] = route.spec;
            self.dirty[slot] = true;
        }
        for (slot, kept) in kept.into_iter().enumerate() {
            if !kept && self.live[slot] {
                self.live[slot] = false;
                if replicated {
                    // The forced cut above shipped its last updates.
                    tracing::info!(route = %self.routes[slot], "A reload removed this route; its last updates were shipped.");
                    changes.push(RouteChange::Removed { slot });
                } else {
                    tracing::info!(route = %self.routes[slot], "A reload removed this route; its learned state is saved.");
                    self.dirty[slot] = true;
                }
            }
        }
        if let Some(t) = self.tracker.as_mut() {
            t.reshaped(&self.writers, changes);
        }
        if r.reply.send(out).is_err() {
            tracing::warn!("The reload that asked for new routes gave up waiting.");
        }
    }
}
