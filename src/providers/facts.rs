//! What a parser found: the facts of a request and of a response, and why a parse stopped.

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
    /// A binary stream frame (AWS event stream) is larger than the framing allows.
    FrameLimit,
    /// A binary stream frame failed its length or CRC checks.
    CorruptFrame,
}

impl ParseStop {
    /// Stable name for records (`ratio_limit`, `corrupt_encoding`, `unsupported_encoding`,
    /// `memory_limit`, `frame_limit`, `corrupt_frame`).
    pub fn as_str(self) -> &'static str {
        match self {
            ParseStop::RatioLimit => "ratio_limit",
            ParseStop::CorruptEncoding => "corrupt_encoding",
            ParseStop::UnsupportedEncoding => "unsupported_encoding",
            ParseStop::MemoryLimit => "memory_limit",
            ParseStop::FrameLimit => "frame_limit",
            ParseStop::CorruptFrame => "corrupt_frame",
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
