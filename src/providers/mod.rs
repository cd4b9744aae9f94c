//! Upstream adapters. The gateway hands a provider an OpenAI-shaped body and
//! gets back an OpenAI-shaped answer (a whole completion or a stream of
//! chunks), whatever the provider speaks on the wire.
//!
//! Knows nothing of routing, policies or the store. Keys are held as
//! `SecretString` and never logged, stored or returned.

pub mod anthropic;
pub mod error_kind;
mod failure;
pub mod openai;
pub mod pricing;
pub mod sse;
pub mod tokens;
pub mod usage;

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

pub use failure::{FailureKind, UpstreamError};
pub use usage::Usage;

use crate::config::{Env, ProviderConfig, ProviderKind};

/// One chunk of a streamed answer, already in OpenAI's `chat.completion.chunk` shape.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Value, UpstreamError>> + Send>>;

/// What an upstream returned, translated to OpenAI's shapes.
pub enum Reply {
    Complete { body: Value, usage: Option<Usage> },
    Stream(ChunkStream),
}

/// A request for one upstream: the client's body minus router-only fields.
pub struct UpstreamRequest<'a> {
    pub body: &'a Map<String, Value>,
    pub upstream_model: &'a str,
    pub stream: bool,
}

/// A configured provider with its pooled HTTP client.
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    base_url: String,
    key: Option<SecretString>,
    http: reqwest::Client,
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
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .read_timeout(Duration::from_millis(cfg.read_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ProviderSetupError::Client {
                provider: cfg.name.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            name: cfg.name.clone(),
            kind: cfg.kind,
            base_url: cfg.base_url.trim_end_matches('/').to_owned(),
            key,
            http,
            default_max_tokens: cfg.default_max_tokens,
        })
    }

    /// Sends one attempt. Retries, deadlines and fallbacks belong to the gateway.
    pub async fn call(&self, req: UpstreamRequest<'_>) -> Result<Reply, UpstreamError> {
        match self.kind {
            ProviderKind::Openai => openai::call(self, req).await,
            ProviderKind::Anthropic => anthropic::client::call(self, req).await,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
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

/// Reads an error body, bounded so a misbehaving upstream cannot exhaust memory.
async fn read_error_body(resp: reqwest::Response) -> Vec<u8> {
    const LIMIT: usize = 64 * 1024;
    let mut out = Vec::new();
    let mut resp = resp;
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = LIMIT.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= LIMIT {
            break;
        }
    }
    out
}
