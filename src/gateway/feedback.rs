//! Feedback on a past request: checked against the recent decisions (then
//! the store), queued for the database, and handed to the policy.

use chrono::Utc;

use super::Gateway;
use crate::domain::{RequestId, Reward};
use crate::error::ApiError;
use crate::store::{Event, FeedbackRecord};
use crate::telemetry::names;

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
    let known = match gw.recent.get(id) {
        Some(_) => true,
        None => gw.store.request_exists(id).await.map_err(|e| {
            tracing::error!(error = %e, "Looking up a request for feedback failed.");
            ApiError::unavailable(
                "store_unavailable",
                "The request could not be looked up right now; retry later.",
            )
        })?,
    };
    if !known {
        return Err(ApiError::not_found(
            "request_not_found",
            format!("No request with id `{id}` is known to this router."),
        )
        .with_param("request_id"));
    }
    metrics::counter!(names::FEEDBACK, "metric" => input.metric.clone()).increment(1);
    gw.outbox.send(Event::Feedback(FeedbackRecord {
        request_id: id.to_owned(),
        created_at: Utc::now(),
        metric: input.metric,
        value: input.value.get(),
        source: input.source,
        comment: input.comment,
        feedback_id: input.feedback_id,
    }));
    Ok(())
}
