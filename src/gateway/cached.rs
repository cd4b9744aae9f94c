//! Answering from the response cache: the stored answer under this
//! request's id, as JSON or replayed as a stream, recorded as a cache hit
//! (zero cost) and never taught to the policy.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::cache::{as_chunks, Cached};
use super::options::RouterOptions;
use super::outcome::{Draft, Ending};
use super::pipeline::{ChatReply, Meta};
use super::receipt::Receipt;
use super::validate::Checked;
use super::Gateway;
use crate::providers::{frame_tree, Label};

#[expect(
    clippy::too_many_arguments,
    reason = "a draft is assembled from the request's parts"
)]
pub(super) fn draft(
    id: &str,
    started: Instant,
    checked: &Checked,
    options: RouterOptions,
    body: &Map<String, Value>,
    hit: &Cached,
    gw: &Gateway,
    key: Option<super::admission::KeyUse>,
) -> Draft {
    let model = gw.catalog.models[hit.model].name.as_str().to_owned();
    Draft {
        id: id.to_owned(),
        created_at: chrono::Utc::now(),
        started,
        requested_model: checked.requested.clone(),
        route: body.get("model").and_then(Value::as_str).map(str::to_owned),
        options,
        eligible_models: vec![model],
        policy_version: Some("cache".into()),
        propensity: None,
        features: None,
        decision: Some(Receipt::fixed(json!({"cache": "hit"}), String::new())),
        stream: checked.stream,
        chain: Vec::new(),
        messages: None,
        span: tracing::Span::current(),
        cache_hit: true,
        key,
        assignment: Default::default(),
    }
}

pub(super) fn serve(
    gw: &Arc<Gateway>,
    hit: &Cached,
    draft: Draft,
    meta: &mut Meta,
    checked: &Checked,
) -> ChatReply {
    let entry = &gw.catalog.models[hit.model];
    meta.model = Some(entry.name.as_str().to_owned());
    meta.policy_version = Some("cache".into());
    let body = hit.body.with_identity(&meta.request_id, None);
    draft.finish(
        Ending {
            model: Some(entry),
            usage: body.usage(),
            completion_text: "",
            ttft_ms: Some(0.0),
            status_code: 200,
            error_kind: None,
        },
        &gw.outbox,
    );
    if !checked.stream {
        return ChatReply::Complete(body);
    }
    let label = Label::new(&meta.request_id, entry.name.as_str());
    let mut frames: Vec<_> = as_chunks(&body.to_value())
        .into_iter()
        .map(|chunk| Ok(frame_tree(chunk, &label, false)))
        .collect();
    frames.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
    ChatReply::Stream(Box::pin(futures_util::stream::iter(frames)))
}
