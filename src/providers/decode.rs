//! Content-encoding decoding (gzip, deflate, br, zstd) of captured and streamed bodies, output in bounded pieces.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use brotli::enc::StandardAlloc;
use brotli::{Allocator, BrotliDecompressStream, BrotliResult, BrotliState, SliceWrapper};
use flate2::{Decompress, FlushDecompress, Status};
use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};

/// Decoded bytes are handed on in pieces of at most this size, whatever the compression ratio.
const OUT_PIECE: usize = 32 * 1024;
/// A gzip header with a longer file name or comment is not something an HTTP server sends.
const MAX_GZIP_HEADER: usize = 64 * 1024;
/// What one inflate state holds (its 32 KiB window and tables), for [`StreamDecoder::memory`].
const INFLATE_STATE: usize = 48 * 1024;
/// zstd window cap (8 MiB, RFC 8878's advice for HTTP) so a frame cannot make us allocate more.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content-encoding {0:?}")]
    Unsupported(String),
    #[error("corrupt {encoding} body: {reason}")]
    Corrupt { encoding: String, reason: String },
}

/// What the receiver of a decoded piece wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Go on decoding.
    Go,
    /// Stop for now: the decoder returns, and continues where it was on the next call.
    Pause,
    /// Stop for good: all further input is ignored.
    Stop,
}

/// Receives decoded pieces and says how to go on.
type Emit<'a> = dyn FnMut(&[u8]) -> Flow + 'a;

/// How far one call of [`StreamDecoder::step`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stepped {
    /// All the input was used (or ignored: after the end of the stream, or once stopped).
    Consumed,
    /// The receiver paused after this many input bytes were used; the decoder may still hold
    /// output: call again with the rest of the input (possibly none) to get it.
    Paused(usize),
}

/// What a decompressor's run over some input ended with.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Input bytes used; all of them unless `flow` is `Pause`.
    used: usize,
    flow: Flow,
}

impl Run {
    fn of(input: &[u8], used: usize, flow: Flow) -> Run {
        match flow {
            Flow::Pause => Run { used, flow },
            _ => Run {
                used: input.len(),
                flow,
            },
        }
    }
}

/// Decode a whole captured body for logging, output bounded by `limit` bytes (zip-bomb safe); returns (decoded, truncated_by_limit). identity/None returns the input.
///
/// A body cut short (the capture cap) decodes to what its bytes hold, without error.
pub fn decode_body(
    encoding: Option<&str>,
    bytes: &[u8],
    limit: usize,
) -> Result<(Vec<u8>, bool), DecodeError> {
    let mut decoder = StreamDecoder::new(encoding)?;
    let mut out = Vec::with_capacity(bytes.len().min(limit));
    let mut truncated = false;
    decoder.push_with(bytes, &mut |piece| {
        let room = limit.saturating_sub(out.len());
        if piece.len() > room {
            out.extend_from_slice(piece.get(..room).unwrap_or_default());
            truncated = true;
            return false;
        }
        out.extend_from_slice(piece);
        true
    })?;
    Ok((out, truncated))
}

/// Streaming decoder used by ResponseParser: push compressed bytes, get decoded bytes out.
pub struct StreamDecoder {
    encoding: &'static str,
    inner: Inner,
    out: Vec<u8>,
    failed: Option<String>,
    stopped: bool,
}

