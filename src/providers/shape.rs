//! Which API a request speaks, and the one trait every provider file implements: how to
//! recognise the API's paths, what to call it, and how to read its bodies.

use std::fmt;

use super::REGISTRY;
use super::request::{Picked, RequestKeys};
use super::response::Format;
use super::{RequestFacts, strip_query};

/// Which API a request speaks, chosen from its path (the provider name comes from the host
/// map): one API of the provider registry, or [`ApiShape::Unknown`]. A small copyable id; what
/// the API means lives in its provider's file, which also names the id
/// (`ApiShape::AnthropicMessages` is defined in `anthropic.rs`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiShape(&'static str);

/// Which error document an API's SDKs read, for the answers llmtap gives itself (a limit's
/// `429`, an unavailable limits store's `503`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    Anthropic,
    OpenAi,
    Gemini,
    /// AWS's JSON protocols: `{"__type": …, "message": …}`.
    Bedrock,
}

/// How an API frames a streamed response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `text/event-stream`.
    Sse,
    /// AWS event stream (`application/vnd.amazon.eventstream`), binary and length-prefixed.
    EventStream,
}

/// What is fixed about one API: its id, its names, and where its request body says things.
pub(crate) struct Api {
    /// The id records and call sites know this API by.
    pub(crate) shape: ApiShape,
    /// `gen_ai.operation.name`.
    pub(crate) operation: &'static str,
    /// `gen_ai.provider.name` for a host that `providers.toml` does not name.
    pub(crate) provider: &'static str,
    /// The error document this API's SDKs read.
    pub(crate) errors: ErrorShape,
    /// Where the request body names the model, the stream flag and the output limit.
    pub(crate) keys: RequestKeys,
    /// How this API's streams are framed.
    pub(crate) framing: Framing,
}

/// One API llmtap understands. Each lives in its provider's file and is listed once in the
/// registry (`providers/mod.rs`); nothing else needs to know it exists.
pub(crate) trait Provider: Sync {
    /// What is fixed about the API.
    fn api(&self) -> &Api;
    /// Whether a request path (no query, no trailing `/`) is this API's. No two APIs may
    /// recognise the same path.
    fn recognises(&self, path: &str) -> bool;
    /// The request facts from the values picked; `whole` = the body was read to its end, so a
    /// field it lacks has its API default (in a cut body it may simply be past the cut).
    fn request_facts(&self, mut picked: Picked, _path: &str, whole: bool) -> RequestFacts {
        let (model, stream) = (picked.model.take(), picked.stream);
        picked.facts(model, stream.or(whole.then_some(false)))
    }
    /// A fresh reader of this API's response bodies.
    fn response_format(&self) -> Box<dyn Format>;
}

impl ApiShape {
    /// Anything else: recorded with HTTP facts only.
    #[allow(non_upper_case_globals)]
    pub const Unknown: ApiShape = ApiShape("Unknown");

    /// The id of an API, for its provider file's constant.
    pub(crate) const fn named(id: &'static str) -> ApiShape {
        ApiShape(id)
    }

    /// From the request path (query stripped by caller or not — handle both).
    pub fn from_path(path: &str) -> ApiShape {
        let path = strip_query(path).trim_end_matches('/');
        REGISTRY
            .iter()
            .find(|p| p.recognises(path))
            .map_or(ApiShape::Unknown, |p| p.api().shape)
    }

    /// Every API llmtap reads, in registry order (not `Unknown`).
    pub fn all() -> impl Iterator<Item = ApiShape> {
        REGISTRY.iter().map(|p| p.api().shape)
    }

    /// The id's name (`AnthropicMessages`), as `Debug` prints it.
    pub fn name(self) -> &'static str {
        self.0
    }

    /// OTel `gen_ai.operation.name` (`chat`, `text_completion`, `embeddings`,
    /// `generate_content`); None for Unknown.
    pub fn operation_name(self) -> Option<&'static str> {
        self.provider().map(|p| p.api().operation)
    }

    /// `gen_ai.provider.name` the path implies when the host map names none.
    pub fn default_provider(self) -> Option<&'static str> {
        self.provider().map(|p| p.api().provider)
    }

    /// The error document this API's SDKs read; None for Unknown.
    pub fn error_shape(self) -> Option<ErrorShape> {
        self.provider().map(|p| p.api().errors)
    }

    /// The registry entry, None for Unknown.
    pub(crate) fn provider(self) -> Option<&'static dyn Provider> {
        REGISTRY.iter().copied().find(|p| p.api().shape == self)
    }
}

impl fmt::Debug for ApiShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl ErrorShape {
    /// The error document of the API named `provider` by default (`anthropic` → Anthropic).
    pub fn of_provider_name(provider: &str) -> Option<ErrorShape> {
        REGISTRY
            .iter()
            .find(|p| p.api().provider == provider)
            .map(|p| p.api().errors)
    }
}
