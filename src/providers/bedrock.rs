//! AWS Bedrock Converse: `POST /model/{modelId}/converse` answers one JSON body,
//! `/model/{modelId}/converse-stream` an AWS event stream of `messageStart`,
//! `contentBlockStart`/`Delta`/`Stop`, `messageStop` (`stopReason`) and `metadata` (`usage`)
//! events. The model is named only in the path (a model id, an inference profile or an ARN,
//! percent-encoded).

use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::acc::{Acc, count, json_string, with_cached};
use super::eventstream::Headers;
use super::request::{Picked, RequestKeys};
use super::response::Format;
use super::shape::{Api, Framing, Provider};
use super::skim::{Path, Picker, Seg};
use super::sse::SseEvent;
use super::{ApiShape, ErrorShape, RequestFacts, Usage, strip_query};

impl ApiShape {
    /// Bedrock Converse, `POST /model/{modelId}/converse` and `/converse-stream`.
    #[allow(non_upper_case_globals)]
    pub const BedrockConverse: ApiShape = ApiShape::named("BedrockConverse");
}

/// Bedrock Converse and ConverseStream.
pub(crate) struct Converse(Api);
pub(crate) static CONVERSE: Converse = Converse(Api {
    shape: ApiShape::BedrockConverse,
    operation: "chat",
    provider: "aws.bedrock",
    errors: ErrorShape::Bedrock,
    keys: RequestKeys::limits_only(&[&[&[b"inferenceConfig", b"maxTokens"]]]),
    framing: Framing::EventStream,
});

/// The (still percent-encoded) model id of `/model/{modelId}/converse[-stream]`, and whether
/// the call streams.
fn converse_path(path: &str) -> Option<(&str, bool)> {
    let path = strip_query(path).trim_end_matches('/');
    let (rest, stream) = match path.strip_suffix("/converse-stream") {
        Some(rest) => (rest, true),
        None => (path.strip_suffix("/converse")?, false),
    };
    let (_, model) = rest.split_once("/model/")?;
    (!model.is_empty()).then_some((model, stream))
}

impl Provider for Converse {
    fn api(&self) -> &Api {
        &self.0
    }
    fn recognises(&self, path: &str) -> bool {
        converse_path(path).is_some()
    }
    /// The model (decoded) and the stream flag are in the path.
    fn request_facts(&self, picked: Picked, path: &str, _whole: bool) -> RequestFacts {
        let (model, stream) = converse_path(path).unzip();
        let model = model.map(|m| percent_decode_str(m).decode_utf8_lossy().into_owned());
        picked.facts(model, stream)
    }
    fn response_format(&self) -> Box<dyn Format> {
        Box::new(Bedrock::default())
    }
}

/// Bedrock's counts. `inputTokens` leaves out the tokens read from and written to the cache
/// (they are billed apart, and `totalTokens` adds all four), so OTel's input adds them back.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenUsage {
    #[serde(default, deserialize_with = "count")]
    input_tokens: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    output_tokens: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    cache_read_input_tokens: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    cache_write_input_tokens: Option<i64>,
}