enum Inner {
    Identity,
    Gzip(Gzip),
    Deflate(Deflate),
    Brotli(Box<Brotli>),
    Zstd(Box<DCtx<'static>>),
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder")
            .field("encoding", &self.encoding)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// The one real coding in a `Content-Encoding` value; `identity` parts are ignored, stacks are refused.
fn coding(encoding: Option<&str>) -> Result<&'static str, DecodeError> {
    let unsupported = || DecodeError::Unsupported(encoding.unwrap_or_default().to_string());
    let mut found = None;
    for part in encoding.unwrap_or_default().split(',').map(str::trim) {
        if part.is_empty() || part.eq_ignore_ascii_case("identity") {
            continue;
        }
        let name = ["gzip", "x-gzip", "deflate", "br", "zstd"]
            .into_iter()
            .find(|n| part.eq_ignore_ascii_case(n))
            .ok_or_else(unsupported)?;
        if found.replace(name).is_some() {
            return Err(unsupported());
        }
    }
    Ok(found.unwrap_or("identity"))
}

impl StreamDecoder {
    /// Supports gzip, x-gzip, deflate (zlib-wrapped and raw), br, zstd, identity; stacked encodings are Unsupported.
    pub fn new(encoding: Option<&str>) -> Result<StreamDecoder, DecodeError> {
        let name = coding(encoding)?;
        let inner = match name {
            "gzip" | "x-gzip" => Inner::Gzip(Gzip::default()),
            "deflate" => Inner::Deflate(Deflate::default()),
            "br" => Inner::Brotli(Box::new(Brotli::new())),
            "zstd" => Inner::Zstd(Box::new(zstd_decoder().map_err(|reason| {
                DecodeError::Corrupt {
                    encoding: name.to_string(),
                    reason,
                }
            })?)),
            _ => Inner::Identity,
        };
        let out = match inner {
            Inner::Identity => Vec::new(),
            _ => vec![0; OUT_PIECE],
        };
        Ok(StreamDecoder {
            encoding: name,
            inner,
            out,
            failed: None,
            stopped: false,
        })
    }

    /// Push compressed bytes; decoded bytes are appended to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        self.push_with(input, &mut |piece| {
            out.extend_from_slice(piece);
            true
        })
    }

    /// Push compressed bytes; decoded bytes go to `emit` in pieces of at most 32 KiB.
    /// Once `emit` returns false the decoder ignores all further input.
    pub(crate) fn push_with(
        &mut self,
        input: &[u8],
        emit: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), DecodeError> {
        if input.is_empty() {
            return Ok(());
        }
        let mut flow = |piece: &[u8]| if emit(piece) { Flow::Go } else { Flow::Stop };
        self.step(input, &mut flow).map(|_| ())
    }

    /// The identity coding: bytes pass through as they are.
    pub(crate) fn is_identity(&self) -> bool {
        matches!(self.inner, Inner::Identity)
    }

    /// Decode `input`, handing the output to `emit` in pieces of at most 32 KiB, until the input
    /// is used up or `emit` pauses or stops. After a pause, call again with the unused rest
    /// (even when empty: the decoder may hold output for it).
    pub(crate) fn step(
        &mut self,
        input: &[u8],
        emit: &mut Emit<'_>,
    ) -> Result<Stepped, DecodeError> {
        if let Some(reason) = &self.failed {
            return Err(self.corrupt(reason.clone()));
        }
        if self.stopped {
            return Ok(Stepped::Consumed);
        }
        let out = &mut self.out;
        let run = match &mut self.inner {
            Inner::Identity if input.is_empty() => Ok(Run::of(input, 0, Flow::Go)),
            // The piece is handed on whole: the caller bounds identity input itself.
            Inner::Identity => Ok(match emit(input) {
                Flow::Stop => Run::of(input, 0, Flow::Stop),
                _ => Run::of(input, 0, Flow::Go),
            }),
            Inner::Gzip(g) => g.push(input, out, emit),
            Inner::Deflate(d) => d.push(input, out, emit),
            Inner::Brotli(b) => b.push(input, out, emit),
            Inner::Zstd(z) => zstd_push(z, input, out, emit),
        };
        match run {
            Ok(Run {
                used,
                flow: Flow::Pause,
            }) => Ok(Stepped::Paused(used)),
            Ok(Run { flow, .. }) => {
                self.stopped = flow == Flow::Stop;
                Ok(Stepped::Consumed)
            }
            Err(reason) => {
                self.failed = Some(reason.clone());
                Err(self.corrupt(reason))
            }
        }
    }

    /// Bytes this decoder holds: its output buffer and its state (the inflate window, the
    /// brotli ring buffer and tables as allocated, the zstd context with its window). A stream
    /// decides how large its window is, so callers charge this to a budget and give up past it.
    pub(crate) fn memory(&self) -> usize {
        let state = match &self.inner {
            Inner::Identity => 0,
            Inner::Gzip(g) => g.memory(),
            Inner::Deflate(d) => d.memory(),
            Inner::Brotli(b) => b.used.load(Ordering::Relaxed),
            Inner::Zstd(z) => z.sizeof(),
        };
        state.saturating_add(self.out.capacity())
    }

    fn corrupt(&self, reason: String) -> DecodeError {
        DecodeError::Corrupt {
            encoding: self.encoding.to_string(),
            reason,
        }
    }
}

