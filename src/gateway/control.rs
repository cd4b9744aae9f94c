//! Applying the live controls (experiments, disabled models, arm changes)
//! to the running gateway, and following changes made elsewhere.
//!
//! Every change goes to the store first (so it survives a reload and a
//! restart, and other replicas see it), then `Live::refresh_control`
//! re-reads the control tables and applies them under the reload lock: a
//! change that leaves every route's arm set as it is swaps in a new `Plan`
//! for the current gateway; one that adds or removes an arm builds a new
//! gateway generation, exactly like a reload. Replicas follow through
//! `LISTEN switchboard_control` (Postgres) and polling; the same task ends
//! retirements whose window has run out and runs the automatic promotion
//! and rollback of policy candidates (`rollout.rs`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use super::live::Live;
use super::plan::Plan;
use super::GatewayBuildError;
use crate::config::Config;
use crate::experiments::{ArmState, Control};
use crate::store::control::{ArmRow, ControlRows, ExperimentRow, CONTROL_CHANNEL};
use crate::store::{Store, StoreError};

const POLL_SQLITE: Duration = Duration::from_secs(2);
const POLL_POSTGRES: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Build(#[from] GatewayBuildError),
}

/// Records the file's experiments and retirements the first time they are
/// seen (so their status and start time persist), then reads every
/// control row.
pub async fn load_rows(store: &Store, config: &Config) -> Result<ControlRows, StoreError> {
    let now = Utc::now();
    for e in &config.experiments {
        store
            .register_config_experiment(&ExperimentRow {
                name: e.name.clone(),
                route: e.route.as_str().to_owned(),
                kind: e.kind.as_str().to_owned(),
                candidate: e.candidate.clone(),
                share: e.share,
                sticky_by: e.sticky_by.map(|_| "user".to_owned()),
                status: "running".into(),
                source: "config".into(),
                params: None,
                note: None,
                created_at: now,
                updated_at: now,
            })
            .await?;
    }
    let rows = store.load_control().await?;
    let mut changed = false;
    for r in &config.routes {
        for (model, retire) in &r.retire {
            let known = rows
                .arms
                .iter()
                .find(|a| a.route == r.name.as_str() && a.model == model.as_str());
            if known.is_some_and(|a| a.state != "added") {
                continue;
            }
            store
                .upsert_arm(&ArmRow {
                    route: r.name.as_str().to_owned(),
                    model: model.as_str().to_owned(),
                    state: ArmState::Retiring.as_str().into(),
                    prior_quality: None,
                    explore_quota: None,
                    explore_share: None,
                    window_s: Some(i64::try_from(retire.window_s).unwrap_or(i64::MAX)),
                    started_at: now,
                    updated_at: now,
                })
                .await?;
            changed = true;
        }
    }
    if changed {
        return store.load_control().await;
    }
    Ok(rows)
}

impl Live {
    /// Re-reads the control tables and applies what changed. Returns
    /// whether anything did.
    pub async fn refresh_control(&self) -> Result<bool, ControlError> {
        let _one_at_a_time = self.lock().await;
        let gw = self.current();
        let rows = gw.store.load_control().await?;
        let control = Control::from_rows(&rows, &gw.config);
        let plan = gw.plan.load_full();
        if *plan.control == control {
            return Ok(false);
        }
        let control = Arc::new(control);
        let rows = Arc::new(rows);
        let effective = control.effective(&gw.config);
        if same(&effective, &gw.effective) {
            let plan = Plan::build(&gw, control, rows).await;
            gw.plan.store(Arc::new(plan));
            tracing::info!("Live controls changed; the new plan is in force.");
        } else {
            let next = gw
                .next((*gw.config).clone(), control, rows, self.env())
                .await?;
            tracing::info!(
                generation = next.generation,
                "An arm change rebuilt the routes."
            );
            self.swap(next);
        }
        Ok(true)
    }

    /// Marks retirements whose window has run out as finished (the arm
    /// leaves the route at the next refresh).
    async fn finish_retirements(&self) -> Result<bool, StoreError> {
        let gw = self.current();
        let control = gw.plan.load().control.clone();
        let now = Utc::now();
        let mut any = false;
        for a in control
            .arms
            .iter()
            .filter(|a| a.state == ArmState::Retiring)
        {
            let ends = a.started_at
                + chrono::Duration::seconds(
                    i64::try_from(a.window_s.unwrap_or(0)).unwrap_or(i64::MAX),
                );
            if ends <= now {
                gw.store
                    .upsert_arm(&ArmRow {
                        route: a.route.clone(),
                        model: a.model.clone(),
                        state: ArmState::Retired.as_str().into(),
                        prior_quality: None,
                        explore_quota: None,
                        explore_share: None,
                        window_s: a.window_s.map(|w| i64::try_from(w).unwrap_or(i64::MAX)),
                        started_at: a.started_at,
                        updated_at: now,
                    })
                    .await?;
                tracing::info!(route = %a.route, model = %a.model, "Retirement finished; the model leaves the route.");
                any = true;
            }
        }
        Ok(any)
    }
}

fn same(a: &Config, b: &Config) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Follows control changes until shutdown.
pub async fn run(live: Arc<Live>, mut shutdown: watch::Receiver<bool>) {
    let store = live.current().store.clone();
    let mut listener = match &store {
        Store::Postgres(pool) => match sqlx::postgres::PgListener::connect_with(pool).await {
            Ok(mut l) => match l.listen(CONTROL_CHANNEL).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN failed; polling for control changes.");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "No listener connection; polling for control changes.");
                None
            }
        },
        Store::Sqlite(_) => None,
    };
    let mut poll = tokio::time::interval(if listener.is_some() {
        POLL_POSTGRES
    } else {
        POLL_SQLITE
    });
    // Retirements run on their own clock: a busy channel must not starve
    // them. The check is in memory; the store is written only when one ends.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut evaluate = tokio::time::interval(super::rollout::EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    evaluate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let refresh = tokio::select! {
            _ = shutdown.changed() => return,
            _ = evaluate.tick() => {
                super::rollout::evaluate(&live).await;
                false
            }
            _ = poll.tick() => true,
            _ = tick.tick() => match live.finish_retirements().await {
                Ok(any) => any,
                Err(e) => {
                    tracing::warn!(error = %e, "Finishing retirements failed; will retry.");
                    false
                }
            },
            n = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            } => {
                if let Err(e) = n {
                    tracing::warn!(error = %e, "The control listener failed; it reconnects.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                true
            }
        };
        if refresh {
            if let Err(e) = live.refresh_control().await {
                tracing::warn!(error = %e, "Applying control changes failed; will retry.");
            }
        }
    }
}
