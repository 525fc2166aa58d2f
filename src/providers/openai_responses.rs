//! OpenAI Responses: the response object as JSON, or `response.*` events ending in completed/failed/incomplete.

use serde::Deserialize;

use super::acc::{Acc, count, json_string};
use super::request::RequestKeys;
use super::response::Format;
use super::shape::{Api, Framing, Provider};
use super::skim::{Path, Picker, Seg};
use super::sse::SseEvent;
use super::{ApiShape, ErrorShape, Usage};

impl ApiShape {
    /// OpenAI Responses, `POST /v1/responses`.
    #[allow(non_upper_case_globals)]
    pub const OpenAiResponses: ApiShape = ApiShape::named("OpenAiResponses");
}

/// OpenAI Responses.
pub(crate) struct Responses(Api);
pub(crate) static RESPONSES: Responses = Responses(Api {
    shape: ApiShape::OpenAiResponses,
    operation: "chat",
    provider: "openai",
    errors: ErrorShape::OpenAi,
    keys: RequestKeys::top_level(&[&[&[b"max_output_tokens"]]]),
    framing: Framing::Sse,
});

impl Provider for Responses {
    fn api(&self) -> &Api {
        &self.0
    }
    fn recognises(&self, path: &str) -> bool {
        path.ends_with("/responses")
    }
    fn response_format(&self) -> Box<dyn Format> {
        Box::new(OpenAiResponses::default())
    }
}

#[derive(Debug, Default, Deserialize)]
struct InputDetails {
    #[serde(default, deserialize_with = "count")]
    cached_tokens: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct OutputDetails {
    #[serde(default, deserialize_with = "count")]
    reasoning_tokens: Option<i64>,
}

/// `input_tokens` already includes the cached ones.
#[derive(Debug, Default, Deserialize)]
struct RawUsage {
    #[serde(default, deserialize_with = "count")]
    input_tokens: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    output_tokens: Option<i64>,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct IncompleteDetails {
    reason: Option<String>,
}

/// What one document (event or body) said, applied when it ends: field order inside it is free.
#[derive(Debug, Default)]
struct Doc {
    kind: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct OpenAiResponses {
    acc: Acc,
    doc: Doc,
}

/// The path below the response object: `response.…` in events, top level in a JSON body.
fn in_response<'a>(segs: &[Seg<'a>; 4]) -> Option<Seg<'a>> {
    match segs {
        [Seg::Key(b"response"), key @ Seg::Key(_), Seg::End, _] => Some(*key),
        [key @ Seg::Key(_), Seg::End, ..] => Some(*key),
        _ => None,
    }
}

impl Picker for OpenAiResponses {
    fn want(&self, path: Path<'_>) -> bool {
        let segs = path.segs();
        if let [Seg::Key(b"type" | b"code" | b"message"), Seg::End, ..] = segs {
            return true;
        }
        match in_response(&segs) {
            Some(Seg::Key(b"usage" | b"status" | b"incomplete_details" | b"error")) => true,
            Some(Seg::Key(b"model")) => self.acc.model.is_none(),
            Some(Seg::Key(b"id")) => self.acc.id.is_none(),
            _ => false,
        }
    }

    fn take(&mut self, path: Path<'_>, raw: &[u8]) {
        let segs = path.segs();
        let top = match segs {
            [Seg::Key(b"type"), Seg::End, ..] => Some(&mut self.doc.kind),
            [Seg::Key(b"code"), Seg::End, ..] => Some(&mut self.doc.code),
            [Seg::Key(b"message"), Seg::End, ..] => Some(&mut self.doc.message),
            _ => None,
        };
        if let Some(slot) = top {
            *slot = json_string(raw);
            return;
        }
        match in_response(&segs) {
            Some(Seg::Key(b"usage")) => self.merge(raw),
            Some(Seg::Key(b"status")) => self.doc.status = json_string(raw),
            Some(Seg::Key(b"incomplete_details")) => {
                self.doc.reason = serde_json::from_slice::<Option<IncompleteDetails>>(raw)
                    .ok()
                    .flatten()
                    .and_then(|d| d.reason)
                    .filter(|r| !r.is_empty());
            }
            Some(Seg::Key(b"error")) => self.acc.set_error(raw),
            Some(Seg::Key(b"model")) => Acc::first(&mut self.acc.model, raw),
            Some(Seg::Key(b"id")) => Acc::first(&mut self.acc.id, raw),
            _ => {}
        }
    }
}

