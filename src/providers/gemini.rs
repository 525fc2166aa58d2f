//! Gemini generateContent: one JSON response, or chunks as SSE (`alt=sse`) or as a JSON array.

use serde::Deserialize;

use super::acc::{Acc, Choices, count};
use super::request::{KeyPath, Picked, RequestKeys};
use super::response::Format;
use super::shape::{Api, Framing, Provider};
use super::skim::{Path, Picker, Seg};
use super::sse::SseEvent;
use super::{ApiShape, ErrorShape, RequestFacts, Usage, strip_query};

impl ApiShape {
    /// Gemini, `.../models/{model}:generateContent` or `:streamGenerateContent`.
    #[allow(non_upper_case_globals)]
    pub const GeminiGenerate: ApiShape = ApiShape::named("GeminiGenerate");
}

/// Gemini generateContent (Google AI and Vertex AI paths).
pub(crate) struct Generate(Api);
pub(crate) static GENERATE: Generate = Generate(Api {
    shape: ApiShape::GeminiGenerate,
    operation: "generate_content",
    provider: "gcp.gemini",
    errors: ErrorShape::Gemini,
    keys: RequestKeys::limits_only(&[MAX_OUTPUT]),
    framing: Framing::Sse,
});

/// `generationConfig.maxOutputTokens`, in either spelling of each key.
const MAX_OUTPUT: &[KeyPath] = &[
    &[b"generationConfig", b"maxOutputTokens"],
    &[b"generationConfig", b"max_output_tokens"],
    &[b"generation_config", b"maxOutputTokens"],
    &[b"generation_config", b"max_output_tokens"],
];

impl Provider for Generate {
    fn api(&self) -> &Api {
        &self.0
    }
    fn recognises(&self, path: &str) -> bool {
        let last = path.rsplit('/').next().unwrap_or_default();
        last.split_once(':').is_some_and(|(_, method)| {
            matches!(method, "generateContent" | "streamGenerateContent")
        })
    }
    /// The model and the stream flag are in the path.
    fn request_facts(&self, picked: Picked, path: &str, _whole: bool) -> RequestFacts {
        let stream = strip_query(path).ends_with(":streamGenerateContent");
        picked.facts(model_from_path(path), Some(stream))
    }
    fn response_format(&self) -> Box<dyn Format> {
        Box::new(Gemini::default())
    }
}

/// `promptTokenCount` already includes cached tokens; `candidatesTokenCount` excludes thoughts (kept as is).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default, deserialize_with = "count")]
    prompt_token_count: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    candidates_token_count: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    cached_content_token_count: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    thoughts_token_count: Option<i64>,
}

#[derive(Debug, Default)]
pub(crate) struct Gemini {
    acc: Acc,
    candidates: Choices,
}

/// The model named in `/v1beta/models/gemini-2.5-flash:generateContent` (also Vertex and tuned-model paths).
pub(crate) fn model_from_path(path: &str) -> Option<String> {
    let path = strip_query(path);
    let (before, _method) = path.rsplit_once(':')?;
    let name = before.rsplit('/').next().unwrap_or_default();
    (!name.is_empty()).then(|| name.to_string())
}

impl Picker for Gemini {
    fn want(&self, path: Path<'_>) -> bool {
        use Seg::{End, Idx, Key};
        match path.strip_index().segs() {
            [Key(b"usageMetadata" | b"error"), End, ..] => true,
            [Key(b"modelVersion"), End, ..] => self.acc.model.is_none(),
            [Key(b"responseId"), End, ..] => self.acc.id.is_none(),
            [
                Key(b"candidates"),
                Idx(_),
                Key(b"finishReason" | b"index"),
                End,
            ] => true,
            _ => false,
        }
    }

    fn take(&mut self, path: Path<'_>, raw: &[u8]) {
        use Seg::{End, Idx, Key};
        match path.strip_index().segs() {
            [Key(b"usageMetadata"), End, ..] => {
                if let Ok(Some(u)) = serde_json::from_slice::<Option<UsageMetadata>>(raw) {
                    self.acc.merge_usage(Usage {
                        input_tokens: u.prompt_token_count,
                        output_tokens: u.candidates_token_count,
                        cache_read_input_tokens: u.cached_content_token_count,
                        cache_creation_input_tokens: None,
                        reasoning_output_tokens: u.thoughts_token_count,
                    });
                }
            }
            [Key(b"error"), End, ..] => self.acc.set_error(raw),
            [Key(b"modelVersion"), End, ..] => Acc::first(&mut self.acc.model, raw),
            [Key(b"responseId"), End, ..] => Acc::first(&mut self.acc.id, raw),
            [Key(b"candidates"), Idx(pos), Key(b"finishReason"), End] => {
                self.candidates.set_reason(pos, raw)
            }
            [Key(b"candidates"), Idx(pos), Key(b"index"), End] => {
                self.candidates.set_index(pos, raw)
            }
            _ => {}
        }
    }

