//! The codecs behind `StreamDecoder`, each a kept crate's own decoder: flate2's
//! `bufread::GzDecoder` (gzip members, their header fields and header CRC, the CRC-32 and
//! length of the data, all checked) and `Decompress` (zlib-wrapped with its Adler-32 checked,
//! or raw deflate), brotli's `BrotliDecompressStream` (strict windows), zstd's `DCtx` stream
//! (with a window limit).

use std::io::{self, BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use brotli::enc::StandardAlloc;
use brotli::{Allocator, BrotliDecompressStream, BrotliResult, BrotliState, SliceWrapper};
use flate2::bufread::GzDecoder;
use flate2::{Decompress, FlushDecompress, Status};
use zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode;
use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};

use super::DecodeError;

/// Compressed bytes the gzip reader is given at a time (copied into its [`Feed`]).
const FEED_PIECE: usize = 8 * 1024;
/// The last bytes of a call's input go to the gzip reader on their own, read into a whole free
/// output piece. Deflate makes at most 1032 bytes per input byte, so these bytes (with the few
/// its bit buffer still holds) decode to well under one piece: nothing is left in flate2's
/// window when the input runs out, where only more input would bring it out.
const GZIP_TAIL: usize = 16;
/// What one inflate state holds (its 32 KiB window and tables), for `StreamDecoder::memory`.
const INFLATE_STATE: usize = 48 * 1024;
/// zstd window cap (8 MiB, RFC 8878's advice for HTTP) so a frame cannot make us allocate more.
pub(super) const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// zstd's error code for a frame whose window is over [`ZSTD_WINDOW_LOG_MAX`] (codes are negated).
const ZSTD_WINDOW_TOO_LARGE: usize =
    0usize.wrapping_sub(ZSTD_ErrorCode::ZSTD_error_frameParameter_windowTooLarge as usize);

/// Why a codec gave up (latched: the decoder answers it from then on).
#[derive(Debug, Clone)]
pub(super) enum Fault {
    Corrupt(String),
    TooLarge(String),
}

impl Fault {
    pub(super) fn error(&self, encoding: &str) -> DecodeError {
        let encoding = encoding.to_string();
        match self {
            Fault::Corrupt(reason) => DecodeError::Corrupt {
                encoding,
                reason: reason.clone(),
            },
            Fault::TooLarge(reason) => DecodeError::TooLarge {
                encoding,
                reason: reason.clone(),
            },
        }
    }
}

/// What one [`Codec::run`] did.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Progress {
    /// Input bytes taken (decoded, or held by the codec).
    pub(super) used: usize,
    /// Output bytes written.
    pub(super) made: usize,
    /// The stream ended: anything after it is ignored.
    pub(super) ended: bool,
}

/// One coding's decoder: [`Codec::run`] decodes some of its input into at most one output
/// piece and keeps its place; with no input it brings out what it still holds.
pub(super) enum Codec {
    Gzip(Box<Gzip>),
    Deflate(Box<Deflate>),
    Brotli(Box<Brotli>),
    Zstd(Box<DCtx<'static>>),
}

impl Codec {
    /// `None` for identity.
    pub(super) fn new(name: &str) -> Result<Option<Codec>, Fault> {
        Ok(Some(match name {
            "gzip" | "x-gzip" => Codec::Gzip(Box::new(Gzip::new())),
            "deflate" => Codec::Deflate(Box::default()),
            "br" => Codec::Brotli(Box::new(Brotli::new())),
            "zstd" => Codec::Zstd(Box::new(zstd_decoder()?)),
            _ => return Ok(None),
        }))
    }

    pub(super) fn run(&mut self, input: &[u8], out: &mut [u8]) -> Result<Progress, Fault> {
        match self {
            Codec::Gzip(g) => g.run(input, out),
            Codec::Deflate(d) => d.run(input, out),
            Codec::Brotli(b) => b.run(input, out),
            Codec::Zstd(z) => zstd_run(z, input, out),
        }
    }

