//! One-pass text scanner: counts character classes and cues and feeds
//! signed hashed unigrams/bigrams into caller-owned buckets.
//!
//! Owns: the per-character state machine. Must not import `bandit` or `sim`
//! and must not allocate: words are hashed byte by byte as they stream past
//! (lowercasing through `char::to_lowercase`, an iterator, never a String).
//! Invariants: counts only grow; the bucket slice length is never changed;
//! the result depends only on the text (no global or random state).
//! Cost: O(chars) with a handful of branches per character.

use super::cues::{cue_of, Cue};
use super::hash::{bucket_and_sign, fnv_step, pair, FNV_OFFSET};

/// Character-class and cue counts over all scanned text.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub chars: u32,
    pub ascii: u32,
    pub non_ascii: u32,
    pub cjk: u32,
    pub other_script: u32,
    pub letters: u32,
    pub upper: u32,
    pub digits: u32,
    pub math_ops: u32,
    pub code_symbols: u32,
    pub punct: u32,
    pub newlines: u32,
    pub questions: u32,
    pub fences: u32,
    pub words: u32,
    pub word_chars: u32,
    pub options: u32,
    pub code_words: u32,
    pub math_words: u32,
    pub question_words: u32,
    pub choice_words: u32,
    pub reasoning_words: u32,
    pub transform_words: u32,
    pub urls: u32,
}

/// Streaming scanner; `buckets` may be empty (hashing disabled).
pub(crate) struct Scanner<'b> {
    pub counts: Counts,
    buckets: &'b mut [f64],
    bigrams: bool,
    word: u64,
    word_len: u32,
    prev_word: Option<u64>,
    prev: char,
    prev2: char,
    line_blank: bool,
    blank_before_prev: bool,
    backticks: u32,
    last_visible: char,
}

pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

/// Byte classes for the ASCII fast paths: one table load instead of range
/// compares per byte.
const ALNUM: u8 = 1;
const DIGIT: u8 = 2;
const UPPER: u8 = 4;
/// `char::is_whitespace` on an ASCII byte (tab, LF, VT, FF, CR, space).
const SPACE: u8 = 8;
static CLASS: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if b.is_ascii_alphanumeric() {
            c |= ALNUM;
        }
        if b.is_ascii_digit() {
            c |= DIGIT;
        }
        if b.is_ascii_uppercase() {
            c |= UPPER;
        }
        if matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ') {
            c |= SPACE;
        }
        t[i] = c;
        i += 1;
    }
    t
}

fn class(b: u8) -> u8 {
    CLASS[usize::from(b)]
}

fn is_option_mark(c: char) -> bool {
    matches!(c, 'A'..='H' | 'a'..='h' | '1'..='9')
}

impl<'b> Scanner<'b> {
    pub fn new(buckets: &'b mut [f64], bigrams: bool) -> Self {
        Self {
            counts: Counts::default(),
            buckets,
            bigrams,
            word: FNV_OFFSET,
            word_len: 0,
            prev_word: None,
            prev: '\n',
            prev2: '\n',
            line_blank: true,
            blank_before_prev: true,
            backticks: 0,
            last_visible: '\0',
        }
    }

