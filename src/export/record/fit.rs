//! Fitting a record to Loki's limits: the bodies are trimmed, fairly, so that body plus
//! attributes stay within `--max-record-bytes` and the log line within Loki's line size, by
//! exact JSON-escape arithmetic.

use crate::export::attributes as key;

use super::body::{LoggedBody, render};

/// The final log body and the flags it implies.
pub(super) struct Fitted {
    pub(super) body: String,
    pub(super) request_truncated: bool,
    pub(super) response_truncated: bool,
    pub(super) trimmed: bool,
}

/// Protobuf bytes around one attribute's key and value (KeyValue, AnyValue: tags and lengths).
pub(super) const ATTRIBUTE_FRAMING: usize = 16;
/// Protobuf bytes of a record besides attributes and body text: timestamps, severity, body framing.
pub(super) const RECORD_FRAMING: usize = 64;

/// Boolean attributes still to be added after fitting (truncated ×2, trimmed), counted up front.
const FLAG_ATTRS_SIZE: usize = key::LLMTAP_REQUEST_BODY_TRUNCATED.len()
    + key::LLMTAP_RESPONSE_BODY_TRUNCATED.len()
    + key::LLMTAP_RECORD_TRIMMED.len()
    + 3 * 5;

/// Serializes the bodies, trimming them (fairly) so body + attributes ≤ `max_record_bytes`
/// and the body (the Loki line) ≤ `max_record_bytes` × 1000/1024.
pub(super) fn fit_bodies(
    request: &LoggedBody<'_>,
    response: &LoggedBody<'_>,
    attrs_size: usize,
    max_record_bytes: usize,
) -> Fitted {
    let skeleton = render((request, "", false), (response, "", false), 128).len();
    let record_room = max_record_bytes.saturating_sub(attrs_size + FLAG_ATTRS_SIZE);
    // Loki reads `max_line_size: 256KB` as 256,000 bytes: the line alone stays within
    // 1000/1024 of the record bound, so equal numbers on both sides (KiB here, KB there) fit.
    let line_room = max_record_bytes / 1024 * 1000;
    let budget = record_room.min(line_room).saturating_sub(skeleton);
    let (request_text, response_text) = fit_texts(&request.text, &response.text, budget);
    let request_trimmed = request_text.len() < request.text.len();
    let response_trimmed = response_text.len() < response.text.len();
    let capacity = skeleton + request_text.len() + response_text.len() + 64;
    let body = render(
        (request, request_text, request_trimmed),
        (response, response_text, response_trimmed),
        capacity,
    );
    Fitted {
        body,
        request_truncated: request.truncated || request_trimmed,
        response_truncated: response.truncated || response_trimmed,
        trimmed: request_trimmed || response_trimmed,
    }
}

/// The two texts cut so that their escaped lengths share `budget` fairly.
fn fit_texts<'t>(request: &'t str, response: &'t str, budget: usize) -> (&'t str, &'t str) {
    // Escaping at most sextuples a text: when even that fits, both go whole, as they would below.
    if (request.len() + response.len()).saturating_mul(6) <= budget {
        return (request, response);
    }
    let request_len = escaped_len(request);
    let response_len = escaped_len(response);
    let (request_budget, response_budget) = share(budget, request_len, response_len);
    (
        cut_fitting(request, request_len, request_budget),
        cut_fitting(response, response_len, response_budget),
    )
}

/// `s` whole when its escaped length (already known) fits, else cut to the budget.
fn cut_fitting(s: &str, escaped: usize, budget: usize) -> &str {
    if escaped <= budget {
        s
    } else {
        cut_escaped(s, budget)
    }
}

/// Splits `budget` between two lengths: each gets half, and what one leaves unused goes to the other.
pub(super) fn share(budget: usize, a: usize, b: usize) -> (usize, usize) {
    if a + b <= budget {
        return (a, b);
    }
    let half = budget / 2;
    if a <= half {
        (a, budget - a)
    } else if b <= half {
        (budget - b, b)
    } else {
        (budget - half, half)
    }
}

/// `s` as a JSON string: quoted and escaped exactly as serde_json does it.
pub(super) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    push_escaped(out, s);
    out.push('"');
}

/// `s` escaped for the inside of a JSON string, exactly as serde_json does it: `"`, `\\`
/// and the control characters, with the short forms `\b \f \n \r \t`; nothing else.
pub(super) fn push_escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut clean_from = 0;
    let mut at = 0;
    while at < bytes.len() {
        // Eight bytes at a time: clean ones are skipped, else the first to escape is found.
        let word = bytes
            .get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok());
        let escape_at = match word {
            Some(word) => match escapes(u64::from_le_bytes(word)) {
                0 => {
                    at += 8;
                    continue;
                }
                mask => at + (mask.trailing_zeros() / 8) as usize,
            },
            None if escaped_byte_len(bytes[at]) > 1 => at,
            None => {
                at += 1;
                continue;
            }
        };
        // Only ASCII bytes are escaped: `escape_at` is a char boundary.
        out.push_str(&s[clean_from..escape_at]);
        push_escape(out, bytes[escape_at]);
        clean_from = escape_at + 1;
        at = clean_from;
    }
    out.push_str(&s[clean_from..]);
}

/// The high bit of each of eight bytes that JSON escapes (below 0x20, `"` or `\\`), by the
/// word tricks "has a byte less than n" and "has a zero byte": a bit above the lowest one
/// may be wrong, the lowest one is exact (so is "none").
fn escapes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    control | quote | backslash
}

fn push_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        b'\t' => out.push_str("\\t"),
        0x08 => out.push_str("\\b"),
        0x0c => out.push_str("\\f"),
        _ => {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

/// Bytes `s` takes inside a JSON string, exactly as serde_json escapes it.
/// Byte-wise: only ASCII bytes are ever escaped, and a UTF-8 sequence counts its own length.
pub(super) fn escaped_len(s: &str) -> usize {
    s.bytes().map(escaped_byte_len).sum()
}

fn escaped_byte_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
        b if b < 0x20 => 6,
        _ => 1,
    }
}

fn escaped_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Longest prefix of `s`, cut on a char boundary, whose JSON-escaped size is ≤ `budget`.
pub(super) fn cut_escaped(s: &str, budget: usize) -> &str {
    // Escaping never shrinks text: a body no longer than the budget in escaped form needs no walk.
    if s.len() <= budget && escaped_len(s) <= budget {
        return s;
    }
    let mut used = 0;
    for (at, c) in s.char_indices() {
        used += escaped_char_len(c);
        if used > budget {
            return &s[..at];
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_check_finds_the_first_byte_to_escape() {
        let fillers = [b'a', 0xc3, 0x7f, b' ', b'"', 0x1f, 0x20, b'\\', 0x80, 0xff];
        for byte in 0..=u8::MAX {
            for filler in fillers {
                for at in 0..8 {
                    let mut word = [filler; 8];
                    word[at] = byte;
                    let first = word.iter().position(|b| escaped_byte_len(*b) > 1);
                    let mask = escapes(u64::from_le_bytes(word));
                    let found = (mask != 0).then(|| (mask.trailing_zeros() / 8) as usize);
                    assert_eq!(found, first, "{word:?}");
                }
            }
        }
    }
}