/// What one run of a decompressor over some input did.
struct Step {
    used: usize,
    ended: bool,
    flow: Flow,
}

/// Inflate `input` with `d`, emitting output piece by piece, until the input is used up, the
/// stream ends or `emit` pauses or stops. Empty input flushes output `d` still holds.
fn inflate(
    d: &mut Decompress,
    input: &[u8],
    out: &mut [u8],
    emit: &mut Emit<'_>,
) -> Result<Step, String> {
    let mut pos = 0;
    loop {
        let (in0, out0) = (d.total_in(), d.total_out());
        let rest = input.get(pos..).unwrap_or_default();
        let status = d
            .decompress(rest, out, FlushDecompress::None)
            .map_err(|e| e.to_string())?;
        let used = usize::try_from(d.total_in().saturating_sub(in0)).unwrap_or(usize::MAX);
        let made = usize::try_from(d.total_out().saturating_sub(out0)).unwrap_or(usize::MAX);
        pos = pos.saturating_add(used).min(input.len());
        let flow = match made {
            0 => Flow::Go,
            _ => emit(out.get(..made).unwrap_or_default()),
        };
        let ended = status == Status::StreamEnd;
        // Input used up is not enough: inflate may still hold decoded bytes that come out
        // only on a further call, so go on until a call makes nothing.
        let drained = pos >= input.len() && made == 0;
        if used == 0 && made == 0 && !ended && !drained {
            // Input left, room for output, yet no progress: a broken stream, not a reason to spin.
            return Err("deflate stream makes no progress".to_string());
        }
        if flow != Flow::Go || ended || drained {
            return Ok(Step {
                used: pos,
                ended,
                flow,
            });
        }
    }
}

/// Gzip members: header, raw deflate, 8-byte trailer (CRC not checked: this copy only feeds logs).
enum GzPhase {
    Header(Vec<u8>),
    Body(Box<Decompress>),
    Trailer(usize),
    Between,
    Trailing,
}

struct Gzip {
    phase: GzPhase,
}

impl Gzip {
    fn memory(&self) -> usize {
        match &self.phase {
            GzPhase::Header(buf) => buf.capacity(),
            GzPhase::Body(_) => INFLATE_STATE,
            _ => 0,
        }
    }
}

impl Default for Gzip {
    fn default() -> Self {
        Gzip {
            phase: GzPhase::Header(Vec::new()),
        }
    }
}

