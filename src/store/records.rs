//! The rows the router writes: plain data, serialisable so that events can
//! spill to a file and be replayed byte-for-byte later.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One model tried while serving a request, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub model: String,
    /// `None` when this attempt answered; otherwise the error kind
    /// (`hedge_cancelled` / `ttft_deadline` for a hedge race's loser).
    pub error: Option<String>,
    pub status: Option<u16>,
    /// What this attempt probably cost although it did not give the answer:
    /// a stream broken mid-way and then continued elsewhere, or a hedge
    /// race's loser (its prompt). Included in the request's `cost_usd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// How long the attempt ran before it failed or was cancelled; for a
    /// cancelled one a lower bound of what it would have taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<f64>,
}

impl AttemptRecord {
    pub fn new(model: &str, error: Option<&str>, status: Option<u16>) -> Self {
        Self {
            model: model.to_owned(),
            error: error.map(str::to_owned),
            status,
            cost_usd: None,
            elapsed_ms: None,
        }
    }
}

/// A JSON document kept as its text: rendered once where it is made,
/// written to the store as is (no `serde_json::Value` in between), and
/// spilled to a file as the same JSON it stands for.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct JsonText(Box<serde_json::value::RawValue>);

impl<'de> Deserialize<'de> for JsonText {
    /// Through a `Value`: a spilled event is read via serde's buffered
    /// content (it sits in a tagged enum), which a `RawValue` cannot be
    /// read from.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Self::from)
    }
}

impl JsonText {
    pub fn of<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Self> {
        serde_json::value::to_raw_value(value).map(Self)
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl From<serde_json::Value> for JsonText {
    fn from(v: serde_json::Value) -> Self {
        // A `Value` always serialises (its map keys are strings).
        Self(
            serde_json::value::to_raw_value(&v)
                .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()),
        )
    }
}

/// A document handed over unrendered, rendered where it is written.
pub trait RenderJson: std::fmt::Debug + Send + Sync {
    /// `None` when it cannot be rendered (the column is then left empty).
    fn render(&self) -> Option<JsonText>;
}

/// A row's JSON column: text already, or rendered when the row is written.
/// Why: a decision receipt is ~21,000 instructions of float formatting per
/// bandit request; rendered by the outbox writer, on its own thread and
/// after the answer has gone, no client waits for it.
#[derive(Debug, Clone)]
pub enum LazyJson {
    Text(JsonText),
    Later(Arc<dyn RenderJson>),
}

impl LazyJson {
    pub fn later(doc: impl RenderJson + 'static) -> Self {
        Self::Later(Arc::new(doc))
    }

    /// The text, rendering it if it is not yet (each call renders anew:
    /// a batch is written once, and again only after a failed attempt).
    pub fn text(&self) -> Option<Cow<'_, JsonText>> {
        match self {
            Self::Text(t) => Some(Cow::Borrowed(t)),
            Self::Later(doc) => doc.render().map(Cow::Owned),
        }
    }
}

impl From<JsonText> for LazyJson {
    fn from(t: JsonText) -> Self {
        Self::Text(t)
    }
}

impl From<serde_json::Value> for LazyJson {
    fn from(v: serde_json::Value) -> Self {
        Self::Text(v.into())
    }
}

/// Two documents are equal when their texts are.
impl PartialEq for LazyJson {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

/// Spilled as the JSON it stands for (`null` if it cannot be rendered).
impl Serialize for LazyJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.text().serialize(s)
    }
}

/// Read back (from a spill file) as text.
impl<'de> Deserialize<'de> for LazyJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        JsonText::deserialize(d).map(Self::Text)
    }
}

