//! The router's per-request options — the `switchboard` body object or the
//! `x-switchboard-*` headers (the body wins) — and what the request needs
//! from a model (tools, JSON schema, images, context length).

use std::collections::BTreeMap;

use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::Capability;
use crate::error::ApiError;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterOptions {
    pub max_cost_usd: Option<f64>,
    pub tier: Option<String>,
    pub user: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub exclude_models: Vec<String>,
    /// The authenticated client key, set by admission — never by the
    /// request (`deny_unknown_fields` refuses a `key` in the body).
    #[serde(skip)]
    pub key: Option<std::sync::Arc<crate::store::keys::KeyRecord>>,
}

impl RouterOptions {
    /// What `[[rules]]` look at in this request.
    pub fn rule_context<'a>(&'a self, needs: &'a Needs) -> super::rules::RuleContext<'a> {
        let key = self.key.as_deref();
        super::rules::RuleContext {
            key_id: key.map(|k| k.id.as_str()),
            key_name: key.and_then(|k| k.name.as_deref()),
            tenant: key.and_then(|k| k.tenant.as_deref()),
            flags: key.map_or(&[], |k| k.flags.as_slice()),
            tier: self.tier.as_deref(),
            tags: Some(&self.tags),
            prompt_tokens: needs.prompt_tokens_estimate,
            needs: &needs.capabilities,
        }
    }

    /// Whether the client key carries `flag`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.key
            .as_deref()
            .is_some_and(|k| k.flags.iter().any(|f| f == flag))
    }

    /// Takes the `switchboard` object out of `body` (so it never reaches an
    /// upstream) and merges it over the headers.
    pub fn extract(body: &mut Map<String, Value>, headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut opts = from_headers(headers)?;
        if let Some(v) = body.remove("switchboard") {
            let from_body: RouterOptions = serde_json::from_value(v).map_err(|e| {
                ApiError::bad_request("invalid_switchboard_options", format!("`switchboard`: {e}"))
                    .with_param("switchboard")
            })?;
            opts.max_cost_usd = from_body.max_cost_usd.or(opts.max_cost_usd);
            opts.tier = from_body.tier.or(opts.tier);
            opts.user = from_body.user.or(opts.user);
            opts.tags.extend(from_body.tags);
            opts.exclude_models.extend(from_body.exclude_models);
        }
        if let Some(c) = opts.max_cost_usd {
            if !c.is_finite() || c <= 0.0 {
                return Err(ApiError::bad_request(
                    "invalid_switchboard_options",
                    format!("`switchboard.max_cost_usd` must be a positive number, got {c}"),
                )
                .with_param("switchboard.max_cost_usd"));
            }
        }
        Ok(opts)
    }
}

fn from_headers(headers: &HeaderMap) -> Result<RouterOptions, ApiError> {
    // Most requests carry none: one pass over the names (stored lower-case)
    // instead of five lookups that each parse and hash a name.
    if !headers
        .keys()
        .any(|k| k.as_str().starts_with("x-switchboard-"))
    {
        return Ok(RouterOptions::default());
    }
    let get = |name: &str| -> Result<Option<String>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v.to_str().map(|s| Some(s.trim().to_owned())).map_err(|_| {
                ApiError::bad_request(
                    "invalid_header",
                    format!("header `{name}` is not valid text"),
                )
            }),
        }
    };
    let max_cost_usd = match get("x-switchboard-max-cost-usd")? {
        None => None,
        Some(s) => Some(s.parse::<f64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_header",
                format!("header `x-switchboard-max-cost-usd` must be a number, got {s:?}"),
            )
        })?),
    };
    let exclude_models = get("x-switchboard-exclude-models")?
        .map(|s| split_list(&s).map(str::to_owned).collect())
        .unwrap_or_default();
    let mut tags = BTreeMap::new();
    if let Some(s) = get("x-switchboard-tags")? {
        for pair in split_list(&s) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_header",
                    "header `x-switchboard-tags` must look like `team=search,env=prod`",
                )
            })?;
            tags.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    Ok(RouterOptions {
        max_cost_usd,
        tier: get("x-switchboard-tier")?,
        user: get("x-switchboard-user")?,
        tags,
        exclude_models,
        key: None,
    })
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

/// What a request asks of the model that will answer it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    pub capabilities: Vec<Capability>,
    /// A rough upper estimate of prompt tokens (bytes / 3), for context windows.
    pub prompt_tokens_estimate: u32,
}

impl Needs {
    pub fn of(body: &Map<String, Value>) -> Self {
        let mut capabilities = Vec::new();
        if body
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty())
        {
            capabilities.push(Capability::Tools);
        }
        if body
            .get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
            == Some("json_schema")
        {
            capabilities.push(Capability::JsonSchema);
        }
        let mut text_bytes = 0usize;
        let mut images = false;
        if let Some(Value::Array(messages)) = body.get("messages") {
            for m in messages {
                match m.get("content") {
                    Some(Value::String(s)) => text_bytes += s.len(),
                    Some(Value::Array(parts)) => {
                        for p in parts {
                            match p.get("type").and_then(Value::as_str) {
                                Some("image_url") | Some("input_image") => images = true,
                                _ => {
                                    if let Some(Value::String(t)) = p.get("text") {
                                        text_bytes += t.len();
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if images {
            capabilities.push(Capability::Vision);
        }
        Self {
            capabilities,
            prompt_tokens_estimate: u32::try_from(text_bytes / 3).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_object_is_stripped_and_wins_over_headers() {
        let mut body =
            json!({"model": "auto", "switchboard": {"tier": "premium", "exclude_models": ["a"]}})
                .as_object()
                .cloned()
                .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-switchboard-tier", "free".parse().unwrap());
        headers.insert("x-switchboard-exclude-models", "b, c".parse().unwrap());
        let o = RouterOptions::extract(&mut body, &headers).unwrap();
        assert!(!body.contains_key("switchboard"));
        assert_eq!(o.tier.as_deref(), Some("premium"));
        assert_eq!(o.exclude_models, vec!["b", "c", "a"]);
    }

    #[test]
    fn unknown_option_is_a_clear_400() {
        let mut body = json!({"switchboard": {"teir": "x"}})
            .as_object()
            .cloned()
            .unwrap();
        let e = RouterOptions::extract(&mut body, &HeaderMap::new()).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert!(e.message.contains("teir"), "{}", e.message);
    }

    #[test]
    fn needs_detects_tools_schema_and_images() {
        let body = json!({
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_schema", "json_schema": {}},
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]
        });
        let n = Needs::of(body.as_object().unwrap());
        assert_eq!(
            n.capabilities,
            vec![
                Capability::Tools,
                Capability::JsonSchema,
                Capability::Vision
            ]
        );
    }
}
