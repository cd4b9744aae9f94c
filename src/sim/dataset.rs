//! The routing dataset embedded in the binary (`data/routing-val.jsonl` and
//! `data/routing-val-models.json`): every prompt with each model's reward and
//! cost, and the models' prices. The simulated upstream, the traffic
//! generator and the demo all read it from here, so the demo needs no files.

use std::collections::HashMap;

use serde::Deserialize;

/// `data/routing-val.jsonl`, one JSON object per prompt.
pub const ROUTING_VAL_JSONL: &str = include_str!("../../data/routing-val.jsonl");
/// `data/routing-val-models.json`: prices and context windows of the arms.
pub const ROUTING_VAL_MODELS_JSON: &str = include_str!("../../data/routing-val-models.json");

/// What one model would have produced on one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct ArmOutcome {
    /// Quality score in [0, 1].
    pub reward: f64,
    /// USD cost of the answer at list price.
    pub cost: f64,
}

/// One prompt and what each model did on it.
#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    pub prompt: String,
    #[serde(default)]
    pub source: String,
    /// Keyed by the model id (`meta-llama/llama-3.1-8b-instruct`, ...).
    pub arms: HashMap<String, ArmOutcome>,
}

/// One model of the dataset with its list prices.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelSpec {
    /// The dataset's arm id, used as the upstream model name.
    pub model_id: String,
    #[serde(default)]
    pub display: String,
    pub input_cost_per_m: f64,
    pub output_cost_per_m: f64,
    pub context_length: u32,
    /// `fast`, `balanced` or `slow`.
    #[serde(default)]
    pub speed_profile: String,
}

impl ModelSpec {
    /// The router-facing name: the arm id without its vendor prefix
    /// (`meta-llama/llama-3.1-8b-instruct` -> `llama-3.1-8b-instruct`).
    pub fn short_name(&self) -> &str {
        self.model_id.rsplit('/').next().unwrap_or(&self.model_id)
    }

    /// USD cost of `prompt_tokens` in and `completion_tokens` out.
    pub fn cost_usd(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input_cost_per_m
            + completion_tokens as f64 * self.output_cost_per_m)
            / 1_000_000.0
    }
}

#[derive(Deserialize)]
struct ModelsFile {
    models: Vec<ModelSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("routing dataset line {line}: {reason}")]
    Row { line: usize, reason: String },
    #[error("routing dataset models: {0}")]
    Models(String),
}

/// The parsed dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub rows: Vec<Row>,
    pub models: Vec<ModelSpec>,
    by_prompt: HashMap<String, usize>,
}

impl Dataset {
    /// The copy compiled into the binary.
    pub fn embedded() -> Result<Self, DatasetError> {
        Self::parse(ROUTING_VAL_JSONL, ROUTING_VAL_MODELS_JSON)
    }

    /// Parses a JSONL prompt file and a models file; every row must carry an
    /// outcome for every model, with finite, non-negative numbers.
    pub fn parse(jsonl: &str, models_json: &str) -> Result<Self, DatasetError> {
        let models = serde_json::from_str::<ModelsFile>(models_json)
            .map_err(|e| DatasetError::Models(e.to_string()))?
            .models;
        if models.is_empty() {
            return Err(DatasetError::Models("no models".into()));
        }
        let mut rows = Vec::new();
        let mut by_prompt = HashMap::new();
        for (i, line) in jsonl.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| DatasetError::Row {
                line: i + 1,
                reason,
            };
            let row: Row = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            for m in &models {
                match row.arms.get(&m.model_id) {
                    Some(a) if a.reward.is_finite() && a.cost.is_finite() && a.cost >= 0.0 => {}
                    Some(_) => return Err(bad(format!("bad numbers for {}", m.model_id))),
                    None => return Err(bad(format!("no outcome for {}", m.model_id))),
                }
            }
            by_prompt.entry(row.prompt.clone()).or_insert(rows.len());
            rows.push(row);
        }
        Ok(Self {
            rows,
            models,
            by_prompt,
        })
    }

    /// The row whose prompt is exactly `prompt`.
    pub fn find(&self, prompt: &str) -> Option<&Row> {
        self.by_prompt.get(prompt).map(|&i| &self.rows[i])
    }

    /// Index of the model with this arm id or short name.
    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.models
            .iter()
            .position(|m| m.model_id == name || m.short_name() == name)
    }
}

/// Prompt tokens as the simulation counts them: about four characters each.
pub fn prompt_tokens(prompt: &str) -> u64 {
    (prompt.chars().count() as u64).div_ceil(4).max(1)
}

/// Token counts whose cost at `model`'s prices reproduces `cost` (to within
/// one token's price): prompt tokens from the prompt's length, completion
/// tokens from what is left. When the prompt alone would cost more than
/// `cost`, the prompt count is lowered to fit.
pub fn tokens_for_cost(model: &ModelSpec, prompt: &str, cost: f64) -> (u64, u64) {
    let budget = (cost * 1_000_000.0).max(0.0);
    let mut pt = prompt_tokens(prompt);
    if model.input_cost_per_m > 0.0 && pt as f64 * model.input_cost_per_m > budget {
        pt = (budget / model.input_cost_per_m).floor() as u64;
    }
    let left = budget - pt as f64 * model.input_cost_per_m;
    let ct = if model.output_cost_per_m > 0.0 {
        (left / model.output_cost_per_m).round().max(0.0) as u64
    } else {
        0
    };
    (pt, ct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_dataset_has_every_prompt_and_model() {
        let d = Dataset::embedded().unwrap();
        assert_eq!(d.rows.len(), 1_785);
        assert_eq!(d.models.len(), 3);
        let names: Vec<&str> = d.models.iter().map(ModelSpec::short_name).collect();
        assert_eq!(
            names,
            [
                "llama-3.1-8b-instruct",
                "mistral-large-2512",
                "gemini-2.5-pro"
            ]
        );
        let first = &d.rows[0];
        assert!(std::ptr::eq(d.find(&first.prompt).unwrap(), first));
        assert!(d.find("not a prompt of the dataset").is_none());
        assert_eq!(d.model_index("google/gemini-2.5-pro"), Some(2));
        assert_eq!(d.model_index("gemini-2.5-pro"), Some(2));
    }

    #[test]
    fn derived_tokens_reproduce_the_dataset_cost() {
        let d = Dataset::embedded().unwrap();
        for row in &d.rows {
            for m in &d.models {
                let want = row.arms[&m.model_id].cost;
                let (pt, ct) = tokens_for_cost(m, &row.prompt, want);
                let got = m.cost_usd(pt, ct);
                // Rounding to whole tokens: off by at most one token's price.
                let tol = m.input_cost_per_m.max(m.output_cost_per_m) / 1_000_000.0 + 1e-12;
                assert!(
                    (got - want).abs() <= tol,
                    "{}: got {got}, want {want} ({pt}+{ct} tokens)",
                    m.model_id
                );
            }
        }
    }

    #[test]
    fn malformed_rows_name_their_line() {
        let models = r#"{"models":[{"model_id":"a/x","input_cost_per_m":1,"output_cost_per_m":2,"context_length":10}]}"#;
        let ok = r#"{"prompt":"p","arms":{"a/x":{"reward":1,"cost":0.1}}}"#;
        let missing = r#"{"prompt":"q","arms":{}}"#;
        let d = Dataset::parse(ok, models).unwrap();
        assert_eq!(d.rows.len(), 1);
        let err = Dataset::parse(&format!("{ok}\n{missing}"), models).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
