//! HTTP glue for Anthropic's Messages API: translate, send, translate back.

use super::super::{Provider, Reply, UpstreamError, UpstreamRequest, FailureKind};

pub(crate) async fn call(_p: &Provider, _req: UpstreamRequest<'_>) -> Result<Reply, UpstreamError> {
    Err(UpstreamError::new(FailureKind::Protocol, "anthropic translation pending"))
}
