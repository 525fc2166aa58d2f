//! Decompression bombs built at test time (brotli, gzip, zstd), and the stops they must meet.

use std::io::Write;
use std::sync::OnceLock;

use brotli::concat::{BroCatli, BroCatliResult};
use bytes::Bytes;

use super::decode::{Flow, Stepped, StreamDecoder};
use super::*;

/// The filler one bomb part expands to (brotli and zstd), and gzip's smaller one (deflate
/// tops out near 1032:1, so its parts stay small).
const PART: usize = 16 << 20;
const GZIP_PART: usize = 1 << 20;

/// A request body `head`, then `filler` bytes (about `expanded` of them), then `tail`, in
/// `encoding` ("br", "gzip" or "zstd"); built from one compressed part repeated, so a 3 GB
/// body takes a second to make.
pub(crate) fn bomb(encoding: &str, head: &[u8], expanded: u64, tail: &[u8]) -> Vec<u8> {
    let part_len = if encoding == "gzip" { GZIP_PART } else { PART };
    let copies = usize::try_from(expanded / part_len as u64).unwrap().max(1);
    match encoding {
        "br" => {
            static MID: OnceLock<Vec<u8>> = OnceLock::new();
            let mid = MID.get_or_init(|| brotli_part(&vec![b' '; PART], false));
            let (head, tail) = (brotli_part(head, true), brotli_part(tail, false));
            let mut parts: Vec<&[u8]> = vec![&head];
            parts.extend(std::iter::repeat_n(mid.as_slice(), copies));
            parts.push(&tail);
            brotli_cat(&parts)
        }
        "zstd" => {
            static MID: OnceLock<Vec<u8>> = OnceLock::new();
            let mid = MID.get_or_init(|| zstd::encode_all(&vec![b' '; PART][..], 3).unwrap());
            let mut out = zstd::encode_all(head, 3).unwrap();
            (0..copies).for_each(|_| out.extend_from_slice(mid));
            out.extend(zstd::encode_all(tail, 3).unwrap());
            out
        }
        _ => {
            static MID: OnceLock<Vec<u8>> = OnceLock::new();
            let mid = MID.get_or_init(|| gzip(&vec![b' '; GZIP_PART]));
            let mut out = gzip(head);
            (0..copies).for_each(|_| out.extend_from_slice(mid));
            out.extend(gzip(tail));
            out
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A brotli stream that [`BroCatli`] can join to others (the first opens the joined stream).
fn brotli_part(data: &[u8], first: bool) -> Vec<u8> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: 5,
        lgwin: 23,
        appendable: true,
        catable: !first,
        use_dictionary: false,
        ..Default::default()
    };
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
    out
}

fn brotli_cat(parts: &[&[u8]]) -> Vec<u8> {
    let mut cat = BroCatli::new();
    let mut out = vec![0u8; parts.iter().map(|p| p.len()).sum::<usize>() + 64];
    let mut at = 0;
    for part in parts {
        cat.new_brotli_file();
        let mut read = 0;
        let result = cat.stream(part, &mut read, &mut out, &mut at);
        assert_eq!((result, read), (BroCatliResult::NeedsMoreInput, part.len()));
    }
    assert_eq!(cat.finish(&mut out, &mut at), BroCatliResult::Success);
    out.truncate(at);
    out
}

pub(crate) const HEAD: &[u8] = br#"{"model":"claude-bomb","max_tokens":7,"messages":["#;
pub(crate) const TAIL: &[u8] = br#"],"stream":true}"#;

/// The most decoded bytes a parser may hand on for `raw` compressed bytes.
fn allowed(raw: usize) -> u64 {
    (raw as u64 * MAX_RATIO).max(FREE_DECODED)
}

#[test]
fn a_three_gigabyte_brotli_request_stops_at_the_ratio() {
    let body = bomb("br", HEAD, 3 << 30, TAIL);
    assert!(body.len() < 5000, "{} bytes", body.len());
    let mut p = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", Some("br"));
    for piece in body.chunks(1024) {
        p.feed(piece);
    }
    assert_eq!(p.stopped(), Some(ParseStop::RatioLimit));
    assert!(
        p.decoded_len() <= allowed(body.len()),
        "{}",
        p.decoded_len()
    );
    // It stops at the ratio of what had arrived, not before the free allowance.
    assert!(
        p.decoded_len() >= FREE_DECODED - 32 * 1024,
        "{}",
        p.decoded_len()
    );
    let facts = p.finish();
    assert_eq!(facts.model.as_deref(), Some("claude-bomb"));
    assert_eq!(facts.max_tokens, Some(7));
    // Past the stop: unknown, not the API default.
    assert_eq!(facts.stream, None);
    assert_eq!(facts.stopped, Some(ParseStop::RatioLimit));
}

#[test]
fn gzip_and_zstd_request_bombs_stay_within_the_ratio_in_any_chunking() {
    for (encoding, expanded) in [("zstd", 1u64 << 30), ("gzip", 64 << 20)] {
        let body = bomb(encoding, HEAD, expanded, TAIL);
        for chunk in [512, 16 * 1024, body.len()] {
            let mut p =
                RequestParser::new(ApiShape::OpenAiChat, "/v1/chat/completions", Some(encoding));
            let mut fed = 0;
            for piece in body.chunks(chunk) {
                p.feed(piece);
                fed += piece.len();
                assert!(p.decoded_len() <= allowed(fed), "{encoding} {chunk}");
            }
            // Deflate cannot pass about 1032:1, so a gzip "bomb" is just under the ratio: its
            // cost is what the ratio allows anyway.
            let want = (encoding == "zstd").then_some(ParseStop::RatioLimit);
            assert_eq!(p.stopped(), want, "{encoding} {chunk}");
            assert_eq!(p.finish().model.as_deref(), Some("claude-bomb"));
        }
    }
}

#[test]
fn offered_bombs_are_worked_in_bounded_slices() {
    for encoding in ["br", "zstd", "gzip"] {
        let body = bomb(encoding, HEAD, 1 << 30, TAIL);
        let mut p = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", Some(encoding));
        let mut slices = 0u64;
        for piece in body.chunks(8 * 1024) {
            p.offer(Bytes::copy_from_slice(piece));
            let mut before = p.decoded_len();
            while p.work() {
                let done = p.decoded_len() - before;
                assert!(
                    done <= (WORK_SLICE + 32 * 1024) as u64,
                    "{encoding}: {done}"
                );
                before = p.decoded_len();
                slices += 1;
            }
        }
        let want = (encoding != "gzip").then_some(ParseStop::RatioLimit);
        assert_eq!(p.stopped(), want, "{encoding}");
        assert!(p.decoded_len() <= allowed(body.len()), "{encoding}");
        assert!(!p.has_work());
        assert!(
            slices >= p.decoded_len() / (WORK_SLICE as u64 + 32 * 1024),
            "{encoding}"
        );
        assert_eq!(p.finish().model.as_deref(), Some("claude-bomb"));
    }
}

#[test]
fn a_response_bomb_is_worked_in_slices_too() {
    let body = bomb(
        "br",
        br#"{"model":"m","usage":{"prompt_tokens":1},"x":["#,
        1 << 30,
        b"]}",
    );
    let mut p = ResponseParser::new(
        ApiShape::OpenAiChat,
        Some("application/json"),
        Some("br"),
        200,
    );
    p.offer(Bytes::from(body.clone()));
    let mut slices = 0;
    while p.work() {
        slices += 1;
    }
    assert_eq!(p.stopped(), Some(ParseStop::RatioLimit));
    assert!(slices as u64 >= allowed(body.len()) / (WORK_SLICE as u64 + 32 * 1024));
    assert_eq!(p.finish(true).model.as_deref(), Some("m"));
}

/// A brotli stream of `len` spaces with a `lgwin`-bit window.
pub(crate) fn brotli_window(len: usize, lgwin: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, lgwin);
    w.write_all(&vec![b' '; len]).unwrap();
    drop(w);
    out
}

