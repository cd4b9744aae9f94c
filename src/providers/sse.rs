//! Incremental Server-Sent-Events (SSE) parsing and encoding.
//!
//! Owns the SSE wire format in both directions: [`SseParser`] turns upstream
//! bytes (Anthropic, OpenAI-compatible providers) into [`SseEvent`]s following
//! the WHATWG "Interpreting an event stream" algorithm, and [`encode_data`] /
//! [`encode_event`] / [`encode_comment`] write events for our own clients.
//!
//! Invariants:
//! - Input may be split at any byte, including inside a UTF-8 sequence or
//!   between the CR and LF of a CRLF: a line is decoded only once its
//!   terminator has arrived, and a CR remembers that a following LF belongs
//!   to it.
//! - Memory is bounded: the bytes held for the event being assembled (the
//!   unterminated line, the data buffer and the event name) never exceed
//!   `max_event_bytes`; crossing it is an error and poisons the parser,
//!   because resynchronising in the middle of a stream cannot be done safely.
//! - Completed events are queued in arrival order; the queue only holds what
//!   the last pushed chunk completed, so it is bounded by the chunk size.
//! - Encoded events always round-trip through the parser: data containing
//!   line breaks is split over several `data:` lines.

use std::collections::VecDeque;

/// Default cap on one event's size. Anthropic and OpenAI events are a few KiB
/// at most; 8 MiB leaves room for large tool arguments while stopping a
/// misbehaving upstream from growing our memory without bound.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Lines longer than this do not keep their allocation after being processed,
/// so one huge event does not pin megabytes for the life of the stream.
const RETAINED_LINE_CAPACITY: usize = 64 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; `None` when absent or empty (a browser would call
    /// it `"message"`).
    pub event: Option<String>,
    /// All `data:` lines joined with `\n`.
    pub data: String,
    /// The last event ID in force when this event was dispatched. Per spec it
    /// persists across events until another `id:` line changes it.
    pub id: Option<String>,
}

impl SseEvent {
    /// The event type as a browser's `EventSource` would report it.
    pub fn event_type(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("server-sent event exceeds the {limit}-byte limit")]
    EventTooLarge { limit: usize },
}