    fn element_end(&mut self) {
        self.end_doc(None);
    }
}

impl Format for Gemini {
    /// The chunk that carries a finish reason is the last one of the stream.
    fn end_doc(&mut self, _event: Option<&SseEvent<'_>>) {
        if self.candidates.flush(&mut self.acc) {
            self.acc.terminal = true;
        }
    }

    fn array_is_stream(&self) -> bool {
        true
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
    use super::model_from_path;
    use crate::providers::testkit::{self, Case, check_fixtures};
    use crate::providers::{ApiShape, UsageSource};

    fn case(name: &'static str, file: &'static str) -> Case {
        testkit::case(
            ApiShape::GeminiGenerate,
            Some("application/json; charset=UTF-8"),
            name,
            file,
        )
    }

    const SSE: Option<&str> = Some("text/event-stream");

    #[test]
    fn gemini_fixtures() {
        check_fixtures(
            "gemini",
            &[
                Case {
                    model: Some("gemini-2.5-flash"),
                    id: Some("9JaxaOyzLc-mz7IPqdmN8Qk"),
                    finish: &["STOP"],
                    usage: [Some(4200), Some(310), Some(4032), None, Some(987)],
                    source: UsageSource::Response,
                    ..case("json", "generate.json")
                },
                Case {
                    content_type: SSE,
                    model: Some("gemini-2.5-pro"),
                    id: Some("kJexaPm1Dv2Sz7IP6bOd-Aw"),
                    finish: &["STOP"],
                    usage: [Some(11), Some(54), None, None, Some(412)],
                    source: UsageSource::Stream,
                    is_stream: true,
                    ..case("sse stream", "stream.sse")
                },
                Case {
                    model: Some("gemini-2.0-flash"),
                    id: Some("a1ZxaKbRJ8Wm1e8PxLuY0Qo"),
                    finish: &["MAX_TOKENS"],
                    usage: [Some(9), Some(32), None, None, None],
                    source: UsageSource::Stream,
                    is_stream: true,
                    ..case("json array stream", "stream_array.json")
                },
                Case {
                    content_type: SSE,
                    model: Some("gemini-2.5-pro"),
                    id: Some("cUtCuTcUtCuTcUtCuTcUtCu"),
                    usage: [Some(11), Some(20), None, None, Some(400)],
                    source: UsageSource::StreamCutShort,
                    is_stream: true,
                    ..case("sse stream cut", "stream_cut.sse")
                },
                Case {
                    model: Some("gemini-2.0-flash"),
                    id: Some("aRrAyCuTaRrAyCuTaRrAyCu"),
                    usage: [Some(9), Some(8), None, None, None],
                    source: UsageSource::StreamCutShort,
                    is_stream: true,
                    ..case("json array stream cut", "stream_array_cut.json")
                },
                Case {
                    status: 429,
                    error: Some((
                        "RESOURCE_EXHAUSTED",
                        "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
                    )),
                    ..case("429", "error_429.json")
                },
                Case {
                    status: 400,
                    error: Some((
                        "INVALID_ARGUMENT",
                        "API key not valid. Please pass a valid API key.",
                    )),
                    ..case("400", "error_400.json")
                },
                Case {
                    status: 500,
                    error: Some((
                        "INTERNAL",
                        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
                    )),
                    ..case("500", "error_500.json")
                },
                Case {
                    status: 503,
                    error: Some((
                        "UNAVAILABLE",
                        "The model is overloaded. Please try again later.",
                    )),
                    ..case("503 as a json array", "error_503_array.json")
                },
            ],
            &[],
        );
    }

    #[test]
    fn model_in_path() {
        let cases = [
            (
                "/v1beta/models/gemini-2.5-flash:generateContent",
                Some("gemini-2.5-flash"),
            ),
            (
                "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key=x",
                Some("gemini-2.5-pro"),
            ),
            (
                "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:streamGenerateContent",
                Some("gemini-2.0-flash-001"),
            ),
            (
                "/v1beta/tunedModels/my-tuned:generateContent",
                Some("my-tuned"),
            ),
            ("/v1beta/models/:generateContent", None),
            ("/v1beta/models", None),
        ];
        for (path, want) in cases {
            assert_eq!(model_from_path(path).as_deref(), want, "{path}");
        }
    }
}