/// The decoder's memory is what the stream's window makes it allocate, from its first bytes.
#[test]
fn decoder_memory_follows_the_window_and_goes_at_the_end() {
    let mut p = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", Some("br"));
    assert!(
        p.memory() < 64 * 1024,
        "{}: output buffer and tables only",
        p.memory()
    );
    p.feed(&brotli_window(PART, 24)[..8]);
    assert!(p.memory() > 16 << 20, "{}", p.memory());
    p.end_input();
    assert_eq!(p.memory(), 0);
    // A zstd frame without a content size: the decoder takes the window its header names.
    let mut packed = Vec::new();
    let mut e = zstd::stream::write::Encoder::new(&mut packed, 3).unwrap();
    e.window_log(23).unwrap();
    e.include_contentsize(false).unwrap();
    let noise: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    e.write_all(&noise).unwrap();
    e.finish().unwrap();
    let mut p = RequestParser::new(ApiShape::OpenAiChat, "/v1/chat/completions", Some("zstd"));
    p.feed(&packed[..64]);
    let zstd = p.memory();
    assert!(zstd > 1 << 20 && zstd <= MAX_DECODER_MEMORY, "{zstd}");
    p.give_up(ParseStop::MemoryLimit);
    assert_eq!((p.memory(), p.stopped()), (0, Some(ParseStop::MemoryLimit)));
    // A bomb's decoder goes as soon as it stops.
    let mut p = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", Some("br"));
    p.feed(&bomb("br", HEAD, 1 << 30, TAIL));
    assert_eq!((p.memory(), p.stopped()), (0, Some(ParseStop::RatioLimit)));
    let mut p = RequestParser::new(ApiShape::OpenAiChat, "/v1/chat/completions", Some("gzip"));
    p.feed(&gzip(b"{}")[..12]);
    assert!(p.memory() <= 96 * 1024, "{}", p.memory());
    let p = RequestParser::new(ApiShape::OpenAiChat, "/v1/chat/completions", None);
    assert_eq!(p.memory(), 0);
}

