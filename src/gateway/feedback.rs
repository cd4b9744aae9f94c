//! Feedback on a past request: joined to its decision (recent decisions in
//! memory, else the stored row), queued for the database, and — for the
//! `quality` metric — taught to the route's policy.
//!
//! Online rule: the policy learns one quality per decision — a failure's
//! implicit 0, or else the first `quality` feedback. Every row is stored;
//! the batch retraining job combines several per request as "latest per
//! metric wins".

use std::sync::Arc;

use chrono::Utc;

use super::learning::Update;
use super::recent::DecisionMemo;
use super::Gateway;
use crate::bandit::Quality;
use crate::domain::{RequestId, Reward};
use crate::error::ApiError;
use crate::store::{Event, FeedbackRecord};
use crate::telemetry::names;

/// The metric that teaches the policy online.
pub const QUALITY_METRIC: &str = "quality";

pub struct FeedbackInput {
    pub request_id: RequestId,
    pub metric: String,
    pub value: Reward,
    pub source: Option<String>,
    pub comment: Option<String>,
    pub feedback_id: Option<String>,
}

pub async fn submit(gw: &Gateway, input: FeedbackInput) -> Result<(), ApiError> {
    let id = input.request_id.as_str();
    let memo = match gw.recall(id) {
        Some(m) => m,
        None => stored_memo(gw, id).await?.ok_or_else(|| {
            ApiError::not_found(
                "request_not_found",
                format!("No request with id `{id}` is known to this router."),
            )
            .with_param("request_id")
        })?,
    };
    metrics::counter!(names::FEEDBACK, "metric" => input.metric.clone()).increment(1);
    if input.metric == QUALITY_METRIC {
        teach(gw, id, &memo, input.value);
    }
    gw.outbox.send(Event::Feedback(FeedbackRecord {
        request_id: id.to_owned(),
        created_at: Utc::now(),
        metric: input.metric,
        value: input.value.get(),
        source: input.source,
        comment: input.comment,
        // Without the client's idempotency key, one of ours: a batch replayed
        // from the spill file must not store the same feedback twice.
        feedback_id: Some(
            input
                .feedback_id
                .unwrap_or_else(|| format!("auto-{}", uuid::Uuid::now_v7().simple())),
        ),
    }));
    Ok(())
}

fn teach(gw: &Gateway, id: &str, memo: &DecisionMemo, reward: Reward) {
    if memo.quality_taught {
        return;
    }
    let (Some(route), Some(model), Some(x)) = (memo.route, memo.model, memo.features.clone())
    else {
        return;
    };
    let Some(learner) = gw.learning.routes.get(route) else {
        return;
    };
    let Some(arm) = learner.arm_name(model) else {
        return;
    };
    gw.learning.send(Update::Quality {
        route: learner.slot,
        quality: Quality {
            arm: arm.clone(),
            x,
            reward,
        },
    });
    gw.recent.insert(
        id,
        DecisionMemo {
            quality_taught: true,
            ..memo.clone()
        },
    );
}

/// Rebuilds a decision's memo from the store (feedback after a restart or
/// after the in-memory table forgot it).
async fn stored_memo(gw: &Gateway, id: &str) -> Result<Option<Arc<DecisionMemo>>, ApiError> {
    let stored = gw.store.decision(id).await.map_err(|e| {
        tracing::error!(error = %e, "Looking up a request for feedback failed.");
        ApiError::unavailable(
            "store_unavailable",
            "The request could not be looked up right now; retry later.",
        )
    })?;
    Ok(stored.map(|d| {
        let memo = DecisionMemo {
            route: d.route.as_deref().and_then(|r| gw.catalog.route_index(r)),
            model: d
                .model
                .as_deref()
                .and_then(|m| gw.catalog.model(m))
                .map(|m| m.index),
            features: d.features.map(Into::into),
            quality_taught: d.status != "ok",
        };
        gw.recent.insert(id, memo.clone());
        Arc::new(memo)
    }))
}
