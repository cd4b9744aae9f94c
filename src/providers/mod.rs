//! Upstream adapters. The gateway hands a provider an OpenAI-shaped body and
//! gets back an OpenAI-shaped answer (a whole completion or a stream of
//! chunks), whatever the provider speaks on the wire.
//!
//! Knows nothing of routing, policies or the store. Keys are held as
//! `SecretString` and never logged, stored or returned: they travel only in
//! request headers marked sensitive, and every error message leaving
//! `Provider::call` is scrubbed of them (`redact`).

pub mod anthropic;
mod chunk;
mod completion;
pub mod error_kind;
mod failure;
mod members;
pub mod openai;
pub mod pricing;
pub mod redact;
pub mod sse;
pub mod tokens;
mod transport;
pub mod usage;

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

pub use chunk::{frame_tree, BadChunk, Choice, Chunk, Label};
pub use completion::Completion;
pub use failure::{FailureKind, UpstreamError};
pub use usage::Usage;

use crate::config::{Env, ProviderConfig, ProviderKind};
use transport::{Target, Timeouts, Transport};

/// One chunk of a streamed answer, already in OpenAI's `chat.completion.chunk` shape.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, UpstreamError>> + Send>>;

/// What an upstream returned, translated to OpenAI's shapes.
pub enum Reply {
    Complete {
        body: Completion,
        usage: Option<Usage>,
    },
    Stream(ChunkStream),
}

/// A request for one upstream: the client's body minus router-only fields.
pub struct UpstreamRequest<'a> {
    pub body: ClientBody<'a>,
    pub upstream_model: &'a str,
    pub stream: bool,
}

/// The client's body as the gateway read it: the tree, less the router's
/// own `switchboard` member, and the text it was read from when that is at
/// hand and the tree has not been changed since but for that member (an
/// OpenAI-compatible upstream is then sent the client's own bytes).
#[derive(Clone, Copy, Debug)]
pub struct ClientBody<'a> {
    pub tree: &'a Map<String, Value>,
    pub text: Option<&'a [u8]>,
}

impl<'a> ClientBody<'a> {
    /// A body the gateway built or changed itself: no text of it to send.
    pub fn tree(tree: &'a Map<String, Value>) -> Self {
        Self { tree, text: None }
    }
}

