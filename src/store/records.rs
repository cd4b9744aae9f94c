//! The rows the router writes: plain data, serialisable so that events can
//! spill to a file and be replayed byte-for-byte later.

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
    pub decision: Option<JsonText>,
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
}