impl Gzip {
    fn push(&mut self, all: &[u8], out: &mut [u8], emit: &mut Emit<'_>) -> Result<Run, String> {
        let mut input = all;
        // Inside a member, run once even without input: a paused inflate may hold output.
        let mut flush = matches!(self.phase, GzPhase::Body(_));
        while std::mem::take(&mut flush) || !input.is_empty() {
            input = match &mut self.phase {
                GzPhase::Header(buf) => {
                    let (rest, body) = gzip_header(buf, input)?;
                    if body {
                        self.phase = GzPhase::Body(Box::new(Decompress::new(false)));
                    }
                    rest
                }
                GzPhase::Body(d) => {
                    let step = inflate(d, input, out, emit)?;
                    if step.ended {
                        self.phase = GzPhase::Trailer(8);
                    }
                    let rest = input.get(step.used..).unwrap_or_default();
                    if step.flow != Flow::Go {
                        let used = all.len().saturating_sub(rest.len());
                        return Ok(Run::of(all, used, step.flow));
                    }
                    rest
                }
                GzPhase::Trailer(left) => {
                    let n = (*left).min(input.len());
                    *left = left.saturating_sub(n);
                    if *left == 0 {
                        self.phase = GzPhase::Between;
                    }
                    input.get(n..).unwrap_or_default()
                }
                GzPhase::Between => {
                    // Another member, or padding/garbage after the last one, which browsers ignore too.
                    self.phase = match input.first() {
                        Some(0x1f) => GzPhase::Header(Vec::new()),
                        _ => GzPhase::Trailing,
                    };
                    input
                }
                GzPhase::Trailing => &[],
            };
        }
        Ok(Run::of(all, 0, Flow::Go))
    }
}

/// Add `input` to the header bytes seen so far; returns the input left after the header and whether it is complete.
fn gzip_header<'a>(buf: &mut Vec<u8>, input: &'a [u8]) -> Result<(&'a [u8], bool), String> {
    let old = buf.len();
    let room = MAX_GZIP_HEADER.saturating_sub(old).min(input.len());
    buf.extend_from_slice(input.get(..room).unwrap_or_default());
    match gzip_header_len(buf)? {
        Some(len) => Ok((
            input.get(len.saturating_sub(old)..).unwrap_or_default(),
            true,
        )),
        None if buf.len() >= MAX_GZIP_HEADER => Err("gzip header too long".to_string()),
        None => Ok((input.get(room..).unwrap_or_default(), false)),
    }
}

/// Length of the gzip member header at the start of `h`, or None if more bytes are needed.
fn gzip_header_len(h: &[u8]) -> Result<Option<usize>, String> {
    for (i, want) in [0x1f_u8, 0x8b, 8].into_iter().enumerate() {
        match h.get(i) {
            None => return Ok(None),
            Some(&b) if b != want => return Err("not a gzip stream".to_string()),
            Some(_) => {}
        }
    }
    let Some(&flags) = h.get(3) else {
        return Ok(None);
    };
    let mut pos: usize = 10;
    if flags & 0x04 != 0 {
        let (Some(&lo), Some(&hi)) = (h.get(10), h.get(11)) else {
            return Ok(None);
        };
        pos = pos.saturating_add(2 + usize::from(u16::from_le_bytes([lo, hi])));
    }
    for bit in [0x08, 0x10] {
        if flags & bit != 0 {
            let Some(nul) = h.get(pos..).and_then(|t| memchr::memchr(0, t)) else {
                return Ok(None);
            };
            pos = pos.saturating_add(nul).saturating_add(1);
        }
    }
    if flags & 0x02 != 0 {
        pos = pos.saturating_add(2);
    }
    Ok((h.len() >= pos).then_some(pos))
}

/// HTTP `deflate` is meant to be zlib-wrapped, but some servers send raw deflate: the first two bytes tell.
#[derive(Default)]
struct Deflate {
    sniff: Vec<u8>,
    d: Option<Box<Decompress>>,
    ended: bool,
}

impl Deflate {
    fn memory(&self) -> usize {
        self.d.as_ref().map_or(0, |_| INFLATE_STATE)
    }