/// A configured provider with its pooled HTTP client.
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    base_url: String,
    /// The one endpoint this kind of provider posts to, parsed once: a URL
    /// given as a string is parsed on every request (~7,000 instructions).
    endpoint: Option<(&'static str, Target)>,
    /// Shared with each stream's error scrubber (an `Arc` clone, no copy of the key).
    key: Option<std::sync::Arc<SecretString>>,
    http: Transport,
    default_max_tokens: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderSetupError {
    #[error("provider {provider}: cannot read the key file {file}: {reason}")]
    KeyFile {
        provider: String,
        file: String,
        reason: String,
    },
    #[error("provider {provider}: cannot build an HTTP client: {reason}")]
    Client { provider: String, reason: String },
}

impl Provider {
    pub fn new(cfg: &ProviderConfig, env: &Env) -> Result<Self, ProviderSetupError> {
        let key = resolve_key(cfg, env)?;
        let base_url = cfg.base_url.trim_end_matches('/').to_owned();
        let timeouts = Timeouts {
            connect: Duration::from_millis(cfg.connect_timeout_ms),
            read: Duration::from_millis(cfg.read_timeout_ms),
        };
        let http = Transport::for_base_url(&base_url, timeouts, env).map_err(|e| {
            ProviderSetupError::Client {
                provider: cfg.name.clone(),
                reason: e.to_string(),
            }
        })?;
        let path = match cfg.kind {
            ProviderKind::Openai => openai::CHAT_PATH,
            ProviderKind::Anthropic => anthropic::client::MESSAGES_PATH,
        };
        // Unparsable: left to fail on each request (config validation
        // rejects such a base_url before it gets here).
        let endpoint = Target::parse(&format!("{base_url}{path}"))
            .ok()
            .map(|u| (path, u));
        Ok(Self {
            name: cfg.name.clone(),
            kind: cfg.kind,
            base_url,
            endpoint,
            key: key.map(std::sync::Arc::new),
            http,
            default_max_tokens: cfg.default_max_tokens,
        })
    }

    /// Sends one attempt. Retries, deadlines and fallbacks belong to the gateway.
    /// Errors, including those in the middle of a stream, come out scrubbed of keys.
    pub async fn call(&self, req: UpstreamRequest<'_>) -> Result<Reply, UpstreamError> {
        let reply = match self.kind {
            ProviderKind::Openai => openai::call(self, req).await,
            ProviderKind::Anthropic => anthropic::client::call(self, req).await,
        };
        match reply {
            Err(e) => Err(self.scrubbed(e)),
            Ok(Reply::Stream(chunks)) => {
                let key = self.key.clone();
                Ok(Reply::Stream(Box::pin(chunks.map(move |item| {
                    item.map_err(|e| scrub_error(e, key.as_ref().map(|k| k.expose_secret())))
                }))))
            }
            Ok(complete) => Ok(complete),
        }
    }

    fn scrubbed(&self, e: UpstreamError) -> UpstreamError {
        scrub_error(e, self.key())
    }

    /// An error response's body, bounded and scrubbed of keys before anyone
    /// parses, truncates or logs it.
    async fn error_body(&self, resp: transport::Response) -> Vec<u8> {
        redact::scrub_bytes(read_error_body(resp).await, self.key())
    }

    /// POSTs `body` as JSON to `path` under the base URL, with `headers`.
    async fn post_json(
        &self,
        path: &str,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: Vec<u8>,
    ) -> Result<transport::Response, UpstreamError> {
        let parsed;
        let target = match &self.endpoint {
            Some((p, target)) if *p == path => target,
            _ => {
                parsed = Target::parse(&format!("{}{}", self.base_url, path))
                    .map_err(|e| UpstreamError::new(FailureKind::Connect, e))?;
                &parsed
            }
        };
        self.http.post_json(target, headers, body).await
    }

    /// `body` as JSON text, for `post_json`.
    fn json_body(body: &impl serde::Serialize) -> Result<Vec<u8>, UpstreamError> {
        serde_json::to_vec(body)
            .map_err(|e| UpstreamError::new(FailureKind::InvalidRequest, e.to_string()))
    }

    /// A header holding a secret, marked sensitive so no Debug of the
    /// request (the clients', at trace level) prints it.
    fn secret_header(
        name: http::HeaderName,
        value: &str,
    ) -> Result<(http::HeaderName, http::HeaderValue), UpstreamError> {
        let mut v = http::HeaderValue::from_str(value).map_err(|_| {
            UpstreamError::new(
                FailureKind::Auth,
                "the provider key is not a valid HTTP header value",
            )
        })?;
        v.set_sensitive(true);
        Ok((name, v))
    }

    fn key(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.expose_secret())
    }
}

fn resolve_key(
    cfg: &ProviderConfig,
    env: &Env,
) -> Result<Option<SecretString>, ProviderSetupError> {
    if let Some(var) = &cfg.api_key_env {
        if let Some(v) = env.get(var).filter(|v| !v.is_empty()) {
            return Ok(Some(SecretString::from(v.trim().to_owned())));
        }
    }
    if let Some(file) = &cfg.api_key_file {
        let text = std::fs::read_to_string(file).map_err(|e| ProviderSetupError::KeyFile {
            provider: cfg.name.clone(),
            file: file.clone(),
            reason: e.to_string(),
        })?;
        return Ok(Some(SecretString::from(text.trim().to_owned())));
    }
    Ok(None)
}

fn scrub_error(mut e: UpstreamError, key: Option<&str>) -> UpstreamError {
    if let std::borrow::Cow::Owned(clean) = redact::scrub(&e.message, key) {
        e.message = clean;
    }
    e
}

/// Reads an error body, bounded so a misbehaving upstream cannot exhaust memory.
async fn read_error_body(mut resp: transport::Response) -> Vec<u8> {
    const LIMIT: usize = 64 * 1024;
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = LIMIT.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= LIMIT {
            break;
        }
    }
    out
}
