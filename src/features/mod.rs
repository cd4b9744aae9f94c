//! Prompt -> fixed-length `f64` feature vector for the bandit.
//!
//! Owns: the borrowed prompt view, the feature spec, the encoder and the
//! token estimate. Must not import `bandit`, `sim`, I/O or async code: it is a
//! pure function of the prompt and the spec, so features are identical across
//! processes and versions (seedless FNV hashing, fixed scalings).
//! Invariants: `encode` always writes exactly `dimension()` finite values;
//! index 0 is the bias `1.0` (the bandit's priors rely on it); hand-made
//! features are scaled to roughly [0, 1] so one ridge prior fits all; the
//! hashed block is L2-normalised (norm 1, or 0 for an empty prompt).
//! Cost: one O(chars) scan plus O(buckets) (+ O(k d) with a projection);
//! the only allocation is growing the caller's reused `out` buffer.

mod cues;
mod fixed;
mod hash;
mod projection;
mod scan;

use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use fixed::estimate_prompt_tokens;
use fixed::{fill_fixed, normalise, RoleTally};
pub(crate) use hash::{fnv_words, FNV_OFFSET};
pub use projection::Projection;
use scan::Scanner;

/// Bump when the meaning of any raw feature changes; part of the fingerprint.
pub const FEATURE_VERSION: u32 = 1;

/// Names of the hand-made features (after the bias, before the hash buckets).
pub const FIXED_FEATURES: [&str; 35] = [
    "log_chars",
    "log_tokens",
    "log_words",
    "log_lines",
    "log_messages",
    "has_system",
    "system_share",
    "log_assistant_turns",
    "has_tool_messages",
    "last_is_user",
    "code_fences",
    "code_words",
    "code_symbols",
    "digit_share",
    "math_ops",
    "math_words",
    "question_marks",
    "ends_with_question",
    "question_words",
    "choice_markers",
    "choice_words",
    "reasoning_words",
    "transform_words",
    "non_ascii_share",
    "cjk_share",
    "other_script_share",
    "upper_share",
    "punct_share",
    "mean_word_len",
    "has_url",
    "has_tools",
    "json_mode",
    "has_images",
    "log_max_tokens",
    "has_max_tokens",
];
pub(crate) const N_FIXED: usize = FIXED_FEATURES.len();

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
    Other,
}

/// One message: its role and its text parts, borrowed from the request.
#[derive(Debug, Clone)]
pub struct MessageView<'a> {
    pub role: Role,
    pub texts: Vec<&'a str>,
}

/// The parts of a chat request that routing looks at, borrowed.
#[derive(Debug, Clone, Default)]
pub struct PromptView<'a> {
    pub messages: Vec<MessageView<'a>>,
    pub has_tools: bool,
    pub json_mode: bool,
    pub has_images: bool,
    pub max_tokens: Option<u32>,
}

impl<'a> PromptView<'a> {
    /// A prompt made of one user message (the replay protocol's shape).
    pub fn single_user(text: &'a str) -> Self {
        Self {
            messages: vec![MessageView {
                role: Role::User,
                texts: vec![text],
            }],
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    #[error("feature spec: hash_buckets must be at most {max}, got {got}")]
    TooManyBuckets { got: usize, max: usize },
    #[error("feature spec: hash_norm {0} must be a finite number in [0, 100]")]
    HashNorm(f64),
    #[error("feature spec: projection {0}")]
    Projection(String),
}

fn default_buckets() -> usize {
    64
}
fn default_true() -> bool {
    true
}
fn default_hash_norm() -> f64 {
    1.0
}

/// How prompts become vectors. `dimension()` is what the bandit is built for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Signed hash buckets for word unigrams (and bigrams); 0 disables.
    #[serde(default = "default_buckets")]
    pub hash_buckets: usize,
    #[serde(default = "default_true")]
    pub use_bigrams: bool,
    /// Norm of the (L2-normalised) hashed block. Scaling features by s is
    /// the same as dividing their ridge prior variance by s^2, so this sets
    /// how strongly the many weak word features are shrunk relative to the
    /// hand-made ones.
    #[serde(default = "default_hash_norm")]
    pub hash_norm: f64,
    /// Optional `k x raw_dimension()` projection from a training job.
    #[serde(default)]
    pub projection: Option<Projection>,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        Self {
            hash_buckets: default_buckets(),
            use_bigrams: true,
            hash_norm: default_hash_norm(),
            projection: None,
        }
    }
}

impl FeatureSpec {
    pub const MAX_BUCKETS: usize = 1 << 16;

