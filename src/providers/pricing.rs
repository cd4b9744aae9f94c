//! Cost of an answer: tokens times the model's list prices.

use super::usage::Usage;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
}

impl Prices {
    pub fn cost_usd(&self, usage: &Usage) -> f64 {
        (f64::from(usage.prompt_tokens) * self.input_usd_per_mtok
            + f64::from(usage.completion_tokens) * self.output_usd_per_mtok)
            / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_tokens_times_price_per_million() {
        let p = Prices {
            input_usd_per_mtok: 0.15,
            output_usd_per_mtok: 0.60,
        };
        let u = Usage {
            prompt_tokens: 1_000,
            completion_tokens: 500,
            counted_locally: false,
        };
        assert!((p.cost_usd(&u) - (0.00015 + 0.0003)).abs() < 1e-12);
    }
}
