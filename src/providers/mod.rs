//! Provider formats: what model, tokens and finish reasons a request/response carries (JSON and SSE).
// Every number and length here comes from a client or an upstream: no arithmetic may overflow
// and no index may panic (saturating or checked arithmetic, `get` instead of `[]`). Test code,
// which builds its own inputs, is exempt.
#![cfg_attr(
    not(test),
    deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)
)]

mod anthropic;
#[cfg(test)]
pub(crate) mod bomb_tests;
pub mod decode;
mod gemini;
#[cfg(test)]
mod hostile_tests;
mod inflow;
mod openai_chat;
mod openai_responses;
mod skim;
mod sse;

use bytes::Bytes;
use decode::StreamDecoder;
use inflow::Inflow;
pub use inflow::{FREE_DECODED, MAX_DECODER_MEMORY, MAX_RATIO, WORK_SLICE};
use serde::Deserialize;
use skim::{JsonSkim, Path, Picker, Seg};
use sse::{SseEvent, SseFramer, SseSink};

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
    /// The parser stopped reading the body before its end (the facts above are what came
    /// before); `None` when it read all of it.
    pub stopped: Option<ParseStop>,
}

/// Why a parser stopped reading a body before its end (the body itself is forwarded whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseStop {
    /// Decoding went past `MAX_RATIO` decoded bytes per compressed byte, beyond the first
    /// `FREE_DECODED` bytes: a decompression bomb.
    RatioLimit,
    /// The body is not valid in its content-encoding.
    CorruptEncoding,
    /// A content-encoding llmtap does not decode (or a stack of them).
    UnsupportedEncoding,
    /// The decoder needed more memory (the window the stream asked for) than
    /// `MAX_DECODER_MEMORY` or the capture budget allowed.
    MemoryLimit,
}

impl ParseStop {
    /// Stable name for records (`ratio_limit`, `corrupt_encoding`, `unsupported_encoding`,
    /// `memory_limit`).
    pub fn as_str(self) -> &'static str {
        match self {
            ParseStop::RatioLimit => "ratio_limit",
            ParseStop::CorruptEncoding => "corrupt_encoding",
            ParseStop::UnsupportedEncoding => "unsupported_encoding",
            ParseStop::MemoryLimit => "memory_limit",
        }
    }
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

impl ApiShape {
    /// From the request path (query stripped by caller or not — handle both).
    pub fn from_path(path: &str) -> ApiShape {
        let path = strip_query(path).trim_end_matches('/');
        let last = path.rsplit('/').next().unwrap_or_default();
        if let Some((_, method)) = last.split_once(':') {
            return match method {
                "generateContent" | "streamGenerateContent" => ApiShape::GeminiGenerate,
                _ => ApiShape::Unknown,
            };
        }
        // Order matters: `/chat/completions` also ends with `/completions`.
        let table = [
            ("/v1/messages", ApiShape::AnthropicMessages),
            ("/chat/completions", ApiShape::OpenAiChat),
            ("/responses", ApiShape::OpenAiResponses),
            ("/completions", ApiShape::OpenAiCompletions),
            ("/embeddings", ApiShape::OpenAiEmbeddings),
        ];
        table
            .into_iter()
            .find(|(suffix, _)| path.ends_with(suffix))
            .map_or(ApiShape::Unknown, |(_, shape)| shape)
    }

    /// OTel gen_ai.operation.name: chat (Anthropic messages, OpenAI chat, OpenAI responses), text_completion, embeddings, generate_content (Gemini); None for Unknown.
    pub fn operation_name(self) -> Option<&'static str> {
        match self {
            ApiShape::AnthropicMessages | ApiShape::OpenAiChat | ApiShape::OpenAiResponses => {
                Some("chat")
            }
            ApiShape::OpenAiCompletions => Some("text_completion"),
            ApiShape::OpenAiEmbeddings => Some("embeddings"),
            ApiShape::GeminiGenerate => Some("generate_content"),
            ApiShape::Unknown => None,
        }
    }
}

impl UsageSource {
    /// The value of the usage-source attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Response => "response",
            UsageSource::Stream => "stream",
            UsageSource::Absent => "absent",
            UsageSource::StreamCutShort => "stream_cut_short",
        }
    }
}

fn strip_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}

/// Parse a request body (already decoded, may be truncated JSON → best effort, never panic).
pub fn parse_request(shape: ApiShape, path: &str, body: &[u8]) -> RequestFacts {
    let mut parser = RequestParser::new(shape, path, None);
    parser.feed(body);
    parser.finish()
}

/// Incremental request parser, fed every request body chunk as forwarded (compressed or not),
/// so the model is found even when it comes after a prompt longer than the capture cap.
///
/// Decoding stops at the same ratio as the response side (`MAX_RATIO`, past `FREE_DECODED`).
/// [`RequestParser::feed`] does all the work at once; [`RequestParser::offer`] queues a chunk
/// and [`RequestParser::work`] does one bounded slice of it, for callers inside a poll.
pub struct RequestParser {
    shape: ApiShape,
    path: String,
    skim: JsonSkim,
    picker: RequestPicker,
    inflow: Inflow,
}

/// Request values we pick are short (a model name, a number, a bool): larger ones are skipped.
const REQUEST_VALUE_MAX: usize = 1024;

impl RequestParser {
    pub fn new(shape: ApiShape, path: &str, content_encoding: Option<&str>) -> RequestParser {
        // An encoding we cannot decode: the body is opaque, facts stay unknown.
        let inflow = Inflow::new(StreamDecoder::new(content_encoding));
        RequestParser {
            shape,
            path: path.to_string(),
            skim: JsonSkim::with_capture_limit(REQUEST_VALUE_MAX),
            picker: RequestPicker::default(),
            inflow,
        }
    }