/// What one document (a JSON body or one event's payload) said, applied once it ended whole:
/// an event-stream payload is only trusted after its message CRC.
#[derive(Debug, Default)]
struct Doc {
    usage: Option<TokenUsage>,
    stop_reason: Option<String>,
    /// An AWS JSON error's `__type` (its type is more often in a header llmtap does not see).
    kind: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Bedrock {
    acc: Acc,
    doc: Doc,
}

impl Bedrock {
    fn apply(&mut self, doc: Doc) {
        if let Some(u) = doc.usage {
            self.acc.merge_usage(Usage {
                input_tokens: with_cached(
                    u.input_tokens,
                    u.cache_read_input_tokens,
                    u.cache_write_input_tokens,
                ),
                output_tokens: u.output_tokens,
                cache_read_input_tokens: u.cache_read_input_tokens,
                cache_creation_input_tokens: u.cache_write_input_tokens,
                reasoning_output_tokens: None,
            });
        }
        if let Some(reason) = doc.stop_reason {
            self.acc.set_finish(0, reason);
        }
        if doc.kind.is_some() || doc.message.is_some() {
            let kind = doc.kind.as_deref().map(error_name);
            self.acc.set_error_parts(kind, doc.message);
        }
    }
}

/// `ThrottlingException` out of `com.amazon.coral#ThrottlingException:http://…`.
fn error_name(kind: &str) -> String {
    let name = kind.rsplit('#').next().unwrap_or(kind);
    name.split(':').next().unwrap_or(name).to_string()
}

/// A string header's value as text.
fn header_text(headers: &Headers<'_>, name: &[u8]) -> Option<String> {
    let value = headers.string(name)?;
    Some(String::from_utf8_lossy(value).into_owned()).filter(|s| !s.is_empty())
}

impl Picker for Bedrock {
    fn want(&self, path: Path<'_>) -> bool {
        matches!(
            path.segs(),
            [
                Seg::Key(b"usage" | b"stopReason" | b"message" | b"Message" | b"__type"),
                Seg::End,
                ..
            ]
        )
    }

    fn take(&mut self, path: Path<'_>, raw: &[u8]) {
        match path.segs() {
            [Seg::Key(b"usage"), ..] => {
                self.doc.usage = serde_json::from_slice::<Option<TokenUsage>>(raw)
                    .ok()
                    .flatten();
            }
            [Seg::Key(b"stopReason"), ..] => self.doc.stop_reason = json_string(raw),
            [Seg::Key(b"message" | b"Message"), ..] => self.doc.message = json_string(raw),
            [Seg::Key(b"__type"), ..] => self.doc.kind = json_string(raw),
            _ => {}
        }
    }
}

impl Format for Bedrock {
    fn end_doc(&mut self, _event: Option<&SseEvent<'_>>) {
        let doc = std::mem::take(&mut self.doc);
        self.apply(doc);
    }