/// Everything the router knows about one request once it has ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub api_key_id: Option<String>,
    pub tenant: Option<String>,
    pub route: Option<String>,
    pub tier: Option<String>,
    pub user_id: Option<String>,
    pub requested_model: String,
    /// The model that answered (or was last tried).
    pub model: Option<String>,
    pub provider: Option<String>,
    pub eligible_models: Vec<String>,
    pub policy_version: Option<String>,
    pub propensity: Option<f64>,
    pub features: Option<Vec<f64>>,
    /// The decision receipt: why this model.
    pub decision: Option<LazyJson>,
    pub stream: bool,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub tokens_counted_locally: bool,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub ok: bool,
    pub status_code: i32,
    pub error_kind: Option<String>,
    pub fallback_chain: Vec<AttemptRecord>,
    pub attempts: i32,
    pub cache_hit: bool,
    pub tags: Option<serde_json::Value>,
    /// Experiment assignment (absent in spill files written before it).
    #[serde(default, flatten)]
    pub assignment: Assignment,
}

/// Which experiment a request took part in, and how.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    #[serde(default)]
    pub experiment: Option<String>,
    /// `control`, `candidate`, `shadow` or `forced` (onboarding exploration).
    #[serde(default)]
    pub experiment_arm: Option<String>,
    /// A mirrored call no client saw.
    #[serde(default)]
    pub shadow: bool,
    /// For a shadow row, the request it mirrored.
    #[serde(default)]
    pub shadow_of: Option<String>,
    /// A shadow policy's view of this decision.
    #[serde(default)]
    pub counterfactual: Option<serde_json::Value>,
}

impl RequestRecord {
    pub fn status(&self) -> &'static str {
        if self.ok {
            "ok"
        } else {
            "error"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    pub request_id: String,
    pub created_at: DateTime<Utc>,
    pub metric: String,
    /// Already validated to [0, 1] at the edge.
    pub value: f64,
    pub source: Option<String>,
    pub comment: Option<String>,
    pub feedback_id: Option<String>,
}

/// What the outbox carries to the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Request(Box<RequestRecord>),
    Feedback(FeedbackRecord),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "event")]
    enum Tagged {
        Row { decision: JsonText },
    }

    #[test]
    fn json_text_spills_as_the_json_it_holds_and_reads_back_inside_a_tagged_enum() {
        let decision = JsonText::of(&json!({"chosen": "m", "arms": [{"p": 0.5}]})).unwrap();
        let line = serde_json::to_string(&Tagged::Row {
            decision: decision.clone(),
        })
        .unwrap();
        assert!(
            line.contains(r#""decision":{"arms":[{"p":0.5}],"chosen":"m"}"#),
            "{line}"
        );
        let back: Tagged = serde_json::from_str(&line).unwrap();
        assert_eq!(back, Tagged::Row { decision });
    }

    #[derive(Debug)]
    struct Doc(Option<serde_json::Value>);

    impl RenderJson for Doc {
        fn render(&self) -> Option<JsonText> {
            self.0.clone().map(JsonText::from)
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Lazy {
        decision: Option<LazyJson>,
    }

    #[test]
    fn a_document_rendered_late_spills_as_its_text_and_reads_back_equal() {
        let late = Lazy {
            decision: Some(LazyJson::later(Doc(Some(json!({"chosen": "m"}))))),
        };
        let line = serde_json::to_string(&late).unwrap();
        assert_eq!(line, r#"{"decision":{"chosen":"m"}}"#);
        let back: Lazy = serde_json::from_str(&line).unwrap();
        assert!(matches!(back.decision, Some(LazyJson::Text(_))));
        assert_eq!(back, late, "equal by their texts");
        assert_ne!(
            back,
            Lazy {
                decision: Some(json!({"chosen": "n"}).into())
            }
        );
    }

    #[test]
    fn a_document_that_cannot_render_is_written_empty() {
        let broken = Lazy {
            decision: Some(LazyJson::later(Doc(None))),
        };
        assert!(broken.decision.as_ref().unwrap().text().is_none());
        assert_eq!(
            serde_json::to_string(&broken).unwrap(),
            r#"{"decision":null}"#
        );
        let back: Lazy = serde_json::from_str(r#"{"decision":null}"#).unwrap();
        assert_eq!(back.decision, None);
    }
}