    fn push(&mut self, all: &[u8], out: &mut [u8], emit: &mut Emit<'_>) -> Result<Run, String> {
        let mut input = all;
        if self.d.is_none() {
            let need = 2usize.saturating_sub(self.sniff.len()).min(input.len());
            self.sniff
                .extend_from_slice(input.get(..need).unwrap_or_default());
            input = input.get(need..).unwrap_or_default();
            let [cmf, flg] = self.sniff.as_slice() else {
                return Ok(Run::of(all, 0, Flow::Go));
            };
            let zlib = cmf & 0x0f == 8
                && cmf >> 4 <= 7
                && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0;
            self.d = Some(Box::new(Decompress::new(zlib)));
            let head = std::mem::take(&mut self.sniff);
            // Two bytes of deflate never fill the output buffer: a pause here has used them.
            let run = self.run(&head, out, emit)?;
            if run.flow != Flow::Go {
                return Ok(Run::of(all, need, run.flow));
            }
        }
        let run = self.run(input, out, emit)?;
        let used = all
            .len()
            .saturating_sub(input.len())
            .saturating_add(run.used);
        Ok(Run::of(all, used, run.flow))
    }

    /// Empty input flushes what a paused inflate still holds.
    fn run(&mut self, input: &[u8], out: &mut [u8], emit: &mut Emit<'_>) -> Result<Run, String> {
        let Some(d) = &mut self.d else {
            return Ok(Run::of(input, 0, Flow::Go));
        };
        if self.ended {
            return Ok(Run::of(input, 0, Flow::Go));
        }
        let step = inflate(d, input, out, emit)?;
        self.ended = step.ended;
        Ok(Run::of(input, step.used, step.flow))
    }
}

/// The standard allocator, counting the bytes the brotli state holds (its ring buffer is as
/// large as the stream's window asks, up to 16 MiB, from the first few bytes on).
#[derive(Clone, Default)]
struct Counted(Arc<AtomicUsize>);

impl<T: Clone + Default> Allocator<T> for Counted {
    type AllocatedMemory = <StandardAlloc as Allocator<T>>::AllocatedMemory;

    fn alloc_cell(&mut self, len: usize) -> Self::AllocatedMemory {
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        self.0.fetch_add(bytes, Ordering::Relaxed);
        StandardAlloc::default().alloc_cell(len)
    }

    fn free_cell(&mut self, data: Self::AllocatedMemory) {
        let bytes = data.slice().len().saturating_mul(std::mem::size_of::<T>());
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(bytes))
            });
    }
}

struct Brotli {
    state: BrotliState<Counted, Counted, Counted>,
    used: Arc<AtomicUsize>,
    done: bool,
}

impl Brotli {
    fn new() -> Brotli {
        let counted = Counted::default();
        Brotli {
            used: Arc::clone(&counted.0),
            // Strict: no large-window extension, so the window stays within 16 MiB.
            state: BrotliState::new_strict(counted.clone(), counted.clone(), counted),
            done: false,
        }
    }

    /// Empty input flushes what a paused stream still holds.
    fn push(&mut self, input: &[u8], out: &mut [u8], emit: &mut Emit<'_>) -> Result<Run, String> {
        let (mut avail_in, mut in_off) = (input.len(), 0);
        while !self.done {
            let (mut avail_out, mut out_off, mut total) = (out.len(), 0, 0);
            let result = BrotliDecompressStream(
                &mut avail_in,
                &mut in_off,
                input,
                &mut avail_out,
                &mut out_off,
                out,
                &mut total,
                &mut self.state,
            );
            let flow = match out_off {
                0 => Flow::Go,
                _ => emit(out.get(..out_off).unwrap_or_default()),
            };
            // Out of input with the output buffer full: the ring buffer may hold more, flush it.
            let full = out_off == out.len();
            match result {
                BrotliResult::ResultSuccess => self.done = true,
                BrotliResult::NeedsMoreInput if !full => return Ok(Run::of(input, in_off, flow)),
                BrotliResult::NeedsMoreInput | BrotliResult::NeedsMoreOutput => {}
                BrotliResult::ResultFailure => return Err("corrupt brotli stream".to_string()),
            }
            if flow != Flow::Go {
                return Ok(Run::of(input, in_off, flow));
            }
        }
        Ok(Run::of(input, 0, Flow::Go))
    }
}

