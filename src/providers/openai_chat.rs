//! OpenAI Chat Completions (also legacy Completions and Embeddings): JSON bodies and `data:` chunk streams.

use serde::Deserialize;

use super::acc::{Acc, Choices, count};
use super::request::{Picked, RequestKeys};
use super::response::Format;
use super::shape::{Api, Framing, Provider};
use super::skim::{Path, Picker, Seg};
use super::sse::SseEvent;
use super::{ApiShape, ErrorShape, RequestFacts, Usage};

#[allow(non_upper_case_globals)]
impl ApiShape {
    /// `POST /v1/chat/completions` (also Azure `/openai/deployments/{d}/chat/completions`).
    pub const OpenAiChat: ApiShape = ApiShape::named("OpenAiChat");
    /// `POST /v1/completions`.
    pub const OpenAiCompletions: ApiShape = ApiShape::named("OpenAiCompletions");
    /// `POST /v1/embeddings`.
    pub const OpenAiEmbeddings: ApiShape = ApiShape::named("OpenAiEmbeddings");
}

/// One of the three APIs this format reads; they differ in path, operation and request keys.
pub(crate) struct OpenAiApi {
    api: Api,
    /// The path ends with this, and with none of `but_not`.
    suffix: &'static str,
    but_not: &'static [&'static str],
    /// An absent `stream` in a whole body means `false` (embeddings never stream: unknown).
    streams: bool,
}

/// What the three have in common.
const fn openai(shape: ApiShape, operation: &'static str, keys: RequestKeys) -> Api {
    Api {
        shape,
        operation,
        provider: "openai",
        errors: ErrorShape::OpenAi,
        keys,
        framing: Framing::Sse,
    }
}

pub(crate) static CHAT: OpenAiApi = OpenAiApi {
    api: openai(
        ApiShape::OpenAiChat,
        "chat",
        RequestKeys::top_level(&[&[&[b"max_completion_tokens"]], &[&[b"max_tokens"]]]),
    ),
    suffix: "/chat/completions",
    but_not: &[],
    streams: true,
};

pub(crate) static COMPLETIONS: OpenAiApi = OpenAiApi {
    api: openai(
        ApiShape::OpenAiCompletions,
        "text_completion",
        RequestKeys::top_level(&[&[&[b"max_tokens"]]]),
    ),
    suffix: "/completions",
    but_not: &["/chat/completions"],
    streams: true,
};

pub(crate) static EMBEDDINGS: OpenAiApi = OpenAiApi {
    api: openai(
        ApiShape::OpenAiEmbeddings,
        "embeddings",
        RequestKeys::top_level(&[]),
    ),
    suffix: "/embeddings",
    but_not: &[],
    streams: false,
};

impl Provider for OpenAiApi {
    fn api(&self) -> &Api {
        &self.api
    }
    fn recognises(&self, path: &str) -> bool {
        path.ends_with(self.suffix) && !self.but_not.iter().any(|s| path.ends_with(s))
    }
    fn request_facts(&self, mut picked: Picked, _path: &str, whole: bool) -> RequestFacts {
        let (model, stream) = (picked.model.take(), picked.stream);
        picked.facts(model, stream.or((whole && self.streams).then_some(false)))
    }
    fn response_format(&self) -> Box<dyn Format> {
        Box::new(OpenAiChat::default())
    }
}