    pub(super) fn memory(&self) -> usize {
        match self {
            Codec::Gzip(g) => g.memory(),
            Codec::Deflate(d) => d.memory(),
            Codec::Brotli(b) => b.used.load(Ordering::Relaxed),
            Codec::Zstd(z) => z.sizeof(),
        }
    }
}

/// Compressed bytes for a reading decoder (flate2's gzip): a `BufRead` that, once empty,
/// answers `WouldBlock`, never end of file, so the decoder keeps its place until more comes
/// and a body cut short is not an error.
#[derive(Debug, Default)]
struct Feed {
    bytes: Vec<u8>,
    pos: usize,
}

impl Feed {
    /// Take up to [`FEED_PIECE`] bytes of `input` once the last ones are read; how many it took.
    fn refill(&mut self, input: &[u8]) -> usize {
        if !self.rest().is_empty() {
            return 0;
        }
        let piece = input.get(..FEED_PIECE.min(input.len())).unwrap_or_default();
        self.bytes.clear();
        self.bytes.extend_from_slice(piece);
        self.pos = 0;
        piece.len()
    }

    fn rest(&self) -> &[u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let rest = self.fill_buf()?;
        let n = rest.len().min(buf.len());
        for (to, from) in buf.iter_mut().zip(rest) {
            *to = *from;
        }
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Feed {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self.rest() {
            [] => Err(io::ErrorKind::WouldBlock.into()),
            rest => Ok(rest),
        }
    }

    fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.bytes.len());
    }
}

/// Gzip members one after another, each checked by flate2 as it ends; bytes after a member
/// that cannot start another (padding, garbage) are ignored, as browsers do.
pub(super) struct Gzip {
    member: GzDecoder<Feed>,
}

impl Gzip {
    fn new() -> Gzip {
        Gzip {
            member: GzDecoder::new(Feed::default()),
        }
    }

    fn run(&mut self, input: &[u8], out: &mut [u8]) -> Result<Progress, Fault> {
        let mut used = 0usize;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            // The tail waits while more comes before it: see GZIP_TAIL.
            let ahead = match rest.len().checked_sub(GZIP_TAIL) {
                Some(n) if n > 0 => rest.get(..n).unwrap_or_default(),
                _ => rest,
            };
            used = used.saturating_add(self.member.get_mut().refill(ahead));
            let progress = |made| Progress {
                used,
                made,
                ended: false,
            };
            match self.member.read(out) {
                // A member ended, its CRC and length checked: another one, or what follows the last.
                Ok(0) => match self.member.get_ref().rest().first() {
                    Some(0x1f) => {
                        let feed = std::mem::take(self.member.get_mut());
                        self.member.reset(feed);
                    }
                    Some(_) => {
                        return Ok(Progress {
                            ended: true,
                            ..progress(0)
                        });
                    }
                    None if used < input.len() => {}
                    None => return Ok(progress(0)),
                },
                Ok(made) => return Ok(progress(made)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if used >= input.len() {
                        return Ok(progress(0));
                    }
                }
                Err(e) => return Err(Fault::Corrupt(e.to_string())),
            }
        }
    }

    fn memory(&self) -> usize {
        let header = self.member.header().map_or(0, |h| {
            [h.extra(), h.filename(), h.comment()]
                .into_iter()
                .flatten()
                .map(<[u8]>::len)
                .sum()
        });
        INFLATE_STATE
            .saturating_add(self.member.get_ref().bytes.capacity())
            .saturating_add(header)
    }
}

/// Inflate `input` into `out` (empty input brings out what the window still holds).
fn inflate(d: &mut Decompress, input: &[u8], out: &mut [u8]) -> Result<Progress, Fault> {
    let (in0, out0) = (d.total_in(), d.total_out());
    let status = d
        .decompress(input, out, FlushDecompress::None)
        .map_err(|e| Fault::Corrupt(e.to_string()))?;
    let gain = |before: u64, after: u64| {
        usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX)
    };
    Ok(Progress {
        used: gain(in0, d.total_in()),
        made: gain(out0, d.total_out()),
        ended: status == Status::StreamEnd,
    })
}

