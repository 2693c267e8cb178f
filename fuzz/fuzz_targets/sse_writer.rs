//! Fuzz target `sse_writer`: what `SseWriter` writes parses back to exactly what was written.
//!
//! Input layout: byte 0 chooses the writer (bit 0: `SseWriter::resuming` with the first string
//! as the client's ID) and the parsers' options (bit 1: report comments); then operations, each
//! an opcode byte and its operands: strings are a length byte (mod 64) and that many bytes, read
//! as UTF-8 with replacement (so CR, LF, CRLF, NUL and any character occur); a retry time is 8
//! bytes of milliseconds-or-seconds and 4 of nanoseconds.
//!
//! - `0`: `write_event` (type, data, ID; opcode bit 4 adds a retry time),
//! - `1`: `write_id`, `2`: `write_comment`, `3`: `write_retry`.
//!
//! Oracles (the writer's module docs):
//! 1. An accepted call parses back, with a fresh `SseParser` (given the resumed ID) and with a
//!    plain transcription of HTML §9.2.6, to exactly the expected items: the event (type, data
//!    with CRLF / lone CR normalised to LF, ID, its retry truncated to whole milliseconds and
//!    capped at `u64::MAX` ms), the `retry` value, each comment line; a `write_id` checkpoint
//!    dispatches nothing. Afterwards both parsers' last event ID is the writer's
//!    `client_last_event_id` and the reconnection time is the last retry written.
//! 2. A refused call is refused for a reason the input has (CR/LF in the type; in the ID the
//!    first offending byte: CR/LF, NUL or another control character, a space or tab at either
//!    end, at the byte offset it names), writes nothing and leaves the client's ID as it was;
//!    everything else is accepted, and so is an event whose ID the client already holds.
//! 3. The output is UTF-8 and every line it holds ends in LF (no CR ever reaches the wire).
#![no_main]

use std::time::Duration;

use kdnet::network::sse::{SseEvent, SseParser, SseSink, SseWriteError, SseWriter};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Event(SseEvent),
    Comment(String),
    Retry(Duration),
}

#[derive(Default)]
struct Log(Vec<Item>);

impl SseSink for Log {
    fn on_event(&mut self, event: SseEvent) {
        self.0.push(Item::Event(event));
    }
    fn on_comment(&mut self, comment: &str) {
        self.0.push(Item::Comment(comment.to_owned()));
    }
    fn on_retry(&mut self, retry: Duration) {
        self.0.push(Item::Retry(retry));
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    items: Vec<Item>,
    last_event_id: String,
    reconnection_time: Option<Duration>,
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn string(&mut self) -> String {
        let len = usize::from(self.byte().unwrap_or(0) % 64);
        String::from_utf8_lossy(self.bytes(len)).into_owned()
    }

    fn retry(&mut self) -> Duration {
        let mut word = [0u8; 8];
        let taken = self.bytes(8);
        word[..taken.len()].copy_from_slice(taken);
        let high = u64::from_le_bytes(word);
        let mut nanos = [0u8; 4];
        let taken = self.bytes(4);
        nanos[..taken.len()].copy_from_slice(taken);
        let nanos = u32::from_le_bytes(nanos) % 1_000_000_000;
        // Small values as milliseconds (the usual case), huge ones as seconds (past u64 ms).
        if high & 1 == 0 {
            Duration::from_millis(high >> 1) + Duration::from_nanos(u64::from(nanos % 1_000_000))
        } else {
            Duration::new(high >> 1, nanos)
        }
    }
}

/// What a client makes of a retry time the writer was given.
fn on_the_wire(retry: Duration) -> Duration {
    Duration::from_millis(u64::try_from(retry.as_millis()).unwrap_or(u64::MAX))
}

/// Data (or a comment) split at CRLF, lone CR and LF, as the writer's docs say.
fn lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find(['\r', '\n']) {
        out.push(rest[..end].to_owned());
        rest = if rest[end..].starts_with("\r\n") {
            &rest[end + 2..]
        } else {
            &rest[end + 1..]
        };
    }
    out.push(rest.to_owned());
    out
}

