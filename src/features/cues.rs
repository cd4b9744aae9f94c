//! Cue words: a compile-time table of (word hash, class) pairs.
//!
//! Owns: which lowercased words count as code, math, question, choice,
//! reasoning, transform or URL cues. Must not import anything but `hash`.
//! Invariant: the table is an open-addressing hash table built at compile
//! time; lookup is O(1) expected (one multiply, one load).

use super::hash::fnv1a;

/// Keyword classes recognised by exact (lowercased) word hash.
#[derive(Clone, Copy)]
pub(crate) enum Cue {
    Code,
    Math,
    Question,
    Choice,
    Reasoning,
    Transform,
    Url,
}

/// Cue words, matched by the hash of the lowercased word.
const CUE_WORDS: &[(&str, Cue)] = &[
    ("def", Cue::Code),
    ("return", Cue::Code),
    ("import", Cue::Code),
    ("class", Cue::Code),
    ("function", Cue::Code),
    ("const", Cue::Code),
    ("let", Cue::Code),
    ("var", Cue::Code),
    ("fn", Cue::Code),
    ("print", Cue::Code),
    ("python", Cue::Code),
    ("javascript", Cue::Code),
    ("java", Cue::Code),
    ("sql", Cue::Code),
    ("code", Cue::Code),
    ("int", Cue::Code),
    ("void", Cue::Code),
    ("lambda", Cue::Code),
    ("elif", Cue::Code),
    ("struct", Cue::Code),
    ("public", Cue::Code),
    ("include", Cue::Code),
    ("select", Cue::Code),
    ("regex", Cue::Code),
    ("calculate", Cue::Math),
    ("compute", Cue::Math),
    ("solve", Cue::Math),
    ("equation", Cue::Math),
    ("sum", Cue::Math),
    ("total", Cue::Math),
    ("many", Cue::Math),
    ("much", Cue::Math),
    ("percent", Cue::Math),
    ("average", Cue::Math),
    ("probability", Cue::Math),
    ("integer", Cue::Math),
    ("remainder", Cue::Math),
    ("product", Cue::Math),
    ("what", Cue::Question),
    ("why", Cue::Question),
    ("how", Cue::Question),
    ("which", Cue::Question),
    ("who", Cue::Question),
    ("when", Cue::Question),
    ("where", Cue::Question),
    ("whose", Cue::Question),
    ("answer", Cue::Choice),
    ("correct", Cue::Choice),
    ("choices", Cue::Choice),
    ("choice", Cue::Choice),
    ("options", Cue::Choice),
    ("option", Cue::Choice),
    ("letter", Cue::Choice),
    ("true", Cue::Choice),
    ("false", Cue::Choice),
    ("plausible", Cue::Choice),
    ("explain", Cue::Reasoning),
    ("step", Cue::Reasoning),
    ("reason", Cue::Reasoning),
    ("prove", Cue::Reasoning),
    ("derive", Cue::Reasoning),
    ("analyze", Cue::Reasoning),
    ("analyse", Cue::Reasoning),
    ("compare", Cue::Reasoning),
    ("evaluate", Cue::Reasoning),
    ("justify", Cue::Reasoning),
    ("translate", Cue::Transform),
    ("summarize", Cue::Transform),
    ("summarise", Cue::Transform),
    ("summary", Cue::Transform),
    ("rewrite", Cue::Transform),
    ("paraphrase", Cue::Transform),
    ("story", Cue::Transform),
    ("poem", Cue::Transform),
    ("essay", Cue::Transform),
    ("creative", Cue::Transform),
    ("imagine", Cue::Transform),
    ("http", Cue::Url),
    ("https", Cue::Url),
    ("www", Cue::Url),
];

const N_CUES: usize = CUE_WORDS.len();

/// Open-addressing table (512 slots, < 20% full) built at compile time:
/// a word costs one multiply, one load and usually one comparison, and
/// non-cue words almost always hit an empty slot at once.
const SLOT_BITS: u32 = 9;
const SLOTS: usize = 1 << SLOT_BITS;
/// Hash 0 marks an empty slot (FNV-1a never yields 0 for these words; the
/// build below would loop forever otherwise, failing compilation).
static CUE_TABLE: [(u64, Cue); SLOTS] = build_cue_table();

#[inline]
const fn slot(h: u64) -> usize {
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOT_BITS)) as usize
}

const fn build_cue_table() -> [(u64, Cue); SLOTS] {
    let mut t = [(0u64, Cue::Code); SLOTS];
    let mut i = 0;
    while i < N_CUES {
        let h = fnv1a(CUE_WORDS[i].0.as_bytes());
        let mut j = slot(h);
        while t[j].0 != 0 {
            j = (j + 1) % SLOTS;
        }
        t[j] = (h, CUE_WORDS[i].1);
        i += 1;
    }
    t
}

#[inline]
pub(crate) fn cue_of(h: u64) -> Option<Cue> {
    let mut j = slot(h);
    loop {
        let (k, cue) = *CUE_TABLE.get(j)?;
        if k == h {
            return Some(cue);
        }
        if k == 0 {
            return None;
        }
        j = (j + 1) % SLOTS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cue_word_is_found_and_others_are_not() {
        for (w, c) in CUE_WORDS {
            let found = cue_of(fnv1a(w.as_bytes()));
            assert_eq!(found.map(|f| f as u8), Some(*c as u8), "{w}");
        }
        for w in ["the", "train", "mistral", "", "answers"] {
            assert!(cue_of(fnv1a(w.as_bytes())).is_none(), "{w}");
        }
    }
}