    /// Parse `chunk` now (all of it, up to the ratio stop).
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.shape == ApiShape::Unknown {
            return;
        }
        let (skim, picker) = (&mut self.skim, &mut self.picker);
        self.inflow
            .feed(chunk, &mut |piece| skim.feed(piece, picker));
    }

    /// Queue `chunk` for [`RequestParser::work`] (zero-copy).
    pub fn offer(&mut self, chunk: Bytes) {
        if self.shape != ApiShape::Unknown {
            self.inflow.offer(chunk);
        }
    }

    /// Decode and parse at most [`WORK_SLICE`] bytes of what was offered; true while work is left.
    pub fn work(&mut self) -> bool {
        let (skim, picker) = (&mut self.skim, &mut self.picker);
        self.inflow.work(&mut |piece| skim.feed(piece, picker))
    }

    /// Offered bytes are still waiting for [`RequestParser::work`].
    pub fn has_work(&self) -> bool {
        self.inflow.has_work()
    }

    /// Decoded bytes parsed so far.
    pub fn decoded_len(&self) -> u64 {
        self.inflow.decoded_len()
    }

    /// Why parsing stopped before the end, if it did.
    pub fn stopped(&self) -> Option<ParseStop> {
        self.inflow.stop()
    }

    /// Bytes the decoder holds now (see `StreamDecoder::memory`); 0 for identity bodies.
    pub fn memory(&self) -> usize {
        self.inflow.memory()
    }

    /// Stop parsing for `reason`; the decoder's memory goes at once, the facts so far stay.
    pub fn give_up(&mut self, reason: ParseStop) {
        self.inflow.give_up(reason);
    }

    /// The body ended (or was dropped): free the decoder now, keep the facts for `finish`.
    pub fn end_input(&mut self) {
        self.inflow.end_input();
    }

    pub fn finish(mut self) -> RequestFacts {
        let shape = self.shape;
        if shape == ApiShape::Unknown {
            return RequestFacts::default();
        }
        self.skim.end(&mut self.picker);
        let f = self.picker;
        let path = self.path.as_str();
        let stopped = self.inflow.stop();
        // A field the whole body lacks has its API default; in a cut body it may simply be past the cut.
        let whole = self.skim.is_done() && stopped.is_none();
        let stream = f
            .stream
            .or((whole && shape != ApiShape::OpenAiEmbeddings).then_some(false));
        let (model, stream, max_tokens) = match shape {
            ApiShape::GeminiGenerate => (
                gemini::model_from_path(path),
                Some(strip_query(path).ends_with(":streamGenerateContent")),
                f.gemini_max,
            ),
            ApiShape::OpenAiChat => (f.model, stream, f.max_completion_tokens.or(f.max_tokens)),
            ApiShape::OpenAiResponses => (f.model, stream, f.max_output_tokens),
            ApiShape::OpenAiEmbeddings => (f.model, f.stream, None),
            _ => (f.model, stream, f.max_tokens),
        };
        RequestFacts {
            model,
            stream,
            max_tokens,
            stopped,
        }
    }
}

/// Request fields, each from its own path so a huge `messages` array never needs buffering.
#[derive(Default)]
struct RequestPicker {
    model: Option<String>,
    stream: Option<bool>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    max_output_tokens: Option<i64>,
    gemini_max: Option<i64>,
}

impl Picker for RequestPicker {
    fn want(&self, path: Path<'_>) -> bool {
        matches!(
            path.segs(),
            [
                Seg::Key(
                    b"model"
                        | b"stream"
                        | b"max_tokens"
                        | b"max_completion_tokens"
                        | b"max_output_tokens"
                ),
                Seg::End,
                ..
            ] | [
                Seg::Key(b"generationConfig" | b"generation_config"),
                Seg::Key(b"maxOutputTokens" | b"max_output_tokens"),
                Seg::End,
                ..
            ]
        )
    }