fn first_of(text: &str, bytes: &[u8]) -> Option<usize> {
    text.bytes().position(|b| bytes.contains(&b))
}

/// The reasons a type/ID pair cannot be carried (any of them may be the one reported).
fn refusals(event_type: Option<&str>, id: &str) -> Vec<SseWriteError> {
    let mut reasons = Vec::new();
    if let Some(position) = event_type.and_then(|t| first_of(t, b"\r\n")) {
        reasons.push(SseWriteError::LineBreakInEventType { position });
    }
    reasons.extend(id_refusal(id));
    reasons
}

/// Why `id` cannot come back in `Last-Event-ID`, at its first offending byte: a line break,
/// NUL or other control character (no header value carries them), or a space or tab at either
/// end (HTTP strips them).
fn id_refusal(id: &str) -> Option<SseWriteError> {
    let bytes = id.as_bytes();
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    let mut found: Vec<(usize, SseWriteError)> = Vec::new();
    if bytes.first().is_some_and(is_ws) {
        found.push((0, SseWriteError::WhitespaceAroundId { position: 0 }));
    }
    if let Some(position) = bytes
        .iter()
        .position(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
    {
        let reason = match bytes[position] {
            b'\r' | b'\n' => SseWriteError::LineBreakInId { position },
            0 => SseWriteError::NulInId { position },
            _ => SseWriteError::ControlInId { position },
        };
        found.push((position, reason));
    }
    let trailing = bytes.iter().rev().take_while(|b| is_ws(b)).count();
    if trailing > 0 && trailing < bytes.len() {
        let position = bytes.len() - trailing;
        found.push((position, SseWriteError::WhitespaceAroundId { position }));
    }
    let first = found.into_iter().min_by_key(|(position, _)| *position);
    first.map(|(_, reason)| reason).or_else(|| {
        (bytes.len() > SseWriter::MAX_ID_LEN).then_some(SseWriteError::IdTooLong {
            len: bytes.len(),
            limit: SseWriter::MAX_ID_LEN,
        })
    })
}

fn check_refusal(result: Result<(), SseWriteError>, reasons: &[SseWriteError], what: &str) -> bool {
    match result {
        Ok(()) => {
            assert!(reasons.is_empty(), "{what} accepted, though {reasons:?}");
            true
        }
        Err(e) => {
            assert!(
                reasons.contains(&e),
                "{what} refused with {e:?}; reasons: {reasons:?}"
            );
            false
        }
    }
}

/// HTML §9.2.6 as plainly as possible (as in the `sse_parser` target), from `last_event_id`.
fn reference(stream: &str, comments: bool, last_event_id: &str) -> Outcome {
    let mut items = Vec::new();
    let (mut data, mut event_type, mut block_retry) = (String::new(), String::new(), None);
    let mut id_buffer = last_event_id.to_owned();
    let mut last_event_id = last_event_id.to_owned();
    let mut reconnection_time = None;
    let mut rest = stream;
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        rest = if rest[end..].starts_with("\r\n") {
            &rest[end + 2..]
        } else {
            &rest[end + 1..]
        };
        if line.is_empty() {
            last_event_id = id_buffer.clone();
            let retry = block_retry.take();
            let event_type = std::mem::take(&mut event_type);
            if data.is_empty() {
                continue;
            }
            let mut value = std::mem::take(&mut data);
            value.pop();
            let mut event = SseEvent::new(&event_type, value).with_id(&last_event_id);
            if let Some(retry) = retry {
                event = event.with_retry(retry);
            }
            items.push(Item::Event(event));
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "" if comments => items.push(Item::Comment(value.to_owned())),
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => id_buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                let millis = value.bytes().fold(0u64, |acc, d| {
                    acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                let retry = Duration::from_millis(millis);
                reconnection_time = Some(retry);
                block_retry = Some(retry);
                items.push(Item::Retry(retry));
            }
            _ => {}
        }
    }
    assert_eq!(rest, "", "output ends inside a line");
    Outcome {
        items,
        last_event_id,
        reconnection_time,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(flags) = input.byte() else {
        return;
    };
    let comments = flags & 2 != 0;
    let mut resumed = String::new();
    let mut writer = if flags & 1 != 0 {
        resumed = input.string();
        let resuming = SseWriter::resuming(&resumed).map(|writer| {
            assert_eq!(writer.client_last_event_id(), resumed);
        });
        if !check_refusal(resuming, &refusals(None, &resumed), "resumed ID") {
            // A client never holds such an ID (the writer would refuse to send it).
            return;
        }
        SseWriter::resuming(&resumed).unwrap()
    } else {
        SseWriter::new()
    };
    assert_eq!(writer.client_last_event_id(), resumed);

    let mut out: Vec<u8> = Vec::new();
    let mut expected = Vec::new();
    let mut reconnection_time = None;
    while let Some(op) = input.byte() {
        let before_len = out.len();
        let before_id = writer.client_last_event_id().to_owned();
        let accepted = match op % 4 {
            0 => {
                let event_type = input.string();
                let data = input.string();
                let id = input.string();
                let retry = (op & 16 != 0).then(|| input.retry());
                let mut event = SseEvent::new(&event_type, data.clone()).with_id(&id);
                if let Some(retry) = retry {
                    event = event.with_retry(retry);
                }
                // An ID the client holds already is not written, and so not checked.
                let held = id == writer.client_last_event_id();
                let reasons = refusals(Some(&event_type), if held { "" } else { &id });
                let accepted =
                    check_refusal(writer.write_event(&mut out, &event), &reasons, "event");
                if accepted {
                    let mut parsed =
                        SseEvent::new(&event_type, lines(&data).join("\n")).with_id(&id);
                    if let Some(retry) = retry {
                        let retry = on_the_wire(retry);
                        parsed = parsed.with_retry(retry);
                        expected.push(Item::Retry(retry));
                        reconnection_time = Some(retry);
                    }
                    expected.push(Item::Event(parsed));
                    assert_eq!(writer.client_last_event_id(), id);
                }
                accepted
            }
            1 => {
                let id = input.string();
                let reasons = refusals(None, &id);
                let accepted = check_refusal(writer.write_id(&mut out, &id), &reasons, "id");
                if accepted {
                    assert_eq!(writer.client_last_event_id(), id);
                }
                accepted
            }
            2 => {
                let comment = input.string();
                writer.write_comment(&mut out, &comment);
                if comments {
                    expected.extend(lines(&comment).into_iter().map(Item::Comment));
                }
                true
            }
            _ => {
                let retry = input.retry();
                writer.write_retry(&mut out, retry);
                let retry = on_the_wire(retry);
                expected.push(Item::Retry(retry));
                reconnection_time = Some(retry);
                true
            }
        };
        if !accepted {
            assert_eq!(out.len(), before_len, "a refused call wrote something");
            assert_eq!(
                writer.client_last_event_id(),
                before_id,
                "a refused call changed the ID"
            );
        }
    }

    let text = std::str::from_utf8(&out).expect("the writer's output is UTF-8");
    assert!(!text.contains('\r'), "CR on the wire: {text:?}");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "unterminated line: {text:?}"
    );

    let want = Outcome {
        items: expected,
        last_event_id: writer.client_last_event_id().to_owned(),
        reconnection_time,
    };
    let mut parser = SseParser::new();
    parser.set_report_comments(comments);
    parser.set_last_event_id(&resumed);
    let mut log = Log::default();
    parser
        .feed(&out, &mut log)
        .expect("kdnet's parser reads the writer's output");
    parser
        .finish(&mut log)
        .expect("kdnet's parser reads the writer's output");
    let got = Outcome {
        items: log.0,
        last_event_id: parser.last_event_id().to_owned(),
        reconnection_time: parser.reconnection_time(),
    };
    assert_eq!(
        got, want,
        "kdnet's parser vs what was written; stream {text:?}"
    );
    assert_eq!(
        reference(text, comments, &resumed),
        want,
        "reference parse vs what was written; stream {text:?}"
    );
});
