//! The headers of a call as one JSON object attribute (`llmtap.request.headers`,
//! `llmtap.response.headers`): redacted by the allowlist, capped, written in one pass.
//!
//! The object is the one a sorted JSON map gives: names lower-cased and in byte order, the
//! values of a repeated header joined by `", "` in the order they came, each value capped at
//! [`MAX_HEADER_VALUE_BYTES`]. Headers that do not fit in [`MAX_HEADERS_JSON_BYTES`] are left
//! out and counted under [`OMITTED_HEADERS_KEY`] (which takes the place of a header of that
//! name).

use std::borrow::Cow;
use std::fmt::Write;

use crate::redact::Redactor;

use super::cut_cow;
use super::fit::{escaped_len, push_escaped, push_json_str};

/// Cap on each headers JSON attribute; two of them plus the rest stay far below Loki's 64 KB.
const MAX_HEADERS_JSON_BYTES: usize = 12 * 1024;
/// Cap on one header value inside the headers JSON.
const MAX_HEADER_VALUE_BYTES: usize = 1024;
/// Key used in the headers JSON when headers had to be left out to respect the cap.
const OMITTED_HEADERS_KEY: &str = "llmtap.omitted_headers";

/// Redacted headers as a JSON object string (lower-case names, repeated headers joined by ", ").
pub(super) fn headers_json(redactor: &Redactor, headers: &[(String, String)]) -> String {
    let mut kept: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::with_capacity(headers.len());
    let mut size = 2;
    let mut omitted = 0usize;
    for (name, value) in headers {
        let value = cut_cow(redactor.redact_header(name, value), MAX_HEADER_VALUE_BYTES);
        let name = lower_case(name);
        let cost = escaped_len(&name) + escaped_len(&value) + 6;
        if size + cost > MAX_HEADERS_JSON_BYTES - 64 {
            omitted += 1;
            continue;
        }
        size += cost;
        kept.push((name, value));
    }
    // Stable: the values of one name stay in the order they came.
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    write_object(&kept, omitted, size)
}

/// The object of sorted `(name, value)` pairs, plus the omitted count when there is one.
fn write_object(kept: &[(Cow<'_, str>, Cow<'_, str>)], omitted: usize, size: usize) -> String {
    let mut out = String::with_capacity(size + 32);
    out.push('{');
    let mut count_written = omitted == 0;
    for group in kept.chunk_by(|a, b| a.0 == b.0) {
        let name = group[0].0.as_ref();
        if !count_written && name >= OMITTED_HEADERS_KEY {
            write_count(&mut out, omitted);
            count_written = true;
            if name == OMITTED_HEADERS_KEY {
                continue;
            }
        }
        if out.len() > 1 {
            out.push(',');
        }
        push_json_str(&mut out, name);
        out.push_str(":\"");
        for (at, (_, value)) in group.iter().enumerate() {
            if at > 0 {
                out.push_str(", ");
            }
            push_escaped(&mut out, value);
        }
        out.push('"');
    }
    if !count_written {
        write_count(&mut out, omitted);
    }
    out.push('}');
    out
}

fn write_count(out: &mut String, omitted: usize) {
    if out.len() > 1 {
        out.push(',');
    }
    push_json_str(out, OMITTED_HEADERS_KEY);
    out.push(':');
    // Writing to a String cannot fail.
    let _ = write!(out, "{omitted}");
}

/// `name` in ASCII lower case, borrowed when it already is (HTTP/2 and hyper's names are).
fn lower_case(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}