    /// Scans one text segment. Segments are independent documents for
    /// bigrams and line state (a message boundary is not a word pair).
    /// Returns the last non-whitespace character of the segment, if any.
    pub fn scan(&mut self, text: &str) -> Option<char> {
        self.prev = '\n';
        self.prev2 = '\n';
        self.line_blank = true;
        self.blank_before_prev = true;
        self.prev_word = None;
        self.last_visible = '\0';
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if class(b) & ALNUM != 0 {
                i = self.ascii_word_run(bytes, i);
            } else if b == b' ' {
                self.space();
                i += 1;
            } else if b.is_ascii() {
                self.step_ascii(b);
                i += 1;
            } else {
                // `i` is always on a char boundary: runs advance over ASCII
                // bytes, this branch over whole chars.
                let Some(c) = text.get(i..).and_then(|t| t.chars().next()) else {
                    break;
                };
                self.step(c);
                i += c.len_utf8();
            }
        }
        self.end_word();
        (self.last_visible != '\0').then_some(self.last_visible)
    }

    /// The common case, most prompt bytes: a run of ASCII letters and digits
    /// from `start`, with exactly the effect of `step` on each of them (no
    /// option mark, fence, whitespace or word end can occur inside a run),
    /// but with the per-run state written once. Returns where the run ends.
    #[inline]
    fn ascii_word_run(&mut self, bytes: &[u8], start: usize) -> usize {
        // Branch-free counts: the only data-dependent branch per byte is
        // the run's end.
        let (mut digits, mut upper) = (0u32, 0u32);
        let mut word = self.word;
        let mut end = start;
        for &b in bytes.get(start..).unwrap_or(&[]) {
            let c = class(b);
            if c & ALNUM == 0 {
                break;
            }
            digits += u32::from(c & DIGIT != 0);
            upper += u32::from(c & UPPER != 0);
            // Bit 5 lowercases an ASCII letter and leaves a digit unchanged.
            word = fnv_step(word, b | 0x20);
            end += 1;
        }
        let len = (end - start) as u32;
        let letters = len - digits;
        let at = |i: usize| bytes.get(i).map_or(self.prev, |&b| b as char);
        let last = at(end.wrapping_sub(1));
        let before_last = if len >= 2 { at(end - 2) } else { self.prev };
        let n = &mut self.counts;
        n.chars += len;
        n.ascii += len;
        n.digits += digits;
        n.letters += letters;
        n.upper += upper;
        self.word = word;
        self.word_len += len;
        self.backticks = 0;
        self.last_visible = last;
        // After the run's first char the line is no longer blank.
        self.blank_before_prev = if len == 1 { self.line_blank } else { false };
        self.line_blank = false;
        self.prev2 = before_last;
        self.prev = last;
        end
    }

    /// `step(' ')`, the commonest separator, without the branches that
    /// cannot apply to it (a space ends a word and keeps the line's blankness).
    #[inline]
    fn space(&mut self) {
        self.counts.chars += 1;
        self.counts.ascii += 1;
        self.backticks = 0;
        self.end_word();
        self.blank_before_prev = self.line_blank;
        self.prev2 = self.prev;
        self.prev = ' ';
    }

    /// `step` on an ASCII byte that is neither a letter, a digit nor a
    /// space (punctuation, newlines, tabs): the same effect without the
    /// Unicode branches.
    #[inline]
    fn step_ascii(&mut self, b: u8) {
        let c = char::from(b);
        let white = class(b) & SPACE != 0;
        self.counts.chars += 1;
        self.counts.ascii += 1;
        self.marks(c);
        self.end_word();
        let n = &mut self.counts;
        match b {
            b'\n' => n.newlines += 1,
            b'?' => n.questions += 1,
            b'+' | b'-' | b'*' | b'/' | b'=' | b'^' | b'%' | b'<' | b'>' => n.math_ops += 1,
            b'{' | b'}' | b';' | b'_' | b'#' | b'[' | b']' | b'`' | b'|' | b'&' => {
                n.code_symbols += 1
            }
            _ => {}
        }
        if !white {
            n.punct += u32::from(b != b'?');
            self.last_visible = c;
        }
        self.blank_before_prev = self.line_blank;
        self.line_blank = b == b'\n' || (self.line_blank && white);
        self.prev2 = self.prev;
        self.prev = c;
    }

    /// The reference: `step` on every char. Kept for the equivalence test.
    #[cfg(test)]
    pub fn scan_chars(&mut self, text: &str) -> Option<char> {
        self.prev = '\n';
        self.prev2 = '\n';
        self.line_blank = true;
        self.blank_before_prev = true;
        self.prev_word = None;
        self.last_visible = '\0';
        for c in text.chars() {
            self.step(c);
        }
        self.end_word();
        (self.last_visible != '\0').then_some(self.last_visible)
    }

    #[inline]
    fn step(&mut self, c: char) {
        let n = &mut self.counts;
        n.chars += 1;
        if c.is_ascii() {
            n.ascii += 1;
        } else {
            n.non_ascii += 1;
        }
        self.marks(c);
        let n = &mut self.counts;
        if c.is_ascii_alphanumeric() {
            // ASCII fast path: most prompt text.
            if c.is_ascii_digit() {
                n.digits += 1;
            } else {
                n.letters += 1;
                n.upper += u32::from(c.is_ascii_uppercase());
            }
            self.word = fnv_step(self.word, c.to_ascii_lowercase() as u8);
            self.word_len += 1;
        } else if !c.is_ascii() && c.is_alphanumeric() {
            if c.is_numeric() {
                n.digits += 1;
            } else {
                n.letters += 1;
                if c.is_uppercase() {
                    n.upper += 1;
                }
            }
            if is_cjk(c) {
                // CJK text has no spaces: each ideograph is its own token.
                n.cjk += 1;
                self.end_word();
                self.feed_char(c);
                self.end_word();
            } else {
                if !c.is_ascii() && c.is_alphabetic() && !matches!(c as u32, 0x00C0..=0x024F) {
                    n.other_script += 1;
                }
                self.feed_char(c);
            }
        } else {
            self.end_word();
            let n = &mut self.counts;
            match c {
                '\n' => n.newlines += 1,
                '?' | '\u{FF1F}' => n.questions += 1,
                '+' | '-' | '*' | '/' | '=' | '^' | '%' | '<' | '>' | '\u{00D7}' | '\u{00F7}'
                | '\u{221A}' | '\u{2211}' | '\u{222B}' | '\u{03C0}' => n.math_ops += 1,
                '{' | '}' | ';' | '_' | '#' | '[' | ']' | '`' | '|' | '&' => n.code_symbols += 1,
                _ => {}
            }
            if !c.is_whitespace() && c != '?' {
                n.punct += 1;
            }
        }
        if !c.is_whitespace() {
            self.last_visible = c;
        }
        self.blank_before_prev = self.line_blank;
        self.line_blank = if c == '\n' {
            true
        } else {
            self.line_blank && c.is_whitespace()
        };
        self.prev2 = self.prev;
        self.prev = c;
    }

    /// Multiple-choice markers ("(A)" anywhere, "A)" / "A." opening a line)
    /// and code fences (three backticks): state both steps keep.
    #[inline]
    fn marks(&mut self, c: char) {
        let n = &mut self.counts;
        if (c == ')' && is_option_mark(self.prev) && (self.prev2 == '(' || self.blank_before_prev))
            || (c == '.'
                && self.prev.is_ascii_uppercase()
                && is_option_mark(self.prev)
                && self.blank_before_prev)
        {
            n.options += 1;
        }
        if c == '`' {
            self.backticks += 1;
            if self.backticks == 3 {
                n.fences += 1;
                self.backticks = 0;
            }
        } else {
            self.backticks = 0;
        }
    }

    #[inline]
    fn feed_char(&mut self, c: char) {
        if c.is_ascii() {
            self.word = fnv_step(self.word, c.to_ascii_lowercase() as u8);
        } else {
            let mut buf = [0u8; 4];
            for lc in c.to_lowercase() {
                for &b in lc.encode_utf8(&mut buf).as_bytes() {
                    self.word = fnv_step(self.word, b);
                }
            }
        }
        self.word_len += 1;
    }

    #[inline]
    fn end_word(&mut self) {
        if self.word_len == 0 {
            return;
        }
        let h = self.word;
        let n = &mut self.counts;
        n.words += 1;
        n.word_chars += self.word_len;
        match cue_of(h) {
            Some(Cue::Code) => n.code_words += 1,
            Some(Cue::Math) => n.math_words += 1,
            Some(Cue::Question) => n.question_words += 1,
            Some(Cue::Choice) => n.choice_words += 1,
            Some(Cue::Reasoning) => n.reasoning_words += 1,
            Some(Cue::Transform) => n.transform_words += 1,
            Some(Cue::Url) => n.urls += 1,
            None => {}
        }
        if !self.buckets.is_empty() {
            let len = self.buckets.len();
            let (i, s) = bucket_and_sign(h, len);
            self.buckets[i] += s;
            if self.bigrams {
                if let Some(p) = self.prev_word {
                    let (j, t) = bucket_and_sign(pair(p, h), len);
                    self.buckets[j] += t;
                }
            }
        }
        self.prev_word = Some(h);
        self.word = FNV_OFFSET;
        self.word_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(text: &str) -> Counts {
        let mut b = [0.0; 8];
        let mut s = Scanner::new(&mut b, true);
        s.scan(text);
        s.counts
    }

    #[test]
    fn detects_multiple_choice_markers() {
        assert_eq!(counts("Q?\n(A) x\n(B) y\n  C) z\nD. w").options, 4);
        assert_eq!(counts("Choices: (A) chance, (B) rot, (C) luck").options, 3);
        assert_eq!(counts("the U.S. economy (see above)").options, 0);
    }

    #[test]
    fn counts_words_cues_and_scripts() {
        let c = counts("How many apples? def f(): return 1 ```py``` 日本語 привет");
        assert_eq!(c.question_words, 1);
        assert_eq!(c.math_words, 1);
        assert_eq!(c.code_words, 2);
        assert_eq!(c.fences, 2);
        assert_eq!(c.cjk, 3);
        assert_eq!(c.other_script, 6);
        assert_eq!(c.questions, 1);
    }

    proptest::proptest! {
        #[test]
        fn the_ascii_fast_path_equals_stepping_every_char(
            text in r"(?s)[a-zA-Z0-9 ()\.\n\t\r\x0B\x0C`?+*/{};#_|&=^%<>:,!A-D日本é\[\]-]{0,200}"
        ) {
            let (mut a, mut b) = ([0.0; 16], [0.0; 16]);
            let mut fast = Scanner::new(&mut a, true);
            let last_fast = fast.scan(&text);
            let counts_fast = format!("{:?}", fast.counts);
            let mut slow = Scanner::new(&mut b, true);
            let last_slow = slow.scan_chars(&text);
            let counts_slow = format!("{:?}", slow.counts);
            proptest::prop_assert_eq!(last_fast, last_slow);
            proptest::prop_assert_eq!(counts_fast, counts_slow);
            proptest::prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn hashing_is_case_insensitive() {
        let mut a = [0.0; 16];
        let mut b = [0.0; 16];
        Scanner::new(&mut a, true).scan("Hello World");
        Scanner::new(&mut b, true).scan("hello WORLD");
        assert_eq!(a, b);
        assert!(a.iter().any(|v| *v != 0.0));
    }
}
