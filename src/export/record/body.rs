//! The logged bodies: each captured body decoded (gzip, br, deflate, zstd undone), made text and
//! redacted, then written into the JSON document that is the record's log line.
//!
//! A body without a content-encoding is not copied: its text borrows the captured bytes (when
//! they are valid UTF-8) and stays borrowed unless redaction changes it.

use std::borrow::Cow;

use crate::capture::CapturedBody;
use crate::providers::decode::decode_body;
use crate::redact::Redactor;

use super::RecordContext;
use super::fit::push_json_str;

/// Longest trailing token removed from a cut body, so a key split by the cut leaves no partial trace.
const MAX_TRAILING_TOKEN: usize = 512;

/// A body as it will be logged: decoded, redacted text (before fitting to the record size).
#[derive(Debug)]
pub(super) struct LoggedBody<'a> {
    /// Decoded bytes, kept for the request parser.
    pub(super) decoded: Option<Cow<'a, [u8]>>,
    pub(super) text: Cow<'a, str>,
    pub(super) truncated: bool,
    pub(super) decode_error: Option<String>,
}

impl<'a> LoggedBody<'a> {
    pub(super) fn decode(body: &'a CapturedBody, ctx: &RecordContext<'_>) -> LoggedBody<'a> {
        match decoded_bytes(body, ctx.body_decode_limit) {
            Ok((decoded, cut)) => {
                let truncated = body.truncated || cut;
                let text = match &decoded {
                    Cow::Borrowed(bytes) => lossy(bytes),
                    Cow::Owned(bytes) => Cow::Owned(lossy(bytes).into_owned()),
                };
                LoggedBody {
                    decoded: Some(decoded),
                    text: redacted(ctx.redactor, text, truncated),
                    truncated,
                    decode_error: None,
                }
            }
            Err(error) => LoggedBody {
                decoded: None,
                text: Cow::Borrowed(""),
                truncated: true,
                decode_error: Some(error),
            },
        }
    }
}

/// The bytes as text, invalid UTF-8 replaced by U+FFFD (`from_utf8_lossy`, with the fast
/// check of valid text first).
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The body's bytes decoded, at most `limit` of them, and whether the limit cut them; a body
/// without a content-encoding is borrowed as it is (what the identity decoder would give).
fn decoded_bytes(body: &CapturedBody, limit: usize) -> Result<(Cow<'_, [u8]>, bool), String> {
    match body.content_encoding.as_deref() {
        None => {
            let kept = body.bytes.get(..limit).unwrap_or(&body.bytes);
            Ok((Cow::Borrowed(kept), body.bytes.len() > limit))
        }
        encoding => {
            let (decoded, cut) =
                decode_body(encoding, &body.bytes, limit).map_err(|e| e.to_string())?;
            Ok((Cow::Owned(decoded), cut))
        }
    }
}

/// `text` redacted; a cut body loses its partial token at the cut first (a key split there
/// would escape the patterns).
fn redacted<'a>(redactor: &Redactor, text: Cow<'a, str>, truncated: bool) -> Cow<'a, str> {
    match text {
        Cow::Borrowed(text) => {
            let whole = if truncated {
                strip_trailing_token(text)
            } else {
                text
            };
            redactor.redact_text(whole)
        }
        Cow::Owned(mut text) => {
            if truncated {
                let kept = strip_trailing_token(&text).len();
                text.truncate(kept);
            }
            let changed = match redactor.redact_text(&text) {
                Cow::Owned(changed) => Some(changed),
                Cow::Borrowed(_) => None,
            };
            Cow::Owned(changed.unwrap_or(text))
        }
    }
}

/// The log body: `{"request":{…},"response":{…}}`, each part
/// `{"body":…,"truncated":…}` or `{"truncated":true,"decode_error":…}` (the shape and bytes
/// serde_json gives the same document).
pub(super) fn render(
    request: (&LoggedBody<'_>, &str, bool),
    response: (&LoggedBody<'_>, &str, bool),
    capacity: usize,
) -> String {
    let mut out = String::with_capacity(capacity);
    out.push_str("{\"request\":");
    write_part(&mut out, request);
    out.push_str(",\"response\":");
    write_part(&mut out, response);
    out.push('}');
    out
}

/// One part: the logged text (unless the body could not be decoded) and its flags;
/// `trimmed` = the text was cut to fit the record.
fn write_part(out: &mut String, (logged, text, trimmed): (&LoggedBody<'_>, &str, bool)) {
    out.push('{');
    if logged.decode_error.is_none() {
        out.push_str("\"body\":");
        push_json_str(out, text);
        out.push(',');
    }
    let truncated = logged.truncated || trimmed;
    out.push_str(if truncated {
        "\"truncated\":true"
    } else {
        "\"truncated\":false"
    });
    if let Some(error) = &logged.decode_error {
        out.push_str(",\"decode_error\":");
        push_json_str(out, error);
    }
    out.push('}');
}

/// `s` without a trailing run of token characters (bounded), i.e. whatever the cut split.
pub(super) fn strip_trailing_token(s: &str) -> &str {
    let is_token = |c: char| c.is_ascii_alphanumeric() || "-_+/=.~".contains(c);
    let mut end = s.len();
    for (at, c) in s.char_indices().rev().take(MAX_TRAILING_TOKEN) {
        if !is_token(c) {
            break;
        }
        end = at;
    }
    &s[..end]
}