/// Sliced work gives exactly the facts of feeding whole bodies, for ordinary bodies too.
#[test]
fn sliced_and_whole_parsing_agree() {
    let prompt = "y".repeat(700 * 1024);
    let body =
        format!(r#"{{"messages":[{{"content":"{prompt}"}}],"model":"gpt-5","max_tokens":3}}"#);
    for encoding in [
        None,
        Some("gzip"),
        Some("br"),
        Some("zstd"),
        Some("deflate"),
    ] {
        let packed = testkit::compress(encoding.unwrap_or("identity"), body.as_bytes());
        let mut whole = RequestParser::new(ApiShape::OpenAiChat, "/v1/chat/completions", encoding);
        whole.feed(&packed);
        let mut sliced = RequestParser::new(ApiShape::OpenAiChat, "/v1/chat/completions", encoding);
        for piece in packed.chunks(100 * 1024) {
            sliced.offer(Bytes::copy_from_slice(piece));
            while sliced.work() {}
        }
        assert_eq!(sliced.decoded_len(), body.len() as u64, "{encoding:?}");
        let facts = sliced.finish();
        assert_eq!(facts, whole.finish(), "{encoding:?}");
        assert_eq!(facts.model.as_deref(), Some("gpt-5"));
        assert_eq!(facts.stopped, None);
    }
}

/// A decoder paused after every piece and resumed with the rest gives the same bytes.
#[test]
fn paused_decoders_resume_where_they_were() {
    let data: Vec<u8> = (0..400_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    for encoding in ["gzip", "deflate", "br", "zstd"] {
        let packed = testkit::compress(encoding, &data);
        for split in [1usize, 777, packed.len()] {
            let mut d = StreamDecoder::new(Some(encoding)).unwrap();
            let mut out = Vec::new();
            for piece in packed.chunks(split) {
                let mut rest = piece;
                loop {
                    let mut emit = |p: &[u8]| {
                        out.extend_from_slice(p);
                        Flow::Pause
                    };
                    match d.step(rest, &mut emit).unwrap() {
                        Stepped::Consumed => break,
                        Stepped::Paused(used) => rest = &rest[used..],
                    }
                }
            }
            assert!(
                out == data,
                "{encoding} split {split}: {} of {}",
                out.len(),
                data.len()
            );
        }
    }
}
