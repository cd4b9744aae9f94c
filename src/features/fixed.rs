//! The hand-made part of the feature vector and the token estimate.
//!
//! Owns: turning scan counts and message roles into the `FIXED_FEATURES`
//! values, each scaled to [0, 1] (log scales for lengths, capped densities
//! for shares) so a single ridge prior suits all of them. Must not import
//! `bandit` or `sim`. Invariant: writes exactly `N_FIXED` finite values in
//! [0, 1]; the order is `FIXED_FEATURES`' (part of the fingerprint via
//! `FEATURE_VERSION`). O(1) given the counts.

use super::scan::{is_cjk, Counts};
use super::{PromptView, Role, N_FIXED};

#[inline]
fn ratio(num: u32, den: u32, gain: f64) -> f64 {
    if den == 0 {
        0.0
    } else {
        (gain * f64::from(num) / f64::from(den)).min(1.0)
    }
}

#[inline]
fn log_scaled(v: f64, cap: f64) -> f64 {
    (v.ln_1p() / cap.ln_1p()).min(1.0)
}

#[derive(Default)]
pub(crate) struct RoleTally {
    system_chars: u32,
    has_system: bool,
    assistant: u32,
    tool: u32,
    messages: u32,
    last_is_user: bool,
    ends_with_question: bool,
}

impl RoleTally {
    pub(crate) fn add(&mut self, role: Role, chars: u32, last: Option<char>) {
        self.messages += 1;
        match role {
            Role::System => {
                self.has_system = true;
                self.system_chars += chars;
            }
            Role::Assistant => self.assistant += 1,
            Role::Tool => self.tool += 1,
            Role::User | Role::Other => {}
        }
        self.last_is_user = role == Role::User;
        if role == Role::User {
            self.ends_with_question = matches!(last, Some('?' | '\u{FF1F}'));
        }
    }
}

pub(crate) fn normalise(v: &mut [f64], to: f64) {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        let s = to / norm;
        v.iter_mut().for_each(|x| *x *= s);
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

pub(crate) fn fill_fixed(f: &mut [f64], c: &Counts, r: &RoleTally, p: &PromptView<'_>) {
    let tokens = tokens_from_counts(c, r.messages);
    let letters = c.letters.max(1);
    let vals: [f64; N_FIXED] = [
        log_scaled(f64::from(c.chars), 100_000.0),
        log_scaled(f64::from(tokens), 32_768.0),
        log_scaled(f64::from(c.words), 16_384.0),
        log_scaled(f64::from(c.newlines), 1_024.0),
        log_scaled(f64::from(r.messages), 64.0),
        flag(r.has_system),
        ratio(r.system_chars, c.chars, 1.0),
        log_scaled(f64::from(r.assistant), 32.0),
        flag(r.tool > 0),
        flag(r.last_is_user),
        (f64::from(c.fences) / 6.0).min(1.0),
        ratio(c.code_words, c.words, 10.0),
        ratio(c.code_symbols, c.chars, 20.0),
        ratio(c.digits, c.chars, 5.0),
        ratio(c.math_ops, c.chars, 20.0),
        ratio(c.math_words, c.words, 20.0),
        (f64::from(c.questions) / 3.0).min(1.0),
        flag(r.ends_with_question),
        ratio(c.question_words, c.words, 10.0),
        (f64::from(c.options) / 4.0).min(1.0),
        ratio(c.choice_words, c.words, 10.0),
        ratio(c.reasoning_words, c.words, 10.0),
        ratio(c.transform_words, c.words, 10.0),
        ratio(c.non_ascii, c.chars, 1.0),
        ratio(c.cjk, c.chars, 1.0),
        ratio(c.other_script, c.chars, 1.0),
        ratio(c.upper, letters, 1.0),
        ratio(c.punct, c.chars, 5.0),
        if c.words == 0 {
            0.0
        } else {
            (f64::from(c.word_chars) / f64::from(c.words) / 12.0).min(1.0)
        },
        flag(c.urls > 0),
        flag(p.has_tools),
        flag(p.json_mode),
        flag(p.has_images),
        p.max_tokens
            .map_or(0.0, |m| log_scaled(f64::from(m), 65_536.0)),
        flag(p.max_tokens.is_some()),
    ];
    f.copy_from_slice(&vals);
}

/// ~4 ASCII characters per token, one token per CJK character, two other
/// non-ASCII characters per token, plus chat-template overhead per message.
fn tokens_from_counts(c: &Counts, messages: u32) -> u32 {
    let other = c.non_ascii.saturating_sub(c.cjk);
    c.ascii.div_ceil(4) + c.cjk + other.div_ceil(2) + 4 * messages + 3
}

/// Cheap prompt-token estimate (for budgets and cost priors, not billing).
pub fn estimate_prompt_tokens(prompt: &PromptView<'_>) -> u32 {
    let mut c = Counts::default();
    for t in prompt.messages.iter().flat_map(|m| m.texts.iter()) {
        for ch in t.chars() {
            if ch.is_ascii() {
                c.ascii += 1;
            } else {
                c.non_ascii += 1;
                c.cjk += u32::from(is_cjk(ch));
            }
        }
    }
    tokens_from_counts(&c, prompt.messages.len() as u32)
}