    /// `:message-type` `event` carries a document; `exception` (throttling, a model stream
    /// error) names its type in `:exception-type`; `error` has only headers.
    fn end_frame(&mut self, headers: &Headers<'_>) {
        let doc = std::mem::take(&mut self.doc);
        match headers.string(b":message-type") {
            Some(b"exception") => {
                let kind = header_text(headers, b":exception-type");
                self.acc.set_error_parts(kind, doc.message);
            }
            Some(b"error") => {
                let kind = header_text(headers, b":error-code");
                let message = header_text(headers, b":error-message");
                self.acc.set_error_parts(kind, message);
            }
            _ => {
                // `metadata` comes last, after `messageStop`, with the usage.
                if headers.string(b":event-type") == Some(b"metadata") {
                    self.acc.terminal = true;
                }
                self.apply(doc);
            }
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
    use super::*;
    use crate::providers::eventstream::encode;
    use crate::providers::testkit::{self, Case, RequestCase, check_fixtures};
    use crate::providers::{ParseStop, ResponseParser, UsageSource, parse_request};

    const JSON: Option<&str> = Some("application/json");
    const STREAM: Option<&str> = Some("application/vnd.amazon.eventstream");

    fn case(name: &'static str, file: &'static str) -> Case {
        testkit::case(ApiShape::BedrockConverse, STREAM, name, file)
    }

    #[test]
    fn bedrock_fixtures() {
        let responses = [
            Case {
                content_type: JSON,
                finish: &["end_turn"],
                // inputTokens + cacheReadInputTokens + cacheWriteInputTokens.
                usage: [
                    Some(14 + 2048 + 512),
                    Some(181),
                    Some(2048),
                    Some(512),
                    None,
                ],
                source: UsageSource::Response,
                is_stream: false,
                ..case("converse json with cache", "converse.json")
            },
            Case {
                content_type: JSON,
                finish: &["tool_use"],
                usage: [Some(412), Some(68), None, None, None],
                source: UsageSource::Response,
                is_stream: false,
                ..case("converse json tool use", "converse_tool_use.json")
            },
            Case {
                finish: &["end_turn"],
                usage: [Some(22 + 1536), Some(48), Some(1536), Some(0), None],
                source: UsageSource::Stream,
                ..case("converse-stream", "converse_stream.bin")
            },
            Case {
                source: UsageSource::StreamCutShort,
                ..case(
                    "converse-stream cut inside a delta",
                    "converse_stream_cut.bin",
                )
            },
            Case {
                source: UsageSource::StreamCutShort,
                error: Some((
                    "throttlingException",
                    "Too many tokens, please wait before trying again.",
                )),
                ..case(
                    "converse-stream ending in an exception",
                    "converse_stream_exception.bin",
                )
            },
            Case {
                content_type: JSON,
                status: 429,
                error: Some(("", "Too many requests, please wait before trying again.")),
                is_stream: false,
                ..case("429 throttling", "error_429.json")
            },
            Case {
                content_type: JSON,
                status: 400,
                error: Some(("", "The provided model identifier is invalid.")),
                is_stream: false,
                ..case("400 validation", "error_400.json")
            },
        ];
        let requests = [RequestCase {
            file: "request.json",
            shape: ApiShape::BedrockConverse,
            path: "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream",
            model: Some("us.anthropic.claude-3-5-sonnet-20240620-v1:0"),
            stream: Some(true),
            max_tokens: Some(2048),
        }];
        check_fixtures("bedrock", &responses, &requests);
    }

    fn stream_facts(body: &[u8]) -> (crate::providers::ResponseFacts, Option<ParseStop>) {
        let mut p = ResponseParser::new(ApiShape::BedrockConverse, STREAM, None, 200);
        for piece in body.chunks(7) {
            p.feed(piece);
        }
        let stopped = p.stopped();
        (p.finish(true), stopped)
    }

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        let headers = [(":event-type", kind), (":message-type", "event")];
        encode(&headers, payload.as_bytes())
    }

    #[test]
    fn error_types_from_bodies_and_frames() {
        assert_eq!(
            error_name("com.amazon.coral.service#ThrottlingException:http://internal"),
            "ThrottlingException"
        );
        assert_eq!(error_name("ValidationException"), "ValidationException");
        let mut p = ResponseParser::new(ApiShape::BedrockConverse, JSON, None, 403);
        p.feed(br#"{"__type":"aws#AccessDeniedException","Message":"not authorized"}"#);
        let facts = p.finish(true);
        assert_eq!(facts.error_type.as_deref(), Some("AccessDeniedException"));
        assert_eq!(facts.error_message.as_deref(), Some("not authorized"));
        let headers = [
            (":message-type", "error"),
            (":error-code", "InternalFailure"),
            (":error-message", "stream broke"),
        ];
        let mut body = event("messageStart", r#"{"role":"assistant"}"#);
        body.extend(encode(&headers, b""));
        let (facts, stopped) = stream_facts(&body);
        assert_eq!(stopped, None);
        assert_eq!(facts.error_type.as_deref(), Some("InternalFailure"));
        assert_eq!(facts.error_message.as_deref(), Some("stream broke"));
        assert_eq!(facts.usage_source, UsageSource::StreamCutShort);
    }

    #[test]
    fn a_corrupt_or_oversized_message_stops_the_parse() {
        let good = crate::providers::testkit::fixture("bedrock", "converse_stream.bin");
        // A flipped byte in the last message (the metadata): what came before stays.
        let mut bad = good.clone();
        let at = bad.len() - 30;
        bad[at] ^= 0x20;
        let (facts, stopped) = stream_facts(&bad);
        assert_eq!(stopped, Some(ParseStop::CorruptFrame));
        assert_eq!(facts.finish_reasons, vec!["end_turn".to_string()]);
        assert_eq!(facts.usage_source, UsageSource::StreamCutShort);
        assert_eq!(facts.usage, Usage::default());
        // A prelude claiming 32 MiB: nothing is read past it.
        let mut huge = (32u32 << 20).to_be_bytes().to_vec();
        huge.extend_from_slice(&0u32.to_be_bytes());
        huge.extend_from_slice(&crc32fast::hash(&huge).to_be_bytes());
        huge.extend(vec![0u8; 1 << 16]);
        let (facts, stopped) = stream_facts(&huge);
        assert_eq!(stopped, Some(ParseStop::FrameLimit));
        assert_eq!(facts.usage_source, UsageSource::StreamCutShort);
    }

    #[test]
    fn a_long_stream_is_read_in_bounded_memory() {
        let delta = event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"lorem ipsum \"usage\":{} dolor "},"p":"abcdefghij"}"#,
        );
        let mut p = ResponseParser::new(ApiShape::BedrockConverse, STREAM, Some("gzip"), 200);
        let mut body = event("messageStart", r#"{"role":"assistant"}"#);
        while body.len() < 20 << 20 {
            body.extend_from_slice(&delta);
        }
        body.extend(event("messageStop", r#"{"stopReason":"max_tokens"}"#));
        let usage = r#"{"usage":{"inputTokens":5,"outputTokens":250000,"totalTokens":250005}}"#;
        body.extend(event("metadata", usage));
        let packed = crate::providers::testkit::compress("gzip", &body);
        let mut most = 0;
        for piece in packed.chunks(16 * 1024 + 3) {
            p.feed(piece);
            most = most.max(p.held());
        }
        assert!(most < 4096, "held {most} bytes");
        let facts = p.finish(true);
        assert_eq!(facts.usage.output_tokens, Some(250_000));
        assert_eq!(facts.usage_source, UsageSource::Stream);
        assert_eq!(facts.finish_reasons, vec!["max_tokens".to_string()]);
    }

    #[test]
    fn hostile_counts_saturate_or_are_refused() {
        let max = i64::MAX.to_string();
        let cases: [(&str, Option<i64>); 5] = [
            (&max, Some(i64::MAX)),
            ("-5", None),
            ("2.5", None),
            ("\"12\"", Some(12)),
            ("null", None),
        ];
        for (v, want) in cases {
            let body = format!(
                r#"{{"stopReason":"end_turn","usage":{{"inputTokens":{v},"outputTokens":{v},"cacheReadInputTokens":{v},"cacheWriteInputTokens":{v}}}}}"#
            );
            let mut p = ResponseParser::new(ApiShape::BedrockConverse, JSON, None, 200);
            p.feed(body.as_bytes());
            let u = p.finish(true).usage;
            let input = want.map(|n| n.saturating_mul(3));
            let got = [u.input_tokens, u.output_tokens, u.cache_read_input_tokens];
            assert_eq!(got, [input, want, want], "{v}");
            assert_eq!(u.cache_creation_input_tokens, want, "{v}");
        }
    }

    #[test]
    fn model_and_stream_come_from_the_path() {
        let cases = [
            (
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                Some("anthropic.claude-3-haiku-20240307-v1:0"),
                Some(false),
            ),
            (
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.amazon.nova-pro-v1%3A0/converse-stream?x=1",
                Some(
                    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0",
                ),
                Some(true),
            ),
            ("/model/m%ZZ/converse", Some("m%ZZ"), Some(false)),
            ("/model/caf%C3%A9/converse", Some("café"), Some(false)),
        ];
        for (path, model, stream) in cases {
            let facts = parse_request(
                ApiShape::BedrockConverse,
                path,
                br#"{"inferenceConfig":{"maxTokens":64}}"#,
            );
            assert_eq!(facts.model.as_deref(), model, "{path}");
            assert_eq!(
                (facts.stream, facts.max_tokens),
                (stream, Some(64)),
                "{path}"
            );
        }
        let cut = parse_request(
            ApiShape::BedrockConverse,
            "/model/m/converse",
            br#"{"messages":[],"inferenceConfig":{"maxTokens":6"#,
        );
        assert_eq!((cut.model.as_deref(), cut.max_tokens), (Some("m"), None));
    }
}