    fn take(&mut self, path: Path<'_>, raw: &[u8]) {
        match path.segs() {
            [Seg::Key(b"model"), Seg::End, ..] => self.model = json_string(raw),
            [Seg::Key(b"stream"), Seg::End, ..] => self.stream = serde_json::from_slice(raw).ok(),
            [Seg::Key(b"max_tokens"), Seg::End, ..] => self.max_tokens = json_count(raw),
            [Seg::Key(b"max_completion_tokens"), Seg::End, ..] => {
                self.max_completion_tokens = json_count(raw)
            }
            [Seg::Key(b"max_output_tokens"), Seg::End, ..] => {
                self.max_output_tokens = json_count(raw)
            }
            [Seg::Key(_), Seg::Key(_), Seg::End, ..] => self.gemini_max = json_count(raw),
            _ => {}
        }
    }
}

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
        if self.error_type.is_none() && self.error_message.is_none() {
            self.error_type = kind.map(str::to_string);
            self.error_message = message.map(str::to_string);
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

    fn finish_reasons(&mut self) -> Vec<String> {
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

/// One provider's response format: which values to pick, and what they mean.
pub(crate) trait Format: Picker + Send {
    /// One document ended: an SSE event (`Some`), or a whole JSON body or Gemini array chunk (`None`).
    fn end_doc(&mut self, event: Option<&SseEvent<'_>>);
    /// A JSON array body is a stream of chunks (Gemini without `alt=sse`).
    fn array_is_stream(&self) -> bool {
        false
    }
    /// The stream's terminal event has been seen.
    fn saw_terminal(&self) -> bool;
    fn into_acc(self: Box<Self>) -> Acc;
}

/// Unknown API shapes: nothing to pick.
struct NoFormat;

impl Picker for NoFormat {
    fn want(&self, _: Path<'_>) -> bool {
        false
    }
    fn take(&mut self, _: Path<'_>, _: &[u8]) {}
}

impl Format for NoFormat {
    fn end_doc(&mut self, _: Option<&SseEvent<'_>>) {}
    fn saw_terminal(&self) -> bool {
        false
    }
    fn into_acc(self: Box<Self>) -> Acc {
        Acc::default()
    }
}

/// Feeds one SSE event's data to the skimmer and closes the document at the event's end.
struct EventSink<'a> {
    skim: &'a mut JsonSkim,
    format: &'a mut dyn Format,
}

impl SseSink for EventSink<'_> {
    fn data(&mut self, piece: &[u8]) {
        self.skim.feed(piece, self.format);
    }
    fn event(&mut self, event: &SseEvent<'_>) {
        self.skim.end(self.format);
        self.format.end_doc(Some(event));
        self.skim.reset();
    }
}

/// How the decoded body is read.
enum Body {
    /// Undecided until the first non-blank byte (no usable content type).
    Sniff,
    Sse(SseFramer, JsonSkim),
    Json(JsonSkim),
    Off,
}

impl Body {
    fn feed(&mut self, mut piece: &[u8], format: &mut dyn Format) {
        if let Body::Sniff = self {
            let Some(at) = piece.iter().position(|b| !b.is_ascii_whitespace()) else {
                return;
            };
            piece = piece.get(at..).unwrap_or_default();
            *self = match piece.first() {
                Some(b'{' | b'[') => Body::Json(JsonSkim::new()),
                // An SSE line starts with a field (`data`, `event`, `id`, `retry`) or a `:` comment;
                // anything else (an HTML error page, binary) is neither, not a stream cut short.
                Some(b'd' | b'e' | b'i' | b'r' | b':') => {
                    Body::Sse(SseFramer::new(), JsonSkim::new())
                }
                _ => Body::Off,
            };
        }
        match self {
            Body::Sse(framer, skim) => framer.feed(piece, &mut EventSink { skim, format }),
            Body::Json(skim) => skim.feed(piece, format),
            Body::Sniff | Body::Off => {}
        }
    }

    /// End of body; returns whether it was a stream.
    fn finish(&mut self, complete: bool, format: &mut dyn Format, sse_hint: bool) -> bool {
        match self {
            Body::Sse(framer, skim) => {
                framer.finish(complete, &mut EventSink { skim, format });
                true
            }
            Body::Json(skim) => {
                skim.end(format);
                format.end_doc(None);
                skim.root_is_array() && format.array_is_stream()
            }
            Body::Sniff => false,
            Body::Off => sse_hint,
        }
    }
}

/// Incremental response parser. Fed every response body chunk *as forwarded* (still compressed
/// if content-encoding is set); decoding stops past `MAX_RATIO` (beyond `FREE_DECODED`).
/// [`ResponseParser::feed`] does all the work at once; [`ResponseParser::offer`] queues a chunk
/// and [`ResponseParser::work`] does one bounded slice of it, for callers inside a poll.
pub struct ResponseParser {
    inflow: Inflow,
    body: Body,
    format: Box<dyn Format>,
    sse_hint: bool,
    /// An error status: the body is an error document, not a stream.
    error_status: bool,
}

impl std::fmt::Debug for ResponseParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseParser")
            .field("stopped", &self.inflow.stop())
            .field("decoded_len", &self.inflow.decoded_len())
            .finish_non_exhaustive()
    }
}

impl ResponseParser {
    /// `content_type` decides SSE vs JSON (sniffed when absent or other); `status` >= 400 means a provider error body.
    pub fn new(
        shape: ApiShape,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        status: u16,
    ) -> ResponseParser {
        let ct = content_type.unwrap_or_default().to_ascii_lowercase();
        let sse_hint = ct.contains("text/event-stream");
        let format: Box<dyn Format> = match shape {
            ApiShape::AnthropicMessages => Box::new(anthropic::Anthropic::default()),
            ApiShape::OpenAiChat | ApiShape::OpenAiCompletions | ApiShape::OpenAiEmbeddings => {
                Box::new(openai_chat::OpenAiChat::default())
            }
            ApiShape::OpenAiResponses => Box::new(openai_responses::OpenAiResponses::default()),
            ApiShape::GeminiGenerate => Box::new(gemini::Gemini::default()),
            ApiShape::Unknown => Box::new(NoFormat),
        };
        let body = match shape {
            ApiShape::Unknown => Body::Off,
            // Error bodies are JSON whatever the header claims.
            _ if status >= 400 => Body::Json(JsonSkim::new()),
            _ if sse_hint => Body::Sse(SseFramer::new(), JsonSkim::new()),
            _ if ct.contains("json") => Body::Json(JsonSkim::new()),
            _ => Body::Sniff,
        };
        let inflow = match body {
            Body::Off => Inflow::new(StreamDecoder::new(None)),
            _ => Inflow::new(StreamDecoder::new(content_encoding)),
        };
        ResponseParser {
            inflow,
            body,
            format,
            sse_hint,
            error_status: status >= 400,
        }
    }

    /// Parse `chunk` now (all of it, up to the ratio stop).
    pub fn feed(&mut self, chunk: &[u8]) {
        if matches!(self.body, Body::Off) {
            return;
        }
        let (body, format) = (&mut self.body, &mut self.format);
        self.inflow
            .feed(chunk, &mut |piece| body.feed(piece, format.as_mut()));
    }

    /// Queue `chunk` for [`ResponseParser::work`] (zero-copy).
    pub fn offer(&mut self, chunk: Bytes) {
        if !matches!(self.body, Body::Off) {
            self.inflow.offer(chunk);
        }
    }

    /// Decode and parse at most [`WORK_SLICE`] bytes of what was offered; true while work is left.
    pub fn work(&mut self) -> bool {
        let (body, format) = (&mut self.body, &mut self.format);
        self.inflow
            .work(&mut |piece| body.feed(piece, format.as_mut()))
    }

    /// The provider's stream said it was done (`message_stop`, `[DONE]`, ...): a client that
    /// hangs up after this point hung up on a complete answer.
    pub fn saw_terminal(&self) -> bool {
        self.format.saw_terminal()
    }

    /// Offered bytes are still waiting for [`ResponseParser::work`].
    pub fn has_work(&self) -> bool {
        self.inflow.has_work()
    }

    /// Decoded bytes parsed so far.
    pub fn decoded_len(&self) -> u64 {
        self.inflow.decoded_len()
    }

    /// Why parsing stopped before the end, if it did.
    pub fn stopped(&self) -> Option<ParseStop> {
        self.inflow.stop()
    }

    /// Bytes the decoder holds now (see `StreamDecoder::memory`); 0 for identity bodies.
    pub fn memory(&self) -> usize {
        self.inflow.memory()
    }

    /// Stop parsing for `reason`; the decoder's memory goes at once, the facts so far stay.
    pub fn give_up(&mut self, reason: ParseStop) {
        self.inflow.give_up(reason);
    }

    /// The body ended (or was dropped): free the decoder now, keep the facts for `finish`.
    pub fn end_input(&mut self) {
        self.inflow.end_input();
    }

    /// `complete` = the body reached its end normally; a stream without its terminal event is StreamCutShort.
    pub fn finish(mut self, complete: bool) -> ResponseFacts {
        let is_stream = self
            .body
            .finish(complete, self.format.as_mut(), self.sse_hint)
            && !self.error_status;
        let mut acc = self.format.into_acc();
        let usage_source = match (is_stream, acc.terminal, acc.usage_seen) {
            (true, false, _) => UsageSource::StreamCutShort,
            (true, true, true) => UsageSource::Stream,
            (false, _, true) => UsageSource::Response,
            (_, _, false) => UsageSource::Absent,
        };
        ResponseFacts {
            finish_reasons: acc.finish_reasons(),
            model: acc.model,
            id: acc.id,
            usage: acc.usage,
            usage_source,
            error_type: acc.error_type,
            error_message: acc.error_message,
            is_stream,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// One fixture and the facts it must give.
    pub(crate) struct Case {
        pub(crate) name: &'static str,
        pub(crate) shape: ApiShape,
        pub(crate) content_type: Option<&'static str>,
        pub(crate) status: u16,
        pub(crate) body: &'static [u8],
        pub(crate) model: Option<&'static str>,
        pub(crate) id: Option<&'static str>,
        pub(crate) finish: &'static [&'static str],
        /// input, output, cache_read, cache_creation, reasoning
        pub(crate) usage: [Option<i64>; 5],
        pub(crate) source: UsageSource,
        pub(crate) error: Option<(&'static str, &'static str)>,
        pub(crate) is_stream: bool,
    }

    fn expected(c: &Case) -> ResponseFacts {
        let [input, output, cache_read, cache_creation, reasoning] = c.usage;
        ResponseFacts {
            model: c.model.map(str::to_string),
            id: c.id.map(str::to_string),
            finish_reasons: c.finish.iter().map(|s| s.to_string()).collect(),
            usage: Usage {
                input_tokens: input,
                output_tokens: output,
                cache_read_input_tokens: cache_read,
                cache_creation_input_tokens: cache_creation,
                reasoning_output_tokens: reasoning,
            },
            usage_source: c.source,
            error_type: c.error.map(|e| e.0.to_string()),
            error_message: c.error.map(|e| e.1.to_string()),
            is_stream: c.is_stream,
        }
    }

    /// Small deterministic generator for split points (no proptest in this crate).
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }
    }

    /// `body` cut into random pieces, from 1 byte to a few hundred.
    pub(crate) fn random_pieces<'a>(body: &'a [u8], rng: &mut Rng) -> Vec<&'a [u8]> {
        let mut pieces = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let max = [2, 8, 64, 700][rng.below(4)];
            let (a, b) = rest.split_at((1 + rng.below(max)).min(rest.len()));
            pieces.push(a);
            rest = b;
        }
        pieces
    }

    pub(crate) fn parse(
        c: &Case,
        content_type: Option<&str>,
        encoding: Option<&str>,
        pieces: &[&[u8]],
        complete: bool,
    ) -> ResponseFacts {
        let mut p = ResponseParser::new(c.shape, content_type, encoding, c.status);
        for piece in pieces {
            p.feed(piece);
        }
        p.finish(complete)
    }

    pub(crate) fn compress(encoding: &str, data: &[u8]) -> Vec<u8> {
        let level = flate2::Compression::default();
        match encoding {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "deflate" => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "br" => {
                let mut out = Vec::new();
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
                drop(w);
                out
            }
            "zstd" => zstd::encode_all(data, 3).unwrap(),
            _ => data.to_vec(),
        }
    }

    /// Whole, byte by byte, random splits, compressed, CRLF/CR line ends and sniffed content type: all the same facts.
    pub(crate) fn check_cases(cases: &[Case]) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for c in cases {
            let want = expected(c);
            for complete in [true, false] {
                assert_eq!(
                    parse(c, c.content_type, None, &[c.body], complete),
                    want,
                    "{} complete={complete}",
                    c.name
                );
            }
            let bytes: Vec<&[u8]> = c.body.chunks(1).collect();
            assert_eq!(
                parse(c, c.content_type, None, &bytes, true),
                want,
                "{} byte by byte",
                c.name
            );
            for round in 0..30 {
                let pieces = random_pieces(c.body, &mut rng);
                assert_eq!(
                    parse(c, c.content_type, None, &pieces, true),
                    want,
                    "{} split round {round}",
                    c.name
                );
            }
            for enc in ["gzip", "deflate", "br", "zstd"] {
                let packed = compress(enc, c.body);
                let pieces = random_pieces(&packed, &mut rng);
                assert_eq!(
                    parse(c, c.content_type, Some(enc), &pieces, true),
                    want,
                    "{} {enc}",
                    c.name
                );
            }
            assert_eq!(
                parse(c, None, None, &[c.body], true),
                want,
                "{} sniffed",
                c.name
            );
            if c.content_type.is_some_and(|t| t.contains("event-stream")) {
                for eol in ["\r\n", "\r"] {
                    let text = String::from_utf8_lossy(c.body).replace('\n', eol);
                    let pieces = random_pieces(text.as_bytes(), &mut rng);
                    assert_eq!(
                        parse(c, c.content_type, None, &pieces, true),
                        want,
                        "{} eol {eol:?}",
                        c.name
                    );
                }
            }
        }
    }

    #[test]
    fn shape_from_path() {
        use ApiShape::*;
        let cases = [
            ("/v1/messages", AnthropicMessages),
            ("/v1/messages?beta=true", AnthropicMessages),
            ("/anthropic/v1/messages/", AnthropicMessages),
            ("/v1/messages/count_tokens", Unknown),
            ("/v1/messages/batches", Unknown),
            ("/v1/threads/thread_1/messages", Unknown),
            ("/v1/chat/completions", OpenAiChat),
            (
                "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
                OpenAiChat,
            ),
            ("/v1beta/openai/chat/completions", OpenAiChat),
            ("/v1/responses", OpenAiResponses),
            ("/openai/v1/responses?api-version=preview", OpenAiResponses),
            ("/v1/completions", OpenAiCompletions),
            ("/v1/embeddings", OpenAiEmbeddings),
            (
                "/v1beta/models/gemini-2.5-flash:generateContent",
                GeminiGenerate,
            ),
            (
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                GeminiGenerate,
            ),
            (
                "/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash:streamGenerateContent",
                GeminiGenerate,
            ),
            ("/v1beta/models/gemini-2.5-flash:countTokens", Unknown),
            ("/v1beta/models/text-embedding-004:embedContent", Unknown),
            ("/v1/models", Unknown),
            ("/", Unknown),
            ("", Unknown),
            ("?x=1", Unknown),
            ("http://localhost:8080/v1/chat/completions", OpenAiChat),
            (
                "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent?key=k",
                GeminiGenerate,
            ),
        ];
        for (path, want) in cases {
            assert_eq!(ApiShape::from_path(path), want, "{path}");
        }
    }

    #[test]
    fn names() {
        use ApiShape::*;
        let ops = [
            (AnthropicMessages, Some("chat")),
            (OpenAiChat, Some("chat")),
            (OpenAiResponses, Some("chat")),
            (OpenAiCompletions, Some("text_completion")),
            (OpenAiEmbeddings, Some("embeddings")),
            (GeminiGenerate, Some("generate_content")),
            (Unknown, None),
        ];
        for (shape, want) in ops {
            assert_eq!(shape.operation_name(), want, "{shape:?}");
        }
        let sources = [
            (UsageSource::Response, "response"),
            (UsageSource::Stream, "stream"),
            (UsageSource::Absent, "absent"),
            (UsageSource::StreamCutShort, "stream_cut_short"),
        ];
        for (source, want) in sources {
            assert_eq!(source.as_str(), want);
        }
    }

    fn req(model: Option<&str>, stream: Option<bool>, max_tokens: Option<i64>) -> RequestFacts {
        RequestFacts {
            model: model.map(str::to_string),
            stream,
            max_tokens,
            stopped: None,
        }
    }

    #[test]
    fn requests() {
        use ApiShape::*;
        let fx = |name: &str| -> &'static [u8] {
            match name {
                "anthropic" => {
                    include_bytes!("../../tests/fixtures/providers/requests/anthropic.json")
                }
                "chat" => {
                    include_bytes!("../../tests/fixtures/providers/requests/openai_chat.json")
                }
                "responses" => {
                    include_bytes!("../../tests/fixtures/providers/requests/openai_responses.json")
                }
                _ => include_bytes!("../../tests/fixtures/providers/requests/gemini.json"),
            }
        };
        let gemini_stream = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
        let cases: Vec<(&str, ApiShape, &str, &[u8], RequestFacts)> = vec![
            ("anthropic", AnthropicMessages, "/v1/messages", fx("anthropic"), req(Some("claude-sonnet-4-5"), Some(true), Some(8192))),
            ("chat", OpenAiChat, "/v1/chat/completions", fx("chat"), req(Some("gpt-4.1"), Some(true), Some(2048))),
            ("responses", OpenAiResponses, "/v1/responses", fx("responses"), req(Some("gpt-5"), Some(false), Some(4096))),
            ("gemini", GeminiGenerate, gemini_stream, fx("gemini"), req(Some("gemini-2.5-flash"), Some(true), Some(1000))),
            ("gemini non-stream", GeminiGenerate, "/v1beta/models/gemini-2.5-pro:generateContent", b"{}", req(Some("gemini-2.5-pro"), Some(false), None)),
            ("gemini snake case", GeminiGenerate, "/v1/models/g:generateContent", br#"{"generation_config":{"max_output_tokens":7}}"#, req(Some("g"), Some(false), Some(7))),
            ("chat max_tokens only", OpenAiChat, "/v1/chat/completions", br#"{"model":"gpt-4o","max_tokens":100}"#, req(Some("gpt-4o"), Some(false), Some(100))),
            ("chat both limits", OpenAiChat, "/v1/chat/completions", br#"{"max_tokens":1,"max_completion_tokens":2,"model":"m","stream":false}"#, req(Some("m"), Some(false), Some(2))),
            ("truncated: stream unknown", AnthropicMessages, "/v1/messages", br#"{"model":"claude-opus-4-1","max_tokens":1024,"messages":[{"role":"user","content":"hel"#, req(Some("claude-opus-4-1"), None, Some(1024))),
            ("truncated number is not trusted", AnthropicMessages, "/v1/messages", br#"{"model":"c","max_tokens":10"#, req(Some("c"), None, None)),
            ("nested model ignored", OpenAiChat, "/v1/chat/completions", br#"{"messages":[{"model":"no"}],"metadata":{"model":"no"}}"#, req(None, Some(false), None)),
            ("embeddings", OpenAiEmbeddings, "/v1/embeddings", br#"{"model":"text-embedding-3-small","input":"hi"}"#, req(Some("text-embedding-3-small"), None, None)),
            ("completions", OpenAiCompletions, "/v1/completions", br#"{"model":"gpt-3.5-turbo-instruct","max_tokens":7,"stream":true}"#, req(Some("gpt-3.5-turbo-instruct"), Some(true), Some(7))),
            ("empty model and odd types", OpenAiChat, "/v1/chat/completions", br#"{"model":"","stream":"yes","max_tokens":"12"}"#, req(None, Some(false), Some(12))),
            ("garbage", OpenAiChat, "/v1/chat/completions", b"\x00\x01not json", req(None, None, None)),
            ("empty body", AnthropicMessages, "/v1/messages", b"", req(None, None, None)),
            ("unknown shape", Unknown, "/v1/models", br#"{"model":"x"}"#, req(None, None, None)),
        ];
        for (name, shape, path, body, want) in cases {
            assert_eq!(parse_request(shape, path, body), want, "{name}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let bodies: [&[u8]; 4] = [
            include_bytes!("../../tests/fixtures/providers/garbage/random.bin"),
            include_bytes!("../../tests/fixtures/providers/garbage/bad_gateway.html"),
            include_bytes!("../../tests/fixtures/providers/garbage/half_json.txt"),
            b"",
        ];
        let shapes = [
            ApiShape::AnthropicMessages,
            ApiShape::OpenAiChat,
            ApiShape::OpenAiResponses,
            ApiShape::OpenAiEmbeddings,
            ApiShape::GeminiGenerate,
            ApiShape::Unknown,
        ];
        let mut rng = Rng(7);
        for body in bodies {
            for shape in shapes {
                for (ct, enc, status) in [
                    (Some("text/event-stream"), None, 200),
                    (Some("application/json"), None, 200),
                    (None, None, 502),
                    (Some("text/event-stream"), Some("gzip"), 200),
                    (Some("application/json"), Some("br"), 500),
                    (Some("application/json"), Some("zstd"), 200),
                    (None, Some("compress"), 200),
                ] {
                    let mut whole = ResponseParser::new(shape, ct, enc, status);
                    whole.feed(body);
                    let mut p = ResponseParser::new(shape, ct, enc, status);
                    for piece in random_pieces(body, &mut rng) {
                        p.feed(piece);
                    }
                    let facts = p.finish(false);
                    assert_eq!(facts, whole.finish(false), "{shape:?} {ct:?} split");
                    assert_eq!(facts.usage, Usage::default(), "{shape:?} {ct:?}");
                    let _ = parse_request(shape, "/v1beta/models/x:generateContent", body);
                }
            }
        }
    }

    #[test]
    fn unknown_shape_and_unsupported_encoding() {
        let mut p = ResponseParser::new(
            ApiShape::Unknown,
            Some("text/event-stream"),
            Some("gzip"),
            200,
        );
        p.feed(b"data: {\"usage\":{}}\n\n");
        let facts = p.finish(true);
        assert_eq!(
            (facts.is_stream, facts.usage_source),
            (true, UsageSource::StreamCutShort)
        );
        let mut p = ResponseParser::new(
            ApiShape::OpenAiChat,
            Some("application/json"),
            Some("gzip, br"),
            200,
        );
        p.feed(br#"{"model":"x","usage":{"prompt_tokens":1}}"#);
        let facts = p.finish(true);
        assert_eq!(
            (facts.model, facts.usage_source),
            (None, UsageSource::Absent)
        );
    }

    #[test]
    fn parser_is_send() {
        fn send<T: Send + 'static>() {}
        send::<ResponseParser>();
    }

    /// Bytes held by the parser's own buffers (the decoder's window aside).
    fn held(p: &ResponseParser) -> usize {
        match &p.body {
            Body::Sse(f, s) => f.held() + s.held(),
            Body::Json(s) => s.held(),
            _ => 0,
        }
    }

    #[test]
    fn fifty_megabyte_stream_finds_final_usage_in_bounded_memory() {
        let head = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_big\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n";
        let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lorem ipsum dolor sit amet, \\\"quoted\\\" \\u00e9 {not json} \"}}\n\n".repeat(200);
        let tail = b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":123456}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let mut p = ResponseParser::new(
            ApiShape::AnthropicMessages,
            Some("text/event-stream"),
            None,
            200,
        );
        p.feed(head);
        let mut fed = 0;
        let mut most = 0;
        while fed < 50 << 20 {
            for piece in delta.as_bytes().chunks(16 * 1024 + 7) {
                p.feed(piece);
            }
            fed += delta.len();
            most = most.max(held(&p));
        }
        p.feed(tail);
        assert!(most < 4096, "held {most} bytes");
        let facts = p.finish(true);
        assert_eq!(facts.usage.output_tokens, Some(123456));
        assert_eq!(facts.usage_source, UsageSource::Stream);
        assert_eq!(facts.finish_reasons, vec!["end_turn".to_string()]);
    }

    #[test]
    fn huge_json_bodies_and_events() {
        // Text, not one letter repeated: 12 MiB of `x` compresses past the bomb ratio.
        let mut rng = Rng(7);
        let text: String = (0..12 << 20)
            .map(|_| char::from(b"abcdefghij klmnopqrstuvwxyz"[rng.below(27)]))
            .collect();
        let body = format!(
            r#"{{"id":"chatcmpl-big","object":"chat.completion","model":"gpt-4.1","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"length"}}],"usage":{{"prompt_tokens":5,"completion_tokens":32768}}}}"#
        );
        let mut p = ResponseParser::new(
            ApiShape::OpenAiChat,
            Some("application/json"),
            Some("gzip"),
            200,
        );
        let packed = compress("gzip", body.as_bytes());
        let mut most = 0;
        for piece in packed.chunks(8192) {
            p.feed(piece);
            most = most.max(held(&p));
        }
        assert!(most < 4096, "held {most} bytes");
        let facts = p.finish(true);
        assert_eq!(
            (facts.usage.output_tokens, facts.finish_reasons),
            (Some(32768), vec!["length".to_string()])
        );
        // One 3 MB `response.completed` event (the whole output echoed back) still yields its usage.
        let big = "y".repeat(3 << 20);
        let event = format!(
            "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"resp_1\",\"status\":\"completed\",\"instructions\":\"{big}\",\"model\":\"gpt-5\",\"output\":[{{\"type\":\"message\",\"content\":[{{\"type\":\"output_text\",\"text\":\"{big}\"}}]}}],\"usage\":{{\"input_tokens\":1,\"output_tokens\":2}}}}}}\n\n"
        );
        let mut p = ResponseParser::new(
            ApiShape::OpenAiResponses,
            Some("text/event-stream"),
            None,
            200,
        );
        for piece in event.as_bytes().chunks(65536) {
            p.feed(piece);
        }
        let facts = p.finish(true);
        assert_eq!(
            (facts.model.as_deref(), facts.usage.output_tokens),
            (Some("gpt-5"), Some(2))
        );
        assert_eq!(facts.usage_source, UsageSource::Stream);
    }

    #[test]
    fn decompression_bomb_stops_parsing() {
        let zeros = vec![b' '; 100 << 20];
        let packed = compress("zstd", &zeros);
        let mut p = ResponseParser::new(
            ApiShape::OpenAiChat,
            Some("application/json"),
            Some("zstd"),
            200,
        );
        for piece in packed.chunks(1024) {
            p.feed(piece);
        }
        assert_eq!(p.stopped(), Some(ParseStop::RatioLimit));
        assert!(p.decoded_len() <= FREE_DECODED);
        assert_eq!(p.finish(true).usage_source, UsageSource::Absent);
    }

    /// Every fixture, for the mutation test.
    const ALL_FIXTURES: [&[u8]; 46] = [
        include_bytes!("../../tests/fixtures/providers/anthropic/error_400.json"),
        include_bytes!("../../tests/fixtures/providers/anthropic/error_429.json"),
        include_bytes!("../../tests/fixtures/providers/anthropic/error_500.json"),
        include_bytes!("../../tests/fixtures/providers/anthropic/message.json"),
        include_bytes!("../../tests/fixtures/providers/anthropic/stream.sse"),
        include_bytes!("../../tests/fixtures/providers/anthropic/stream_cut.sse"),
        include_bytes!("../../tests/fixtures/providers/anthropic/stream_delta_full_usage.sse"),
        include_bytes!("../../tests/fixtures/providers/anthropic/stream_error.sse"),
        include_bytes!("../../tests/fixtures/providers/anthropic/tool_use.json"),
        include_bytes!("../../tests/fixtures/providers/garbage/bad_gateway.html"),
        include_bytes!("../../tests/fixtures/providers/garbage/half_json.txt"),
        include_bytes!("../../tests/fixtures/providers/garbage/random.bin"),
        include_bytes!("../../tests/fixtures/providers/gemini/error_400.json"),
        include_bytes!("../../tests/fixtures/providers/gemini/error_429.json"),
        include_bytes!("../../tests/fixtures/providers/gemini/error_500.json"),
        include_bytes!("../../tests/fixtures/providers/gemini/error_503_array.json"),
        include_bytes!("../../tests/fixtures/providers/gemini/generate.json"),
        include_bytes!("../../tests/fixtures/providers/gemini/stream.sse"),
        include_bytes!("../../tests/fixtures/providers/gemini/stream_array.json"),
        include_bytes!("../../tests/fixtures/providers/gemini/stream_array_cut.json"),
        include_bytes!("../../tests/fixtures/providers/gemini/stream_cut.sse"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/completion.json"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/completion_n2.json"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/completions_legacy.json"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/embeddings.json"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/error_400.json"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/error_401.json"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/error_429.json"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/error_500.json"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/stream_cut.sse"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/stream_error.sse"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/stream_n2.sse"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/stream_no_usage.sse"),
        include_bytes!("../../tests/fixtures/providers/openai_chat/stream_usage.sse"),
        include_bytes!("../../tests/fixtures/providers/openai_responses/error_400.json"),
        include_bytes!("../../tests/fixtures/providers/openai_responses/response.json"),
        include_bytes!("../../tests/fixtures/providers/openai_responses/response_incomplete.json"),
        include_bytes!("../../tests/fixtures/providers/openai_responses/stream.sse"),
        include_bytes!("../../tests/fixtures/providers/openai_responses/stream_cut.sse"),
        include_bytes!("../../tests/fixtures/providers/openai_responses/stream_error.sse"),
        include_bytes!("../../tests/fixtures/providers/openai_responses/stream_failed.sse"),
        include_bytes!("../../tests/fixtures/providers/openai_responses/stream_incomplete.sse"),
        include_bytes!("../../tests/fixtures/providers/requests/anthropic.json"),
        include_bytes!("../../tests/fixtures/providers/requests/gemini.json"),
        include_bytes!("../../tests/fixtures/providers/requests/openai_chat.json"),
        include_bytes!("../../tests/fixtures/providers/requests/openai_responses.json"),
    ];

    /// Flip, insert and cut bytes of every fixture; any shape, content type and encoding must cope.
    #[test]
    fn mutated_fixtures_never_panic() {
        let rounds: usize = std::env::var("LLMTAP_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8);
        let specials = [
            b'"', b'\\', b'{', b'}', b'[', b']', b':', b',', b'\n', b'\r', 0xff, b'0',
        ];
        let mut rng = Rng(0x5eed);
        for fixture in ALL_FIXTURES {
            for _ in 0..rounds {
                let mut body = fixture.to_vec();
                for _ in 0..1 + rng.below(6) {
                    let at = rng.below(body.len());
                    match rng.below(3) {
                        0 => body.insert(at, specials[rng.below(specials.len())]),
                        1 => body.truncate(at.max(1)),
                        _ => {
                            if let Some(b) = body.get_mut(at) {
                                *b = specials[rng.below(specials.len())];
                            }
                        }
                    }
                }
                let shape = [
                    ApiShape::AnthropicMessages,
                    ApiShape::OpenAiChat,
                    ApiShape::OpenAiResponses,
                    ApiShape::GeminiGenerate,
                ][rng.below(4)];
                let ct = [Some("text/event-stream"), Some("application/json"), None][rng.below(3)];
                let status = [200, 429][rng.below(2)];
                let mut p = ResponseParser::new(shape, ct, None, status);
                for piece in random_pieces(&body, &mut rng) {
                    p.feed(piece);
                }
                let _ = p.finish(rng.below(2) == 0);
                let _ = parse_request(shape, "/v1beta/models/m:streamGenerateContent", &body);
                let enc = ["gzip", "deflate", "br", "zstd"][rng.below(4)];
                let mut packed = compress(enc, &body);
                let at = rng.below(packed.len());
                if let Some(b) = packed.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
                let mut p = ResponseParser::new(shape, ct, Some(enc), status);
                for piece in random_pieces(&packed, &mut rng) {
                    p.feed(piece);
                }
                let _ = p.finish(true);
                let cut = packed
                    .get(..rng.below(packed.len()) + 1)
                    .unwrap_or_default();
                let _ = decode::decode_body(Some(enc), cut, 1 << 20);
            }
        }
    }
}

#[cfg(test)]
mod request_parser_tests {
    use super::*;
    use std::io::Write;

    fn big_prompt_model_last() -> Vec<u8> {
        let prompt = "x".repeat(3 * 1024 * 1024);
        format!(
            r#"{{"max_tokens":64,"messages":[{{"role":"user","content":"{prompt}"}}],"model":"claude-opus-4-1","stream":true}}"#
        )
        .into_bytes()
    }

    #[test]
    fn model_after_a_long_prompt_is_found_in_any_chunking() {
        let body = big_prompt_model_last();
        for chunk in [1usize << 20, 65_536, 7_777] {
            let mut p = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", None);
            for piece in body.chunks(chunk) {
                p.feed(piece);
            }
            let facts = p.finish();
            assert_eq!(
                facts.model.as_deref(),
                Some("claude-opus-4-1"),
                "chunk {chunk}"
            );
            assert_eq!(facts.stream, Some(true));
            assert_eq!(facts.max_tokens, Some(64));
        }
    }

    #[test]
    fn gzip_request_bodies_are_decoded_on_the_copy() {
        let body = big_prompt_model_last();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&body).unwrap();
        let gz = gz.finish().unwrap();
        let mut p = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", Some("gzip"));
        for piece in gz.chunks(1000) {
            p.feed(piece);
        }
        assert_eq!(p.finish().model.as_deref(), Some("claude-opus-4-1"));
    }

    #[test]
    fn unknown_encodings_and_garbage_give_unknown_facts() {
        let mut p =
            RequestParser::new(ApiShape::OpenAiChat, "/v1/chat/completions", Some("snappy"));
        p.feed(br#"{"model":"gpt"}"#);
        assert_eq!(
            p.finish(),
            RequestFacts {
                stopped: Some(ParseStop::UnsupportedEncoding),
                ..RequestFacts::default()
            }
        );
        let mut p = RequestParser::new(ApiShape::OpenAiChat, "/v1/chat/completions", None);
        p.feed(b"\x00\xff{{{]]]");
        assert_eq!(p.finish().model, None);
        let facts = parse_request(
            ApiShape::GeminiGenerate,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            br#"{"generationConfig":{"maxOutputTokens":77}}"#,
        );
        assert_eq!(facts.model.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(facts.stream, Some(true));
        assert_eq!(facts.max_tokens, Some(77));
    }
}
