//! Anthropic Messages: JSON message bodies and the `message_start` … `message_stop` event stream.

use serde::Deserialize;

use super::acc::{Acc, count, json_string, with_cached};
use super::request::RequestKeys;
use super::response::Format;
use super::shape::{Api, Framing, Provider};
use super::skim::{Path, Picker, Seg};
use super::sse::SseEvent;
use super::{ApiShape, ErrorShape, Usage};

impl ApiShape {
    /// Anthropic Messages, `POST /v1/messages`.
    #[allow(non_upper_case_globals)]
    pub const AnthropicMessages: ApiShape = ApiShape::named("AnthropicMessages");
}

/// Anthropic Messages.
pub(crate) struct Messages(Api);
pub(crate) static MESSAGES: Messages = Messages(Api {
    shape: ApiShape::AnthropicMessages,
    operation: "chat",
    provider: "anthropic",
    errors: ErrorShape::Anthropic,
    keys: RequestKeys::top_level(&[&[&[b"max_tokens"]]]),
    framing: Framing::Sse,
});

impl Provider for Messages {
    fn api(&self) -> &Api {
        &self.0
    }
    fn recognises(&self, path: &str) -> bool {
        path.ends_with("/v1/messages")
    }
    fn response_format(&self) -> Box<dyn Format> {
        Box::new(Anthropic::default())
    }
}

/// Anthropic's own counts; `input_tokens` there excludes cached tokens, OTel's includes them.
#[derive(Debug, Default, Deserialize)]
struct RawUsage {
    #[serde(default, deserialize_with = "count")]
    input_tokens: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    output_tokens: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    cache_read_input_tokens: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    cache_creation_input_tokens: Option<i64>,
}

#[derive(Debug, Default)]
pub(crate) struct Anthropic {
    acc: Acc,
    raw: RawUsage,
    /// The current document's `type` (`message_stop` ends the stream).
    doc_type: Option<String>,
}

impl Anthropic {
    /// `message_delta.usage` is cumulative and may repeat input and cache counts: replace what it carries.
    fn merge(&mut self, raw: &[u8]) {
        let Ok(u) = serde_json::from_slice::<RawUsage>(raw) else {
            return;
        };
        let slots = [
            (&mut self.raw.input_tokens, u.input_tokens),
            (&mut self.raw.output_tokens, u.output_tokens),
            (
                &mut self.raw.cache_read_input_tokens,
                u.cache_read_input_tokens,
            ),
            (
                &mut self.raw.cache_creation_input_tokens,
                u.cache_creation_input_tokens,
            ),
        ];
        for (slot, new) in slots {
            if new.is_some() {
                *slot = new;
                self.acc.usage_seen = true;
            }
        }
    }
}

impl Picker for Anthropic {
    fn want(&self, path: Path<'_>) -> bool {
        use Seg::{End, Key};
        let known = |slot: &Option<String>| slot.is_some();
        match path.segs() {
            [Key(b"type" | b"usage" | b"stop_reason" | b"error"), End, ..] => true,
            [Key(b"message"), Key(b"usage" | b"stop_reason"), End, ..] => true,
            [Key(b"delta"), Key(b"stop_reason"), End, ..] => true,
            [Key(b"model"), End, ..] | [Key(b"message"), Key(b"model"), End, ..] => {
                !known(&self.acc.model)
            }
            [Key(b"id"), End, ..] | [Key(b"message"), Key(b"id"), End, ..] => !known(&self.acc.id),
            _ => false,
        }
    }

    fn take(&mut self, path: Path<'_>, raw: &[u8]) {
        use Seg::{End, Key};
        match path.segs() {
            [Key(b"type"), End, ..] => self.doc_type = json_string(raw),
            [Key(b"error"), End, ..] => self.acc.set_error(raw),
            [Key(b"model"), End, ..] | [_, Key(b"model"), End, ..] => {
                Acc::first(&mut self.acc.model, raw)
            }
            [Key(b"id"), End, ..] | [_, Key(b"id"), End, ..] => Acc::first(&mut self.acc.id, raw),
            [Key(b"usage"), End, ..] | [_, Key(b"usage"), End, ..] => self.merge(raw),
            [Key(b"stop_reason"), End, ..] | [_, Key(b"stop_reason"), End, ..] => {
                if let Some(reason) = json_string(raw) {
                    self.acc.set_finish(0, reason);
                }
            }
            _ => {}
        }
    }
}

impl Format for Anthropic {
    fn end_doc(&mut self, _event: Option<&SseEvent<'_>>) {
        if self.doc_type.take().as_deref() == Some("message_stop") {
            self.acc.terminal = true;
        }
    }

    fn saw_terminal(&self) -> bool {
        self.acc.terminal
    }