/// HTTP `deflate` is meant to be zlib-wrapped (its Adler-32 then checked by flate2), but some
/// servers send raw deflate: the first two bytes tell.
#[derive(Default)]
pub(super) struct Deflate {
    head: Vec<u8>,
    d: Option<Decompress>,
}

impl Deflate {
    fn run(&mut self, input: &[u8], out: &mut [u8]) -> Result<Progress, Fault> {
        if let Some(d) = &mut self.d {
            return inflate(d, input, out);
        }
        let take = 2usize.saturating_sub(self.head.len()).min(input.len());
        self.head
            .extend_from_slice(input.get(..take).unwrap_or_default());
        let &[cmf, flg] = self.head.as_slice() else {
            return Ok(Progress {
                used: take,
                ..Progress::default()
            });
        };
        let zlib =
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0;
        // Two bytes of deflate never fill the output buffer: inflate takes both.
        let head = inflate(self.d.insert(Decompress::new(zlib)), &self.head, out)?;
        Ok(Progress { used: take, ..head })
    }

    fn memory(&self) -> usize {
        self.d
            .as_ref()
            .map_or(self.head.capacity(), |_| INFLATE_STATE)
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

/// brotli's stream decoder. Its reader and writer wrappers allow the large-window extension
/// (windows up to 1 GiB) and its writer cannot stop inside a write without losing its place,
/// so the stream call is used as it is.
pub(super) struct Brotli {
    state: BrotliState<Counted, Counted, Counted>,
    used: Arc<AtomicUsize>,
}

impl Brotli {
    fn new() -> Brotli {
        let counted = Counted::default();
        Brotli {
            used: Arc::clone(&counted.0),
            // Strict: no large-window extension, so the window stays within 16 MiB.
            state: BrotliState::new_strict(counted.clone(), counted.clone(), counted),
        }
    }

    /// Empty input brings out what the ring buffer still holds.
    fn run(&mut self, input: &[u8], out: &mut [u8]) -> Result<Progress, Fault> {
        let (mut avail_in, mut used, mut avail_out, mut made, mut total) =
            (input.len(), 0, out.len(), 0, 0);
        let result = BrotliDecompressStream(
            &mut avail_in,
            &mut used,
            input,
            &mut avail_out,
            &mut made,
            out,
            &mut total,
            &mut self.state,
        );
        match result {
            BrotliResult::ResultFailure => Err(Fault::Corrupt("corrupt brotli stream".to_string())),
            result => Ok(Progress {
                used,
                made,
                ended: matches!(result, BrotliResult::ResultSuccess),
            }),
        }
    }
}

fn zstd_decoder() -> Result<DCtx<'static>, Fault> {
    let mut d = DCtx::try_create()
        .ok_or_else(|| Fault::Corrupt("cannot create a zstd context".to_string()))?;
    d.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
        .map_err(zstd_fault)?;
    Ok(d)
}

fn zstd_fault(code: usize) -> Fault {
    let name = zstd::zstd_safe::get_error_name(code).to_string();
    match code {
        ZSTD_WINDOW_TOO_LARGE => Fault::TooLarge(name),
        _ => Fault::Corrupt(name),
    }
}

/// Frames may follow one another: the context starts the next when one ends. Empty input
/// brings out what it still holds.
fn zstd_run(d: &mut DCtx<'static>, input: &[u8], out: &mut [u8]) -> Result<Progress, Fault> {
    let mut inb = InBuffer::around(input);
    let mut outb = OutBuffer::around(out);
    d.decompress_stream(&mut outb, &mut inb)
        .map_err(zstd_fault)?;
    Ok(Progress {
        used: inb.pos(),
        made: outb.pos(),
        ended: false,
    })
}
