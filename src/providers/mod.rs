//! Provider formats: what model, tokens and finish reasons a request/response carries (JSON and SSE).

// CONTRACT (filled in by the providers work): the public types below are used by the proxy and the exporter.

/// Which API a request speaks, chosen from its path (the provider name comes from the host map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiShape {
    /// `POST /v1/messages`
    AnthropicMessages,
    /// `POST /v1/chat/completions` (also Azure `/openai/deployments/{d}/chat/completions`)
    OpenAiChat,
    /// `POST /v1/responses`
    OpenAiResponses,
    /// `POST /v1/completions`
    OpenAiCompletions,
    /// `POST /v1/embeddings`
    OpenAiEmbeddings,
    /// `.../models/{model}:generateContent` or `:streamGenerateContent`
    GeminiGenerate,
    /// Anything else: recorded with HTTP facts only.
    Unknown,
}

/// What the request body says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFacts {
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub max_tokens: Option<i64>,
}

/// Where the usage figures came from, so "0 tokens" differs from "unknown".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    Response,
    Stream,
    Absent,
    StreamCutShort,
}

/// Token counts; `None` means the provider did not say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Includes cached tokens (Anthropic: input + cache_read + cache_creation).
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cache_read_input_tokens: Option<i64>,
    pub cache_creation_input_tokens: Option<i64>,
    pub reasoning_output_tokens: Option<i64>,
}

/// What the whole response said (found incrementally, not limited by the capture cap).
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseFacts {
    pub model: Option<String>,
    pub id: Option<String>,
    pub finish_reasons: Vec<String>,
    pub usage: Usage,
    pub usage_source: UsageSource,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub is_stream: bool,
}

// INTERIM until the parsers land: minimal stand-ins so the proxy compiles.
impl ApiShape {
    pub fn from_path(path: &str) -> ApiShape {
        if path.ends_with("/messages") {
            ApiShape::AnthropicMessages
        } else if path.ends_with("/chat/completions") {
            ApiShape::OpenAiChat
        } else {
            ApiShape::Unknown
        }
    }
}
pub struct ResponseParser;
impl ResponseParser {
    pub fn new(_: ApiShape, _: Option<&str>, _: Option<&str>, _: u16) -> ResponseParser {
        ResponseParser
    }
    pub fn feed(&mut self, _: &[u8]) {}
    pub fn finish(self, _complete: bool) -> ResponseFacts {
        ResponseFacts {
            model: None,
            id: None,
            finish_reasons: vec![],
            usage: Usage::default(),
            usage_source: UsageSource::Absent,
            error_type: None,
            error_message: None,
            is_stream: false,
        }
    }
}