    /// Width before projection: hand-made features plus hash buckets.
    pub fn raw_dimension(&self) -> usize {
        N_FIXED + self.hash_buckets
    }

    /// Width the encoder writes: bias + (projected or raw) features.
    pub fn dimension(&self) -> usize {
        1 + self
            .projection
            .as_ref()
            .map_or(self.raw_dimension(), |p| p.rows)
    }

    pub fn validate(&self) -> Result<(), FeatureError> {
        if !(self.hash_norm.is_finite() && self.hash_norm >= 0.0 && self.hash_norm <= 100.0) {
            return Err(FeatureError::HashNorm(self.hash_norm));
        }
        if self.hash_buckets > Self::MAX_BUCKETS {
            return Err(FeatureError::TooManyBuckets {
                got: self.hash_buckets,
                max: Self::MAX_BUCKETS,
            });
        }
        match &self.projection {
            Some(p) => p.validate(self.raw_dimension()),
            None => Ok(()),
        }
    }

    /// Stable identity of the feature space; snapshots record it so learned
    /// weights are never applied to a different encoding of equal width.
    pub fn fingerprint(&self) -> u64 {
        let mut h = hash::FNV_OFFSET;
        let mut eat = |bytes: &[u8]| bytes.iter().for_each(|&b| h = hash::fnv_step(h, b));
        eat(&FEATURE_VERSION.to_le_bytes());
        eat(&(self.hash_buckets as u64).to_le_bytes());
        eat(&[u8::from(self.use_bigrams)]);
        eat(&self.hash_norm.to_bits().to_le_bytes());
        if let Some(p) = &self.projection {
            h = p.hash_into(h);
        }
        hash::mix64(h)
    }
}

/// An immutable, cheaply clonable feature vector kept with a decision until
/// its feedback arrives.
#[derive(Debug, Clone, PartialEq)]
pub struct Features(Arc<[f64]>);

impl Features {
    pub fn as_slice(&self) -> &[f64] {
        &self.0
    }
}

impl From<Vec<f64>> for Features {
    fn from(v: Vec<f64>) -> Self {
        Self(v.into())
    }
}

impl From<&[f64]> for Features {
    fn from(v: &[f64]) -> Self {
        Self(v.into())
    }
}

impl Deref for Features {
    type Target = [f64];
    fn deref(&self) -> &[f64] {
        &self.0
    }
}

impl Serialize for Features {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<f64>::deserialize(d).map(Self::from)
    }
}

/// Turns prompts into vectors per a validated `FeatureSpec`. `Sync`: share
/// one encoder across request tasks.
#[derive(Debug, Clone)]
pub struct Encoder {
    spec: FeatureSpec,
    fingerprint: u64,
}

impl Encoder {
    pub fn new(spec: FeatureSpec) -> Result<Self, FeatureError> {
        spec.validate()?;
        let fingerprint = spec.fingerprint();
        Ok(Self { spec, fingerprint })
    }

    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    pub fn dimension(&self) -> usize {
        self.spec.dimension()
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Convenience: encode into a fresh `Features` (allocates once).
    pub fn features(&self, prompt: &PromptView<'_>) -> Features {
        let mut v = Vec::with_capacity(self.dimension());
        self.encode(prompt, &mut v);
        Features::from(v)
    }

    /// Writes exactly `dimension()` values into `out` (cleared first; its
    /// capacity is reused across calls).
    pub fn encode(&self, prompt: &PromptView<'_>, out: &mut Vec<f64>) {
        let raw = self.spec.raw_dimension();
        let k = self.spec.projection.as_ref().map_or(0, |p| p.rows);
        out.clear();
        // Layout while working: [bias | fixed | buckets | projected scratch].
        out.resize(1 + raw + k, 0.0);
        out[0] = 1.0;
        let (fixed, buckets) = out[1..1 + raw].split_at_mut(N_FIXED);
        let mut sc = Scanner::new(buckets, self.spec.use_bigrams);
        let mut roles = RoleTally::default();
        for m in &prompt.messages {
            let before = sc.counts.chars;
            let mut last = None;
            for t in &m.texts {
                last = sc.scan(t).or(last);
            }
            roles.add(m.role, sc.counts.chars - before, last);
        }
        let counts = sc.counts;
        normalise(buckets, self.spec.hash_norm);
        fill_fixed(fixed, &counts, &roles, prompt);
        if let Some(p) = &self.spec.projection {
            let (head, scratch) = out.split_at_mut(1 + raw);
            p.apply(&head[1..], scratch);
            out.copy_within(1 + raw.., 1);
            out.truncate(1 + k);
        }
    }
}

#[cfg(test)]
mod tests;