fn zstd_decoder() -> Result<DCtx<'static>, String> {
    let mut d = DCtx::try_create().ok_or("cannot create a zstd context")?;
    d.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
        .map_err(zstd_error)?;
    Ok(d)
}

fn zstd_error(code: usize) -> String {
    zstd::zstd_safe::get_error_name(code).to_string()
}

/// Empty input flushes what a paused frame still holds.
fn zstd_push(
    d: &mut DCtx<'static>,
    input: &[u8],
    out: &mut [u8],
    emit: &mut Emit<'_>,
) -> Result<Run, String> {
    let mut inb = InBuffer::around(input);
    loop {
        let before = inb.pos();
        let mut outb = OutBuffer::around(&mut *out);
        d.decompress_stream(&mut outb, &mut inb)
            .map_err(zstd_error)?;
        let made = outb.pos();
        let flow = match made {
            0 => Flow::Go,
            _ => emit(out.get(..made).unwrap_or_default()),
        };
        if flow != Flow::Go {
            return Ok(Run::of(input, inb.pos(), flow));
        }
        let drained = inb.pos() >= input.len() && made < out.len();
        if drained || (made == 0 && inb.pos() == before) {
            return Ok(Run::of(input, 0, Flow::Go));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> Vec<u8> {
        let mut s = Vec::new();
        for i in 0..5000 {
            s.extend_from_slice(
                format!("data: {{\"i\":{i},\"text\":\"héllo wörld\"}}\n\n").as_bytes(),
            );
        }
        s
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn encode(enc: &str, data: &[u8]) -> Vec<u8> {
        let level = flate2::Compression::default();
        match enc {
            "gzip" | "x-gzip" => gzip(data),
            "gzip-multi" => {
                let (a, b) = data.split_at(data.len() / 3);
                [gzip(a), gzip(b), vec![0, 0, 0]].concat()
            }
            "gzip-fields" => {
                let mut e = flate2::GzBuilder::new()
                    .filename("body.txt")
                    .comment("a comment")
                    .extra(vec![1, 2, 3, 4])
                    .write(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "zlib" => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "raw-deflate" => {
                let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "br" => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    w.write_all(data).unwrap();
                }
                out
            }
            "zstd" => zstd::encode_all(data, 3).unwrap(),
            "zstd-multi" => {
                let (a, b) = data.split_at(data.len() / 2);
                [
                    zstd::encode_all(a, 3).unwrap(),
                    zstd::encode_all(b, 3).unwrap(),
                ]
                .concat()
            }
            _ => data.to_vec(),
        }
    }

    fn header_name(enc: &str) -> Option<&str> {
        match enc {
            "gzip-multi" | "gzip-fields" => Some("gzip"),
            "zlib" | "raw-deflate" => Some("deflate"),
            "zstd-multi" => Some("zstd"),
            "none" => None,
            other => Some(other),
        }
    }

    const ENCODINGS: &[&str] = &[
        "gzip",
        "x-gzip",
        "gzip-multi",
        "gzip-fields",
        "zlib",
        "raw-deflate",
        "br",
        "zstd",
        "zstd-multi",
        "identity",
        "none",
    ];

    #[test]
    fn stream_decodes_every_encoding_at_every_split() {
        let data = sample();
        for enc in ENCODINGS {
            let packed = encode(enc, &data);
            for split in [1, 2, 3, 7, 100, 4096, packed.len()] {
                let mut d = StreamDecoder::new(header_name(enc)).unwrap();
                let mut out = Vec::new();
                for piece in packed.chunks(split) {
                    d.push(piece, &mut out).unwrap();
                }
                assert!(out == data, "{enc} split {split}");
            }
        }
    }

    /// Brotli may answer "needs more input" with its output buffer full: the rest is flushed
    /// before the call returns, so a prefix decodes to the same bytes in any chunking.
    #[test]
    fn a_cut_stream_decodes_the_same_whole_or_bytewise() {
        let data = sample();
        for enc in ["br", "gzip", "zstd", "zlib"] {
            let packed = encode(enc, &data);
            let prefix = &packed[..packed.len() / 4];
            let decode = |parts: Vec<&[u8]>| {
                let mut d = StreamDecoder::new(header_name(enc)).unwrap();
                let mut out = Vec::new();
                parts.into_iter().for_each(|p| d.push(p, &mut out).unwrap());
                out
            };
            assert!(
                decode(vec![prefix]) == decode(prefix.chunks(1).collect()),
                "{enc}"
            );
        }
    }

    #[test]
    fn decode_body_limits_and_truncation() {
        let data = sample();
        for enc in ENCODINGS {
            let packed = encode(enc, &data);
            let name = header_name(enc);
            assert_eq!(
                decode_body(name, &packed, usize::MAX).unwrap(),
                (data.clone(), false),
                "{enc}"
            );
            let (out, cut) = decode_body(name, &packed, 1000).unwrap();
            assert!(cut && out == data[..1000], "{enc} limit");
            // A capture cut mid-body decodes to a prefix without error.
            let (out, _) = decode_body(name, &packed[..packed.len() / 2], usize::MAX).unwrap();
            assert!(data.starts_with(&out), "{enc} prefix");
        }
    }

    #[test]
    fn zip_bombs_stay_bounded() {
        let zeros = vec![0u8; 64 << 20];
        for enc in ["gzip", "br", "zstd"] {
            let packed = encode(enc, &zeros);
            let (out, cut) = decode_body(Some(enc), &packed, 1 << 20).unwrap();
            assert_eq!(out.len(), 1 << 20);
            assert!(cut);
            let mut d = StreamDecoder::new(Some(enc)).unwrap();
            let mut biggest = 0;
            d.push_with(&packed, &mut |p| {
                biggest = biggest.max(p.len());
                true
            })
            .unwrap();
            assert!(biggest <= OUT_PIECE);
        }
    }

    #[test]
    fn bad_names_and_corrupt_bodies() {
        for name in ["compress", "gzip, br", "br,zstd", "snappy"] {
            assert!(
                matches!(
                    StreamDecoder::new(Some(name)),
                    Err(DecodeError::Unsupported(_))
                ),
                "{name}"
            );
        }
        for name in ["GZIP", " br ", "identity, gzip", "", "identity"] {
            assert!(StreamDecoder::new(Some(name)).is_ok(), "{name}");
        }
        let garbage: Vec<u8> = (0..4000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for enc in ["gzip", "deflate", "br", "zstd"] {
            let r = decode_body(Some(enc), &garbage, 1 << 20);
            assert!(
                matches!(r, Err(DecodeError::Corrupt { .. })),
                "{enc}: {r:?}"
            );
            let mut d = StreamDecoder::new(Some(enc)).unwrap();
            let mut out = Vec::new();
            let first = d.push(&garbage, &mut out);
            assert!(
                first.is_err() && d.push(b"more", &mut out).is_err(),
                "{enc} stays failed"
            );
        }
        let err = decode_body(Some("gzip"), b"\x1f\x8b\x09", 10).unwrap_err();
        assert_eq!(err.to_string(), "corrupt gzip body: not a gzip stream");
    }

    #[test]
    fn gzip_header_with_crc_flag() {
        let body = gzip(b"hello");
        let mut with_crc = body[..10].to_vec();
        with_crc[3] |= 0x02;
        with_crc.extend_from_slice(&[0xaa, 0xbb]);
        with_crc.extend_from_slice(&body[10..]);
        assert_eq!(
            decode_body(Some("gzip"), &with_crc, 100).unwrap().0,
            b"hello"
        );
    }
}