#[derive(Debug, Default, Deserialize)]
struct PromptDetails {
    #[serde(default, deserialize_with = "count")]
    cached_tokens: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct CompletionDetails {
    #[serde(default, deserialize_with = "count")]
    reasoning_tokens: Option<i64>,
}

/// `prompt_tokens` already includes the cached ones.
#[derive(Debug, Default, Deserialize)]
struct RawUsage {
    #[serde(default, deserialize_with = "count")]
    prompt_tokens: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    completion_tokens: Option<i64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

impl From<RawUsage> for Usage {
    fn from(u: RawUsage) -> Usage {
        Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cache_read_input_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
            cache_creation_input_tokens: None,
            reasoning_output_tokens: u.completion_tokens_details.and_then(|d| d.reasoning_tokens),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct OpenAiChat {
    acc: Acc,
    choices: Choices,
}

impl Picker for OpenAiChat {
    fn want(&self, path: Path<'_>) -> bool {
        use Seg::{End, Idx, Key};
        match path.segs() {
            [Key(b"usage" | b"error"), End, ..] => true,
            [Key(b"model"), End, ..] => self.acc.model.is_none(),
            [Key(b"id"), End, ..] => self.acc.id.is_none(),
            [
                Key(b"choices"),
                Idx(_),
                Key(b"finish_reason" | b"index"),
                End,
            ] => true,
            _ => false,
        }
    }

    fn take(&mut self, path: Path<'_>, raw: &[u8]) {
        use Seg::{End, Idx, Key};
        match path.segs() {
            // Streams with include_usage send `"usage": null` in every chunk but the last.
            [Key(b"usage"), End, ..] => {
                if let Ok(u) = serde_json::from_slice::<Option<RawUsage>>(raw) {
                    self.acc.merge_usage(u.map(Usage::from).unwrap_or_default());
                }
            }
            [Key(b"error"), End, ..] => self.acc.set_error(raw),
            [Key(b"model"), End, ..] => Acc::first(&mut self.acc.model, raw),
            [Key(b"id"), End, ..] => Acc::first(&mut self.acc.id, raw),
            [Key(b"choices"), Idx(pos), Key(b"finish_reason"), End] => {
                self.choices.set_reason(pos, raw)
            }
            [Key(b"choices"), Idx(pos), Key(b"index"), End] => self.choices.set_index(pos, raw),
            _ => {}
        }
    }
}

impl Format for OpenAiChat {
    fn end_doc(&mut self, event: Option<&SseEvent<'_>>) {
        self.choices.flush(&mut self.acc);
        if event.is_some_and(|e| e.data_is(b"[DONE]")) {
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

    const JSON: Option<&str> = Some("application/json");
    const SSE: Option<&str> = Some("text/event-stream; charset=utf-8");

    fn chat(name: &'static str, file: &'static str) -> Case {
        testkit::case(ApiShape::OpenAiChat, JSON, name, file)
    }

    #[test]
    fn openai_chat_fixtures() {
        check_fixtures(
            "openai_chat",
            &[
                Case {
                    model: Some("gpt-4.1-2025-04-14"),
                    id: Some("chatcmpl-CBxbjMxqTrDEqgYJwU9fG3aVZq8Fh"),
                    finish: &["stop"],
                    usage: [Some(1544), Some(212), Some(1280), None, Some(0)],
                    source: UsageSource::Response,
                    ..chat("json", "completion.json")
                },
                Case {
                    model: Some("o4-mini-2025-04-16"),
                    id: Some("chatcmpl-n2n2n2n2n2n2n2n2n2n2n2n2n2n2"),
                    finish: &["length", "tool_calls"],
                    usage: [Some(80), Some(4000), Some(0), None, Some(3712)],
                    source: UsageSource::Response,
                    ..chat("json n=2 choices", "completion_n2.json")
                },
                Case {
                    content_type: SSE,
                    model: Some("gpt-4o-mini-2024-07-18"),
                    id: Some("chatcmpl-CBy1Usage9d8f7a6s5d4f3g2h1j"),
                    finish: &["stop"],
                    usage: [Some(19), Some(10), Some(0), None, Some(0)],
                    source: UsageSource::Stream,
                    is_stream: true,
                    ..chat("stream with include_usage", "stream_usage.sse")
                },
                Case {
                    content_type: SSE,
                    model: Some("gpt-4o-mini-2024-07-18"),
                    id: Some("chatcmpl-CBy2NoUsage0a9s8d7f6g5h4j3k"),
                    finish: &["stop"],
                    source: UsageSource::Absent,
                    is_stream: true,
                    ..chat("stream without usage chunk", "stream_no_usage.sse")
                },
                Case {
                    content_type: SSE,
                    model: Some("gpt-4o-2024-08-06"),
                    id: Some("chatcmpl-CBy3n2Stream1q2w3e4r5t6y7u8"),
                    finish: &["stop", "length"],
                    usage: [Some(27), Some(48), Some(0), None, Some(0)],
                    source: UsageSource::Stream,
                    is_stream: true,
                    ..chat("stream n=2", "stream_n2.sse")
                },
                Case {
                    content_type: SSE,
                    model: Some("gpt-4o-mini-2024-07-18"),
                    id: Some("chatcmpl-CBy4Cut9o8i7u6y5t4r3e2w1q0"),
                    source: UsageSource::StreamCutShort,
                    is_stream: true,
                    ..chat("stream cut short", "stream_cut.sse")
                },
                Case {
                    content_type: SSE,
                    model: Some("gpt-4o-mini-2024-07-18"),
                    id: Some("chatcmpl-CBy5Err0p9o8i7u6y5t4r3e2w1"),
                    source: UsageSource::StreamCutShort,
                    error: Some((
                        "server_error",
                        "The server had an error while processing your request. Sorry about that!",
                    )),
                    is_stream: true,
                    ..chat("stream with error chunk", "stream_error.sse")
                },
                Case {
                    status: 400,
                    error: Some((
                        "invalid_request_error",
                        "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                    )),
                    ..chat("400", "error_400.json")
                },
                Case {
                    status: 429,
                    error: Some((
                        "tokens",
                        "Rate limit reached for gpt-4.1 in organization org-abc123 on tokens per min (TPM): Limit 30000, Used 29871, Requested 1024. Please try again in 1.79s. Visit https://platform.openai.com/account/rate-limits to learn more.",
                    )),
                    ..chat("429", "error_429.json")
                },
                Case {
                    status: 500,
                    error: Some((
                        "server_error",
                        "The server had an error while processing your request. Sorry about that!",
                    )),
                    ..chat("500", "error_500.json")
                },
                Case {
                    status: 401,
                    error: Some((
                        "invalid_api_key",
                        "Incorrect API key provided: sk-proj-****abcd.",
                    )),
                    ..chat("401 with type null falls back to code", "error_401.json")
                },
                Case {
                    shape: ApiShape::OpenAiEmbeddings,
                    model: Some("text-embedding-3-small"),
                    usage: [Some(8), None, None, None, None],
                    source: UsageSource::Response,
                    ..chat("embeddings", "embeddings.json")
                },
                Case {
                    shape: ApiShape::OpenAiCompletions,
                    model: Some("gpt-3.5-turbo-instruct"),
                    id: Some("cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7"),
                    finish: &["length"],
                    usage: [Some(5), Some(7), None, None, None],
                    source: UsageSource::Response,
                    ..chat("legacy completions", "completions_legacy.json")
                },
            ],
            &[],
        );
    }
}
