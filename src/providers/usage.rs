//! Token usage reported by an upstream (or counted locally) and its price.

use serde::{Deserialize, Serialize};

/// Tokens one answer consumed. `counted_locally` is true when the upstream
/// did not report usage and the router estimated it with a tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    #[serde(default)]
    pub counted_locally: bool,
}

impl Usage {
    pub fn total(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}
