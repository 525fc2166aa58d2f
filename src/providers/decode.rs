//! Content-encoding decoding (gzip, deflate, br, zstd) of captured and streamed bodies, output in bounded pieces.
//!
//! Each coding is a kept crate's own decoder (see `codecs`) behind one small call: take some
//! input, write at most one output piece, keep its place. One loop (`pump`) hands the pieces
//! on, pausing or stopping when the receiver says so.

mod codecs;

use codecs::{Codec, Fault};

/// Decoded bytes are handed on in pieces of at most this size, whatever the compression ratio.
const OUT_PIECE: usize = 32 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content-encoding {0:?}")]
    Unsupported(String),
    #[error("corrupt {encoding} body: {reason}")]
    Corrupt { encoding: String, reason: String },
    /// The stream asked for a larger window than llmtap allows a decoder.
    #[error("{encoding} body needs more decoder memory than allowed: {reason}")]
    TooLarge { encoding: String, reason: String },
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
    /// `None`: the identity coding.
    codec: Option<Codec>,
    out: Vec<u8>,
    failed: Option<Fault>,
    /// Stopped by the receiver, or the stream ended: further input is ignored.
    done: bool,
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
        let codec = Codec::new(name).map_err(|fault| fault.error(name))?;
        let out = match codec {
            None => Vec::new(),
            Some(_) => vec![0; OUT_PIECE],
        };
        Ok(StreamDecoder {
            encoding: name,
            codec,
            out,
            failed: None,
            done: false,
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
        self.codec.is_none()
    }

    /// Decode `input`, handing the output to `emit` in pieces of at most 32 KiB, until the input
    /// is used up or `emit` pauses or stops. After a pause, call again with the unused rest
    /// (even when empty: the decoder may hold output for it).
    pub(crate) fn step(
        &mut self,
        input: &[u8],
        emit: &mut Emit<'_>,
    ) -> Result<Stepped, DecodeError> {
        if let Some(fault) = &self.failed {
            return Err(fault.error(self.encoding));
        }
        if self.done {
            return Ok(Stepped::Consumed);
        }
        let Some(codec) = self.codec.as_mut() else {
            // The piece is handed on whole: the caller bounds identity input itself.
            self.done = !input.is_empty() && emit(input) == Flow::Stop;
            return Ok(Stepped::Consumed);
        };
        match pump(codec, input, &mut self.out, emit) {
            Ok((stepped, done)) => {
                self.done = done;
                Ok(stepped)
            }
            Err(fault) => {
                let error = fault.error(self.encoding);
                self.failed = Some(fault);
                Err(error)
            }
        }
    }

    /// Bytes this decoder holds: its output buffer and its state (the inflate window, the
    /// brotli ring buffer and tables as allocated, the zstd context with its window). A stream
    /// decides how large its window is, so callers charge this to a budget and give up past it.
    pub(crate) fn memory(&self) -> usize {
        let state = self.codec.as_ref().map_or(0, Codec::memory);
        state.saturating_add(self.out.capacity())
    }
}

