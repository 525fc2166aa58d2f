//! What provider formats share: the facts gathered so far, per-choice finish reasons, and the
//! JSON helpers that read strings and token counts without trusting them.

use serde::Deserialize;

use super::Usage;

/// Facts gathered so far by a provider parser.
#[derive(Debug, Default)]
pub(crate) struct Acc {
    pub(crate) model: Option<String>,
    pub(crate) id: Option<String>,
    /// (choice/candidate index, reason); one reason per index, the latest wins.
    pub(crate) finish: Vec<(u64, String)>,
    pub(crate) usage: Usage,
    pub(crate) usage_seen: bool,
    pub(crate) error_type: Option<String>,
    pub(crate) error_message: Option<String>,
    /// The stream's terminal event was seen.
    pub(crate) terminal: bool,
}

/// Choices (or candidates) are few; a pathological body cannot grow the list past this.
const MAX_FINISH: usize = 64;

impl Acc {
    /// First non-empty value wins: later chunks repeat the same model and id.
    pub(crate) fn first(slot: &mut Option<String>, raw: &[u8]) {
        if slot.is_none() {
            *slot = json_string(raw);
        }
    }

    pub(crate) fn set_finish(&mut self, index: u64, reason: String) {
        if let Some(entry) = self.finish.iter_mut().find(|(i, _)| *i == index) {
            entry.1 = reason;
        } else if self.finish.len() < MAX_FINISH {
            self.finish.push((index, reason));
        }
    }

    /// A provider error object (or string) → error type and message, first error wins.
    pub(crate) fn set_error(&mut self, raw: &[u8]) {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(raw) else {
            return;
        };
        let text = |key: &str| {
            value
                .get(key)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        let kind = text("type")
            .or_else(|| text("status"))
            .or_else(|| text("code"));
        let message = text("message").or_else(|| value.as_str().filter(|s| !s.is_empty()));
        self.set_error_parts(kind.map(str::to_string), message.map(str::to_string));
    }

    /// An error's type and message, found apart; the first error wins.
    pub(crate) fn set_error_parts(&mut self, kind: Option<String>, message: Option<String>) {
        if self.error_type.is_none() && self.error_message.is_none() {
            self.error_type = kind;
            self.error_message = message;
        }
    }

    /// Replace the usage fields a usage object carries (stream usage is cumulative, never added).
    pub(crate) fn merge_usage(&mut self, u: Usage) {
        let slots = [
            (&mut self.usage.input_tokens, u.input_tokens),
            (&mut self.usage.output_tokens, u.output_tokens),
            (
                &mut self.usage.cache_read_input_tokens,
                u.cache_read_input_tokens,
            ),
            (
                &mut self.usage.cache_creation_input_tokens,
                u.cache_creation_input_tokens,
            ),
            (
                &mut self.usage.reasoning_output_tokens,
                u.reasoning_output_tokens,
            ),
        ];
        for (slot, new) in slots {
            if new.is_some() {
                self.usage_seen = true;
                *slot = new;
            }
        }
    }

    /// The finish reasons in choice order (the list is emptied).
    pub(crate) fn finish_reasons(&mut self) -> Vec<String> {
        self.finish.sort_by_key(|(i, _)| *i);
        self.finish.drain(..).map(|(_, r)| r).collect()
    }
}

/// Finish reasons of one document keyed by array position, paired with the `index` field when it comes.
#[derive(Debug, Default)]
pub(crate) struct Choices {
    items: Vec<(u64, Option<u64>, Option<String>)>,
}

impl Choices {
    fn entry(&mut self, pos: u64) -> Option<&mut (u64, Option<u64>, Option<String>)> {
        let at = match self.items.iter().position(|e| e.0 == pos) {
            Some(at) => at,
            None if self.items.len() < MAX_FINISH => {
                self.items.push((pos, None, None));
                self.items.len().saturating_sub(1)
            }
            None => return None,
        };
        self.items.get_mut(at)
    }

    pub(crate) fn set_index(&mut self, pos: u64, raw: &[u8]) {
        if let (Some(e), Some(i)) = (self.entry(pos), json_count(raw)) {
            e.1 = u64::try_from(i).ok();
        }
    }

    pub(crate) fn set_reason(&mut self, pos: u64, raw: &[u8]) {
        let Some(reason) = json_string(raw) else {
            return;
        };
        if let Some(e) = self.entry(pos) {
            e.2 = Some(reason);
        }
    }

    /// End of the document: record the reasons seen; true if there was any.
    pub(crate) fn flush(&mut self, acc: &mut Acc) -> bool {
        let mut any = false;
        for (pos, index, reason) in self.items.drain(..) {
            if let Some(reason) = reason {
                acc.set_finish(index.unwrap_or(pos), reason);
                any = true;
            }
        }
        any
    }
}

/// Input tokens as OTel counts them, cached ones included, for providers whose own input count
/// leaves out the tokens read from and written to the cache (Anthropic, Bedrock). Counts are
/// never negative (see [`count`]): a hostile upstream's huge ones saturate.
pub(crate) fn with_cached(
    input: Option<i64>,
    cache_read: Option<i64>,
    cache_write: Option<i64>,
) -> Option<i64> {
    let cached = cache_read
        .unwrap_or(0)
        .saturating_add(cache_write.unwrap_or(0));
    input.map(|i| i.saturating_add(cached))
}

/// A JSON string value, if non-empty.
pub(crate) fn json_string(raw: &[u8]) -> Option<String> {
    serde_json::from_slice::<String>(raw)
        .ok()
        .filter(|s| !s.is_empty())
}

/// A token count: non-negative integers, integral floats and numeric strings; anything else
/// (negative, fractional, past 2^53 as a float, past `i64::MAX`) is unknown.
pub(crate) fn json_count(raw: &[u8]) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_slice(raw).ok()?;
    count_of(&value)
}

/// Floats up to this are exact integers (2^53); beyond, a "count" is not one.
const MAX_FLOAT_COUNT: f64 = 9_007_199_254_740_992.0;

fn count_of(value: &serde_json::Value) -> Option<i64> {
    let count = match value {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_FLOAT_COUNT)
                // In range and integral: the conversion is exact.
                .map(|f| f as i64)
        }),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    count.filter(|n| *n >= 0)
}

/// serde `deserialize_with` for token counts inside usage objects.
pub(crate) fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(count_of(&serde_json::Value::deserialize(d)?))
}