/// Incremental SSE parser. Feed bytes with [`push`](Self::push), take events
/// with [`next_event`](Self::next_event) (or [`drain`](Self::drain)).
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// Bytes of the current line whose terminator has not arrived yet.
    line: Vec<u8>,
    /// The last byte consumed was a CR, so an LF starting the next chunk is
    /// the second half of a CRLF rather than an empty line.
    after_cr: bool,
    /// No line has been completed yet, so a leading BOM is still possible.
    at_stream_start: bool,
    event_type: String,
    /// Data lines, each followed by `\n` as the spec builds it; the final
    /// `\n` is removed at dispatch.
    data: String,
    last_event_id: String,
    ready: VecDeque<SseEvent>,
    failed: Option<SseError>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            at_stream_start: true,
            event_type: String::new(),
            data: String::new(),
            last_event_id: String::new(),
            ready: VecDeque::new(),
            failed: None,
        }
    }

    /// Consumes a chunk of the stream. Events it completes become available
    /// from [`next_event`](Self::next_event). Once an error was returned every
    /// later call returns it again.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.push_inner(chunk);
        if let Err(err) = &result {
            // Drop everything buffered: the stream cannot be trusted any more.
            self.failed = Some(err.clone());
            self.line = Vec::new();
            self.data = String::new();
            self.event_type = String::new();
        }
        result
    }

    fn push_inner(&mut self, chunk: &[u8]) -> Result<(), SseError> {
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if let Some((b'\n', tail)) = rest.split_first() {
                    rest = tail;
                    continue;
                }
            }
            match memchr::memchr2(b'\n', b'\r', rest) {
                Some(pos) => {
                    let (head, tail) = rest.split_at(pos);
                    self.append_to_line(head)?;
                    if let Some((&terminator, after)) = tail.split_first() {
                        self.after_cr = terminator == b'\r';
                        rest = after;
                    } else {
                        rest = &[];
                    }
                    self.process_line()?;
                }
                None => {
                    self.append_to_line(rest)?;
                    rest = &[];
                }
            }
        }
        Ok(())
    }

    /// The next completed event, if any.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// Iterates over the events completed so far.
    pub fn drain(&mut self) -> impl Iterator<Item = SseEvent> + '_ {
        std::iter::from_fn(move || self.next_event())
    }

    /// Ends the stream and returns the trailing event that was never
    /// terminated by a blank line, if it had any data. The spec says to
    /// discard such an event; we hand it to the caller instead so it can
    /// decide (e.g. accept a final `data: [DONE]` with a single newline, or
    /// report a truncated stream). Events already completed stay queued.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.failed.is_some() {
            return None;
        }
        if !self.line.is_empty() && self.process_line().is_err() {
            return None;
        }
        let event = self.take_event();
        self.after_cr = false;
        event
    }

    fn append_to_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.buffered() + bytes.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn buffered(&self) -> usize {
        self.line.len() + self.data.len() + self.event_type.len()
    }

    fn process_line(&mut self) -> Result<(), SseError> {
        let mut line = std::mem::take(&mut self.line);
        let mut content: &[u8] = &line;
        if self.at_stream_start {
            self.at_stream_start = false;
            content = content.strip_prefix(BOM).unwrap_or(content);
        }
        let result = if content.is_empty() {
            if let Some(event) = self.take_event() {
                self.ready.push_back(event);
            }
            Ok(())
        } else {
            // Lossy decoding is what the spec mandates (UTF-8 decode with
            // replacement); a line is complete here, so no character is split.
            // Valid text, the usual case, is checked by the faster routine.
            let text = match std::str::from_utf8(content) {
                Ok(text) => std::borrow::Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(content),
            };
            self.process_field(&text)
        };
        if line.capacity() <= RETAINED_LINE_CAPACITY {
            line.clear();
            self.line = line;
        }
        result
    }

    fn process_field(&mut self, line: &str) -> Result<(), SseError> {
        if line.starts_with(':') {
            return Ok(());
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => {
                self.event_type.clear();
                self.event_type.push_str(value);
            }
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            // An id containing NUL is ignored by the spec.
            "id" if !value.contains('\0') => {
                self.last_event_id.clear();
                self.last_event_id.push_str(value);
            }
            // `retry` only matters to a reconnecting client, which we are
            // not; unknown fields are ignored by the spec.
            _ => {}
        }
        if self.buffered() > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    /// The spec's "dispatch the event" step: resets the per-event buffers and
    /// yields an event only if some `data` line was seen.
    fn take_event(&mut self) -> Option<SseEvent> {
        let event_type = std::mem::take(&mut self.event_type);
        if self.data.is_empty() {
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        Some(SseEvent {
            event: (!event_type.is_empty()).then_some(event_type),
            data,
            id: (!self.last_event_id.is_empty()).then(|| self.last_event_id.clone()),
        })
    }
}

/// Writes one unnamed event: `data: ...\n\n`. Line breaks inside `data` become
/// separate `data:` lines so the receiver reassembles the same string.
pub fn encode_data(out: &mut Vec<u8>, data: &str) {
    write_data_lines(out, data);
    out.push(b'\n');
}

/// Writes one named event: `event: NAME\ndata: ...\n\n`. Line breaks in the
/// name would corrupt the framing, so they are removed.
pub fn encode_event(out: &mut Vec<u8>, event: &str, data: &str) {
    out.extend_from_slice(b"event: ");
    for piece in event.split(['\r', '\n']) {
        out.extend_from_slice(piece.as_bytes());
    }
    out.push(b'\n');
    write_data_lines(out, data);
    out.push(b'\n');
}

/// Writes a comment (`:text`), e.g. a keep-alive that proxies forward but
/// clients ignore. Each line of `text` becomes its own comment line.
pub fn encode_comment(out: &mut Vec<u8>, text: &str) {
    for_each_line(text, |line| {
        out.push(b':');
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    });
    out.push(b'\n');
}

fn write_data_lines(out: &mut Vec<u8>, data: &str) {
    for_each_line(data, |line| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    });
}

/// Calls `f` for each line of `text`, splitting at CRLF, CR or LF exactly as
/// the parser does; an empty text is one empty line.
fn for_each_line(text: &str, mut f: impl FnMut(&str)) {
    let mut rest = text;
    loop {
        match rest.find(['\r', '\n']) {
            Some(pos) => {
                let (line, tail) = rest.split_at(pos);
                f(line);
                rest = match tail.strip_prefix("\r\n") {
                    Some(after) => after,
                    None => tail.get(1..).unwrap_or(""),
                };
            }
            None => {
                f(rest);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