/// Run `codec` over `input`, handing each piece it makes to `emit`, until the input is used and
/// the codec holds no more output, the stream ends, or `emit` pauses or stops. Returns how far
/// it got and whether the decoder is done (ended or stopped).
fn pump(
    codec: &mut Codec,
    input: &[u8],
    out: &mut [u8],
    emit: &mut Emit<'_>,
) -> Result<(Stepped, bool), Fault> {
    let mut used = 0usize;
    loop {
        let rest = input.get(used..).unwrap_or_default();
        let step = codec.run(rest, out)?;
        used = used.saturating_add(step.used).min(input.len());
        let flow = match step.made {
            0 => Flow::Go,
            made => emit(out.get(..made).unwrap_or_default()),
        };
        if step.ended || flow == Flow::Stop {
            return Ok((Stepped::Consumed, true));
        }
        if flow == Flow::Pause {
            return Ok((Stepped::Paused(used), false));
        }
        if step.used == 0 && step.made == 0 {
            if rest.is_empty() {
                // Input used up is not enough: a codec may hold decoded bytes that come out
                // only on a further call, so this is the first call that made nothing.
                return Ok((Stepped::Consumed, false));
            }
            // Input left, room for output, yet no progress: a broken stream, not a reason to spin.
            return Err(Fault::Corrupt("stream makes no progress".to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::codecs::ZSTD_WINDOW_LOG_MAX;
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
        // flate2 reads the whole 10-byte header before it judges it (a shorter one is a cut).
        assert!(decode_body(Some("gzip"), b"\x1f\x8b\x09", 10).is_ok());
        let err = decode_body(Some("gzip"), b"\x1f\x8b\x09\0\0\0\0\0\0\x03", 10).unwrap_err();
        assert_eq!(err.to_string(), "corrupt gzip body: invalid gzip header");
    }

    /// `body` (one gzip member from flate2, header of `header_len` bytes) with the FHCRC flag
    /// set and `crc` (None: the right one) after the header.
    fn with_header_crc(body: &[u8], header_len: usize, crc: Option<u16>) -> Vec<u8> {
        let mut header = body[..header_len].to_vec();
        header[3] |= 0x02;
        let mut right = flate2::Crc::new();
        right.update(&header);
        let crc = crc.unwrap_or(right.sum() as u16);
        [&header[..], &crc.to_le_bytes(), &body[header_len..]].concat()
    }

    #[test]
    fn gzip_header_with_crc_flag() {
        let body = gzip(b"hello");
        let good = with_header_crc(&body, 10, None);
        assert_eq!(decode_body(Some("gzip"), &good, 100).unwrap().0, b"hello");
        // The header CRC is checked (the hand parser used to skip it).
        let right = u16::from_le_bytes([good[10], good[11]]);
        let bad = with_header_crc(&body, 10, Some(right ^ 0x5a5a));
        assert!(matches!(
            decode_body(Some("gzip"), &bad, 100),
            Err(DecodeError::Corrupt { .. })
        ));
    }

    /// FEXTRA, FNAME, FCOMMENT and FHCRC together, at every split.
    #[test]
    fn gzip_header_fields_at_every_split() {
        let data = sample();
        let (extra, name, comment) = (vec![7u8; 300], "body.json", "a comment");
        let mut e = flate2::GzBuilder::new()
            .extra(extra.clone())
            .filename(name)
            .comment(comment)
            .write(Vec::new(), flate2::Compression::default());
        e.write_all(&data).unwrap();
        let body = e.finish().unwrap();
        let header_len = 10 + 2 + extra.len() + name.len() + 1 + comment.len() + 1;
        let packed = with_header_crc(&body, header_len, None);
        for split in [1, 2, 5, 11, 12, 313, 4096, packed.len()] {
            let mut d = StreamDecoder::new(Some("gzip")).unwrap();
            let mut out = Vec::new();
            for piece in packed.chunks(split) {
                d.push(piece, &mut out).unwrap();
            }
            assert!(out == data, "split {split}");
        }
        // A reserved flag bit is refused (RFC 1952).
        let mut reserved = body.clone();
        reserved[3] |= 0x20;
        assert!(decode_body(Some("gzip"), &reserved, usize::MAX).is_err());
    }

    /// The trailer's CRC-32 and length are checked as soon as the trailer is in, whatever the
    /// chunking, for the last member and the ones before it.
    #[test]
    fn bad_gzip_crc_or_length_is_corrupt() {
        let data = sample();
        let one = gzip(&data);
        let n = one.len();
        for (what, at) in [
            ("crc", n - 8),
            ("crc", n - 5),
            ("length", n - 4),
            ("length", n - 1),
        ] {
            let mut bad = one.clone();
            bad[at] ^= 0x10;
            for packed in [bad.clone(), [bad.clone(), gzip(b"second")].concat()] {
                for split in [1, 3, 1000, packed.len()] {
                    let mut d = StreamDecoder::new(Some("gzip")).unwrap();
                    let mut out = Vec::new();
                    let failed = packed.chunks(split).any(|p| d.push(p, &mut out).is_err());
                    assert!(failed, "{what} at {at}, split {split}");
                    assert!(out == data, "{what}: the data itself came out");
                }
                let err = decode_body(Some("gzip"), &packed, usize::MAX).unwrap_err();
                assert!(
                    matches!(&err, DecodeError::Corrupt { reason, .. } if reason.contains("checksum")),
                    "{err}"
                );
            }
        }
        // The first member's CRC, with more members after it.
        let mut first = gzip(b"first");
        let at = first.len() - 8;
        first[at] ^= 1;
        let packed = [first, gzip(b"second"), gzip(b"third")].concat();
        assert!(decode_body(Some("gzip"), &packed, usize::MAX).is_err());
    }

    /// Many members, empty ones among them, then padding or garbage: the members decode and
    /// what follows is ignored unless it looks like another member.
    #[test]
    fn gzip_members_and_what_follows_them() {
        let parts: Vec<&[u8]> = vec![b"one ", b"", b"two ", b"three"];
        let members: Vec<u8> = parts.iter().flat_map(|p| gzip(p)).collect();
        for tail in [
            &b""[..],
            &[0; 3],
            &[0; 40],
            b"<html>garbage after the body</html>",
        ] {
            let packed = [&members[..], tail].concat();
            for split in [1, 2, 17, packed.len()] {
                let mut d = StreamDecoder::new(Some("gzip")).unwrap();
                let mut out = Vec::new();
                for piece in packed.chunks(split) {
                    d.push(piece, &mut out).unwrap();
                }
                assert_eq!(out, b"one two three", "tail {tail:?}, split {split}");
            }
        }
        // A byte that could start a member is taken for one.
        let packed = [&members[..], b"\x1f\x00 not gzip"].concat();
        assert!(decode_body(Some("gzip"), &packed, usize::MAX).is_err());
    }

    /// A gzip stream cut anywhere (header, body, trailer, between members) decodes to a prefix
    /// of its data without error, the same whole as bytewise.
    #[test]
    fn a_gzip_stream_cut_anywhere_decodes_a_prefix() {
        let data = sample();
        let (a, b) = data.split_at(data.len() / 2);
        let mut e = flate2::GzBuilder::new()
            .filename("a.txt")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::default());
        e.write_all(a).unwrap();
        let packed = [e.finish().unwrap(), gzip(b)].concat();
        for cut in (0..=packed.len())
            .step_by(7)
            .chain([packed.len() - 1, packed.len()])
        {
            let prefix = &packed[..cut];
            let (whole, _) = decode_body(Some("gzip"), prefix, usize::MAX).unwrap();
            assert!(data.starts_with(&whole), "cut {cut}");
            let mut d = StreamDecoder::new(Some("gzip")).unwrap();
            let mut bytewise = Vec::new();
            for byte in prefix.chunks(1) {
                d.push(byte, &mut bytewise).unwrap();
            }
            assert!(
                bytewise == whole,
                "cut {cut}: {} vs {}",
                bytewise.len(),
                whole.len()
            );
        }
        assert_eq!(
            decode_body(Some("gzip"), &packed, usize::MAX).unwrap().0,
            data
        );
    }

    /// At about 1000:1 one call's input decodes to far more than an output piece: at a cut,
    /// what flate2 still holds in its window must come out as it does in small pieces.
    #[test]
    fn a_cut_high_ratio_gzip_stream_flushes_its_window() {
        let zeros = vec![0u8; 8 << 20];
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&zeros).unwrap();
        let packed = e.finish().unwrap();
        for cut in [40, 333, 1000, 4097, packed.len() - 9, packed.len() - 3] {
            let prefix = &packed[..cut];
            let (whole, _) = decode_body(Some("gzip"), prefix, usize::MAX).unwrap();
            for split in [1, 2, 64] {
                let mut d = StreamDecoder::new(Some("gzip")).unwrap();
                let mut out = Vec::new();
                for piece in prefix.chunks(split) {
                    d.push(piece, &mut out).unwrap();
                }
                assert_eq!(out.len(), whole.len(), "cut {cut}, split {split}");
            }
        }
    }

    /// A zstd frame of `window_log` bits without a content size (so its header names that window).
    fn zstd_window(window_log: u32) -> Vec<u8> {
        let mut packed = Vec::new();
        let mut e = zstd::stream::write::Encoder::new(&mut packed, 3).unwrap();
        e.window_log(window_log).unwrap();
        e.include_contentsize(false).unwrap();
        e.write_all(&sample()).unwrap();
        e.finish().unwrap();
        packed
    }

    #[test]
    fn a_zstd_window_over_the_limit_needs_too_much_memory() {
        assert_eq!(
            decode_body(Some("zstd"), &zstd_window(ZSTD_WINDOW_LOG_MAX), usize::MAX)
                .unwrap()
                .0,
            sample()
        );
        let packed = zstd_window(ZSTD_WINDOW_LOG_MAX + 1);
        let err = decode_body(Some("zstd"), &packed, usize::MAX).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("zstd body needs more decoder memory"),
            "{err}"
        );
        // Refused from the frame header on, before any window is allocated.
        let mut d = StreamDecoder::new(Some("zstd")).unwrap();
        let mut out = Vec::new();
        assert!(d.push(&packed[..16], &mut out).is_err());
        assert!(d.memory() < 1 << 20, "{}", d.memory());
    }
}
