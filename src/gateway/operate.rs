//! Operator actions on a running router (the admin API calls these):
//! disable or enable a model, onboard or retire a model on a route
//! (experiments: `experiment_ops.rs`). Each is checked against the serving
//! catalog, written to the store (so it survives a reload and a restart and
//! reaches every replica), then applied here at once (`refresh_control`).

use chrono::Utc;

use super::control::ControlError;
use super::live::Live;
use crate::experiments::{ArmState, OnboardConfig};
use crate::store::control::ArmRow;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    NotFound(String),
    /// (message, the offending field)
    #[error("{0}")]
    Invalid(String, &'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

fn window(w: u64) -> Option<i64> {
    Some(i64::try_from(w).unwrap_or(i64::MAX))
}

impl Live {
    pub async fn set_disabled(
        &self,
        model: &str,
        disabled: bool,
        reason: Option<&str>,
    ) -> Result<(), OpError> {
        let gw = self.current();
        if gw.catalog.model(model).is_none() {
            return Err(OpError::NotFound(format!(
                "No model `{model}` is configured."
            )));
        }
        gw.store.set_model_disabled(model, disabled, reason).await?;
        self.refresh_control().await?;
        Ok(())
    }

    /// Adds `model` to `route` (or gives an arm already there its
    /// onboarding prior and quota).
    pub async fn onboard(&self, route: &str, model: &str, o: OnboardConfig) -> Result<(), OpError> {
        let gw = self.current();
        self.route_and_model(route, model)?;
        if let Some(q) = o.prior_quality {
            if !(0.0..=1.0).contains(&q) {
                return Err(OpError::Invalid(
                    format!("`prior_quality` {q} must be in [0, 1]"),
                    "prior_quality",
                ));
            }
        }
        if !(0.0..=1.0).contains(&o.explore_share) {
            return Err(OpError::Invalid(
                format!("`explore_share` {} must be in [0, 1]", o.explore_share),
                "explore_share",
            ));
        }
        let now = Utc::now();
        gw.store
            .upsert_arm(&ArmRow {
                route: route.to_owned(),
                model: model.to_owned(),
                state: ArmState::Added.as_str().into(),
                prior_quality: o.prior_quality,
                explore_quota: Some(i64::try_from(o.explore_quota).unwrap_or(i64::MAX)),
                explore_share: Some(o.explore_share),
                window_s: None,
                started_at: now,
                updated_at: now,
            })
            .await?;
        self.refresh_control().await?;
        Ok(())
    }

    /// Anneals `model`'s share on `route` to zero over `window_s`, then
    /// takes it out of the route.
    pub async fn retire(&self, route: &str, model: &str, window_s: u64) -> Result<(), OpError> {
        let gw = self.current();
        let r = self.route_and_model(route, model)?;
        let arms = &gw.effective.routes[r].models;
        if !arms.iter().any(|m| m.as_str() == model) {
            return Err(OpError::NotFound(format!(
                "`{model}` is not a model of route `{route}`."
            )));
        }
        let retiring = &gw.effective.routes[r].retire;
        let staying = arms
            .iter()
            .filter(|m| m.as_str() != model && !retiring.contains_key(*m))
            .count();
        if staying == 0 {
            return Err(OpError::Conflict(format!(
                "Retiring `{model}` would leave route `{route}` without a model."
            )));
        }
        let now = Utc::now();
        gw.store
            .upsert_arm(&ArmRow {
                route: route.to_owned(),
                model: model.to_owned(),
                state: ArmState::Retiring.as_str().into(),
                prior_quality: None,
                explore_quota: None,
                explore_share: None,
                window_s: window(window_s),
                started_at: now,
                updated_at: now,
            })
            .await?;
        self.refresh_control().await?;
        Ok(())
    }

    /// Forgets the stored change of `model` on `route` (the file rules again).
    pub async fn restore_arm(&self, route: &str, model: &str) -> Result<(), OpError> {
        let gw = self.current();
        if gw.plan.load().control.arm(route, model).is_none() {
            return Err(OpError::NotFound(format!(
                "No stored change of `{model}` on route `{route}`."
            )));
        }
        gw.store.delete_arm(route, model).await?;
        self.refresh_control().await?;
        Ok(())
    }

    /// The route's index in the serving catalog, checking both names.
    fn route_and_model(&self, route: &str, model: &str) -> Result<usize, OpError> {
        let gw = self.current();
        let r = gw
            .catalog
            .route_index(route)
            .ok_or_else(|| OpError::NotFound(format!("No route `{route}`.")))?;
        if gw.catalog.model(model).is_none() {
            return Err(OpError::NotFound(format!(
                "No model `{model}` is configured."
            )));
        }
        Ok(r)
    }
}
