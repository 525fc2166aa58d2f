//! The response parser: body framing (JSON, SSE, AWS event stream, sniffed), decoding on the
//! copy with its bomb limits, and the format trait each provider's reader implements.

use bytes::Bytes;

use super::acc::Acc;
use super::decode::StreamDecoder;
use super::eventstream::{EventStreamFramer, FrameSink, Headers};
use super::inflow::Inflow;
use super::shape::Framing;
use super::skim::{JsonSkim, Path, Picker};
use super::sse::{SseEvent, SseFramer, SseSink};
use super::{ApiShape, ParseStop, ResponseFacts, UsageSource};

/// The content type of an AWS event stream.
const EVENT_STREAM_TYPE: &str = "application/vnd.amazon.eventstream";

/// One provider's response format: which values to pick, and what they mean.
pub(crate) trait Format: Picker + Send {
    /// One document ended: an SSE event (`Some`), or a whole JSON body or Gemini array chunk (`None`).
    fn end_doc(&mut self, event: Option<&SseEvent<'_>>);
    /// One event-stream message ended, its CRC checked (only APIs that stream that way).
    fn end_frame(&mut self, _headers: &Headers<'_>) {
        self.end_doc(None);
    }
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

/// Feeds one SSE event's data, or one event-stream message's payload, to the skimmer and
/// closes the document at its end.
struct DocSink<'a> {
    skim: &'a mut JsonSkim,
    format: &'a mut dyn Format,
}

impl SseSink for DocSink<'_> {
    fn data(&mut self, piece: &[u8]) {
        self.skim.feed(piece, self.format);
    }
    fn event(&mut self, event: &SseEvent<'_>) {
        self.skim.end(self.format);
        self.format.end_doc(Some(event));
        self.skim.reset();
    }
}

impl FrameSink for DocSink<'_> {
    fn payload(&mut self, piece: &[u8]) {
        self.skim.feed(piece, self.format);
    }
    fn message(&mut self, headers: &Headers<'_>) {
        self.skim.end(self.format);
        self.format.end_frame(headers);
        self.skim.reset();
    }
}

/// How the decoded body is read.
enum Body {
    /// Undecided until the first non-blank byte (no usable content type).
    Sniff(Framing),
    Sse(SseFramer, JsonSkim),
    Frames(EventStreamFramer, JsonSkim),
    Json(JsonSkim),
    Off,
}

impl Body {
    fn frames() -> Body {
        Body::Frames(EventStreamFramer::new(), JsonSkim::new())
    }

    /// What the first non-blank byte says the body is.
    fn sniffed(first: Option<&u8>, framing: Framing) -> Body {
        match (first, framing) {
            (Some(b'{' | b'['), _) => Body::Json(JsonSkim::new()),
            // An SSE line starts with a field (`data`, `event`, `id`, `retry`) or a `:` comment;
            // anything else (an HTML error page, binary) is neither, not a stream cut short.
            (Some(b'd' | b'e' | b'i' | b'r' | b':'), Framing::Sse) => {
                Body::Sse(SseFramer::new(), JsonSkim::new())
            }
            // An event-stream message under 16 MiB starts with a zero length byte.
            (Some(0), Framing::EventStream) => Body::frames(),
            _ => Body::Off,
        }
    }

    fn feed(&mut self, mut piece: &[u8], format: &mut dyn Format) {
        if let Body::Sniff(framing) = self {
            let Some(at) = piece.iter().position(|b| !b.is_ascii_whitespace()) else {
                return;
            };
            piece = piece.get(at..).unwrap_or_default();
            *self = Body::sniffed(piece.first(), *framing);
        }
        match self {
            Body::Sse(framer, skim) => framer.feed(piece, &mut DocSink { skim, format }),
            Body::Frames(framer, skim) => framer.feed(piece, &mut DocSink { skim, format }),
            Body::Json(skim) => skim.feed(piece, format),
            Body::Sniff(_) | Body::Off => {}
        }
    }

    /// End of body; returns whether it was a stream.
    fn finish(&mut self, complete: bool, format: &mut dyn Format, sse_hint: bool) -> bool {
        match self {
            Body::Sse(framer, skim) => {
                framer.finish(complete, &mut DocSink { skim, format });
                true
            }
            // A message not ended is not delivered: nothing to flush.
            Body::Frames(..) => true,
            Body::Json(skim) => {
                skim.end(format);
                format.end_doc(None);
                skim.root_is_array() && format.array_is_stream()
            }
            Body::Sniff(_) => false,
            Body::Off => sse_hint,
        }
    }

    /// The framing refused to read on (an event-stream message too large or corrupt).
    fn stop(&self) -> Option<ParseStop> {
        match self {
            Body::Frames(framer, _) => framer.stop(),
            _ => None,
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
        let provider = shape.provider();
        let format = match provider {
            Some(p) => p.response_format(),
            None => Box::new(NoFormat),
        };
        let body = match provider.map(|p| p.api().framing) {
            None => Body::Off,
            // Error bodies are JSON whatever the header claims.
            Some(_) if status >= 400 => Body::Json(JsonSkim::new()),
            Some(Framing::EventStream) if ct.contains(EVENT_STREAM_TYPE) => Body::frames(),
            Some(_) if sse_hint => Body::Sse(SseFramer::new(), JsonSkim::new()),
            Some(_) if ct.contains("json") => Body::Json(JsonSkim::new()),
            Some(framing) => Body::Sniff(framing),
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
        self.stop_with_body();
    }

    /// Queue `chunk` for [`ResponseParser::work`] (zero-copy).
    pub fn offer(&mut self, chunk: Bytes) {
        if !matches!(self.body, Body::Off) {
            self.inflow.offer(chunk);
        }
    }

    /// Decode and parse at most `WORK_SLICE` bytes of what was offered; true while work is left.
    pub fn work(&mut self) -> bool {
        let (body, format) = (&mut self.body, &mut self.format);
        let more = self
            .inflow
            .work(&mut |piece| body.feed(piece, format.as_mut()));
        self.stop_with_body() && more
    }

    /// A framing that stopped reading stops the decoding too; false when stopped.
    fn stop_with_body(&mut self) -> bool {
        let Some(reason) = self.body.stop() else {
            return true;
        };
        self.inflow.give_up(reason);
        false
    }

    /// The provider's stream said it was done (`message_stop`, `[DONE]`, ...): a client that
    /// hangs up after this point hung up on a complete answer.
    pub fn saw_terminal(&self) -> bool {
        self.format.saw_terminal()
    }

    inflow_methods!();

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
impl ResponseParser {
    /// Bytes held by the parser's own buffers (the decoder's window aside).
    pub(crate) fn held(&self) -> usize {
        match &self.body {
            Body::Sse(f, s) => f.held() + s.held(),
            Body::Frames(f, s) => f.held() + s.held(),
            Body::Json(s) => s.held(),
            _ => 0,
        }
    }
}