impl OpenAiResponses {
    fn merge(&mut self, raw: &[u8]) {
        let Ok(Some(u)) = serde_json::from_slice::<Option<RawUsage>>(raw) else {
            return;
        };
        self.acc.merge_usage(Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_read_input_tokens: u.input_tokens_details.and_then(|d| d.cached_tokens),
            cache_creation_input_tokens: None,
            reasoning_output_tokens: u.output_tokens_details.and_then(|d| d.reasoning_tokens),
        });
    }
}

impl Format for OpenAiResponses {
    fn end_doc(&mut self, event: Option<&SseEvent<'_>>) {
        let doc = std::mem::take(&mut self.doc);
        let kind = doc.kind.as_deref();
        let error_event = kind == Some("error") || event.is_some_and(|e| e.name == b"error");
        if error_event {
            self.acc.set_error_parts(doc.code, doc.message);
        }
        // `in_progress` and `queued` are not outcomes.
        let outcome = match doc.status.as_deref() {
            Some("incomplete") => Some(doc.reason.unwrap_or_else(|| "incomplete".to_string())),
            Some(s @ ("completed" | "failed" | "cancelled")) => Some(s.to_string()),
            _ => None,
        };
        if let Some(outcome) = outcome {
            self.acc.set_finish(0, outcome);
        }
        if matches!(
            kind,
            Some("response.completed" | "response.failed" | "response.incomplete")
        ) {
            self.acc.terminal = true;
        }
    }

    fn saw_terminal(&self) -> bool {
        self.acc.terminal
    }

    fn into_acc(self: Box<Self>) -> Acc {
        self.acc
    }
}

#[cfg(test)]
mod tests {
    use crate::providers::testkit::{self, Case, check_fixtures};
    use crate::providers::{ApiShape, UsageSource};

    fn case(name: &'static str, file: &'static str) -> Case {
        testkit::case(
            ApiShape::OpenAiResponses,
            Some("text/event-stream; charset=utf-8"),
            name,
            file,
        )
    }

    #[test]
    fn openai_responses_fixtures() {
        check_fixtures(
            "openai_responses",
            &[
                Case {
                    content_type: Some("application/json"),
                    model: Some("gpt-5-2025-08-07"),
                    id: Some("resp_68b1f0c3a2f08190a1d0b6c6e5a4f3e20b9d8c7b6a5f4e3d"),
                    finish: &["completed"],
                    usage: [Some(3214), Some(845), Some(2944), None, Some(640)],
                    source: UsageSource::Response,
                    is_stream: false,
                    ..case("json", "response.json")
                },
                Case {
                    content_type: Some("application/json"),
                    model: Some("gpt-5-mini-2025-08-07"),
                    id: Some("resp_incomplete0001"),
                    finish: &["max_output_tokens"],
                    usage: [Some(120), Some(256), Some(0), None, Some(256)],
                    source: UsageSource::Response,
                    is_stream: false,
                    ..case("json incomplete", "response_incomplete.json")
                },
                Case {
                    model: Some("gpt-4.1-2025-04-14"),
                    id: Some("resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654"),
                    finish: &["completed"],
                    usage: [Some(37), Some(11), Some(0), None, Some(0)],
                    source: UsageSource::Stream,
                    ..case("stream", "stream.sse")
                },
                Case {
                    model: Some("gpt-5-2025-08-07"),
                    id: Some("resp_stream_incomplete_01"),
                    finish: &["max_output_tokens"],
                    usage: [Some(52), Some(64), Some(0), None, Some(64)],
                    source: UsageSource::Stream,
                    ..case("stream incomplete", "stream_incomplete.sse")
                },
                Case {
                    model: Some("gpt-4.1-2025-04-14"),
                    id: Some("resp_stream_failed_01"),
                    finish: &["failed"],
                    source: UsageSource::Absent,
                    error: Some(("server_error", "The model failed to generate a response.")),
                    ..case("stream failed", "stream_failed.sse")
                },
                Case {
                    model: Some("gpt-4.1-2025-04-14"),
                    id: Some("resp_stream_cut_01"),
                    source: UsageSource::StreamCutShort,
                    ..case("stream cut", "stream_cut.sse")
                },
                Case {
                    model: Some("gpt-4.1-2025-04-14"),
                    id: Some("resp_stream_error_01"),
                    source: UsageSource::StreamCutShort,
                    error: Some((
                        "rate_limit_exceeded",
                        "Rate limit reached for gpt-4.1 on tokens per min (TPM).",
                    )),
                    ..case("stream error event", "stream_error.sse")
                },
                Case {
                    content_type: Some("application/json"),
                    status: 400,
                    error: Some((
                        "invalid_request_error",
                        "Unsupported parameter: 'temperature' is not supported with this model.",
                    )),
                    is_stream: false,
                    ..case("400", "error_400.json")
                },
            ],
            &[],
        );
    }
}