    fn into_acc(self: Box<Self>) -> Acc {
        let mut acc = self.acc;
        let r = self.raw;
        acc.usage = Usage {
            input_tokens: with_cached(
                r.input_tokens,
                r.cache_read_input_tokens,
                r.cache_creation_input_tokens,
            ),
            output_tokens: r.output_tokens,
            cache_read_input_tokens: r.cache_read_input_tokens,
            cache_creation_input_tokens: r.cache_creation_input_tokens,
            reasoning_output_tokens: None,
        };
        acc
    }
}

#[cfg(test)]
mod tests {
    use crate::providers::testkit::{Case, check_fixtures};
    use crate::providers::{ApiShape, UsageSource};

    const JSON: Option<&str> = Some("application/json");
    const SSE: Option<&str> = Some("text/event-stream; charset=utf-8");

    #[test]
    fn anthropic_fixtures() {
        let shape = ApiShape::AnthropicMessages;
        check_fixtures(
            "anthropic",
            &[
                Case {
                    name: "message json",
                    shape,
                    content_type: JSON,
                    status: 200,
                    file: "message.json",
                    model: Some("claude-sonnet-4-5-20250929"),
                    id: Some("msg_01XFDUDYJgAACzvnptvVoYEL"),
                    finish: &["end_turn"],
                    usage: [
                        Some(2095 + 1800 + 320),
                        Some(503),
                        Some(1800),
                        Some(320),
                        None,
                    ],
                    source: UsageSource::Response,
                    error: None,
                    is_stream: false,
                },
                Case {
                    name: "tool use json",
                    shape,
                    content_type: JSON,
                    status: 200,
                    file: "tool_use.json",
                    model: Some("claude-opus-4-1-20250805"),
                    id: Some("msg_01Aq9w938a90dw8q"),
                    finish: &["tool_use"],
                    usage: [Some(472), Some(89), Some(0), Some(0), None],
                    source: UsageSource::Response,
                    error: None,
                    is_stream: false,
                },
                Case {
                    name: "stream",
                    shape,
                    content_type: SSE,
                    status: 200,
                    file: "stream.sse",
                    model: Some("claude-sonnet-4-5-20250929"),
                    id: Some("msg_014p7gG3wDgGV9EUtLvnow3U"),
                    finish: &["end_turn"],
                    usage: [Some(12 + 2048 + 310), Some(87), Some(2048), Some(310), None],
                    source: UsageSource::Stream,
                    error: None,
                    is_stream: true,
                },
                Case {
                    name: "stream whose message_delta repeats input and cache counts",
                    shape,
                    content_type: SSE,
                    status: 200,
                    file: "stream_delta_full_usage.sse",
                    model: Some("claude-haiku-4-5-20251001"),
                    id: Some("msg_01Hq3Lz6b1dGZpZ8mXo5Ab2c"),
                    finish: &["max_tokens"],
                    usage: [Some(25 + 100), Some(64), Some(100), Some(0), None],
                    source: UsageSource::Stream,
                    error: None,
                    is_stream: true,
                },
                Case {
                    name: "stream cut after deltas",
                    shape,
                    content_type: SSE,
                    status: 200,
                    file: "stream_cut.sse",
                    model: Some("claude-sonnet-4-5-20250929"),
                    id: Some("msg_01CutCutCutCutCutCutCut1"),
                    finish: &[],
                    usage: [Some(30 + 5000), Some(1), Some(5000), Some(0), None],
                    source: UsageSource::StreamCutShort,
                    error: None,
                    is_stream: true,
                },
                Case {
                    name: "stream ending in an error event",
                    shape,
                    content_type: SSE,
                    status: 200,
                    file: "stream_error.sse",
                    model: Some("claude-sonnet-4-5-20250929"),
                    id: Some("msg_01ErrErrErrErrErrErrErr1"),
                    finish: &[],
                    usage: [Some(40), Some(1), Some(0), Some(0), None],
                    source: UsageSource::StreamCutShort,
                    error: Some(("overloaded_error", "Overloaded")),
                    is_stream: true,
                },
                Case {
                    name: "429",
                    shape,
                    content_type: JSON,
                    status: 429,
                    file: "error_429.json",
                    model: None,
                    id: None,
                    finish: &[],
                    usage: [None; 5],
                    source: UsageSource::Absent,
                    error: Some((
                        "rate_limit_error",
                        "This request would exceed the rate limit for your organization (a1b2c3) of 50,000 input tokens per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
                    )),
                    is_stream: false,
                },
                Case {
                    name: "400",
                    shape,
                    content_type: JSON,
                    status: 400,
                    file: "error_400.json",
                    model: None,
                    id: None,
                    finish: &[],
                    usage: [None; 5],
                    source: UsageSource::Absent,
                    error: Some(("invalid_request_error", "max_tokens: Field required")),
                    is_stream: false,
                },
                Case {
                    name: "529 overloaded (500-class)",
                    shape,
                    content_type: JSON,
                    status: 529,
                    file: "error_500.json",
                    model: None,
                    id: None,
                    finish: &[],
                    usage: [None; 5],
                    source: UsageSource::Absent,
                    error: Some(("api_error", "Internal server error")),
                    is_stream: false,
                },
            ],
            &[],
        );
    }
}
