//! The content decoders on the copy (`decode_body`, `StreamDecoder`): round trips, prefixes,
//! limits, split-invariance, and no panic on corrupt input.

use proptest::collection::vec;
use proptest::prelude::*;

use llmtap::providers::decode::{DecodeError, StreamDecoder, decode_body};

use crate::gens::{compressing, edits, mutate, packing, pieces, splits};
use crate::{cases, shared};

/// Bodies: random bytes, or text that compresses well (long matches, many blocks).
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..2048),
        vec(
            proptest::sample::select(
                &[
                    "data: {\"i\":1}\n\n",
                    "héllo wörld ",
                    "\u{4e2d}\u{6587}",
                    "x",
                    "\0\0\0\0"
                ][..]
            ),
            0..600
        )
        .prop_map(|words| words.concat().into_bytes()),
    ]
}

/// A `StreamDecoder` fed `parts`: the bytes out, and whether it failed (at any push).
fn stream_decode(encoding: Option<&str>, parts: &[&[u8]]) -> (Vec<u8>, bool) {
    let Ok(mut d) = StreamDecoder::new(encoding) else {
        return (Vec::new(), true);
    };
    let mut out = Vec::new();
    let mut failed = false;
    for part in parts {
        if d.push(part, &mut out).is_err() {
            failed = true;
        }
    }
    (out, failed)
}

/// `decode_body`'s bounds: output within the limit, buffer within twice the limit.
fn check_decode_bounds(
    result: &Result<(Vec<u8>, bool), DecodeError>,
    limit: usize,
) -> Result<(), TestCaseError> {
    if let Ok((out, truncated)) = result {
        prop_assert!(
            out.len() <= limit,
            "{} bytes out, limit {}",
            out.len(),
            limit
        );
        prop_assert!(
            out.capacity() <= (2 * limit).max(8),
            "buffer of {} for limit {}",
            out.capacity(),
            limit
        );
        if *truncated {
            prop_assert_eq!(out.len(), limit);
        }
    }
    Ok(())
}

/// The `coding` a `Content-Encoding` value names, by the rules `StreamDecoder::new` documents:
/// one supported coding, any case, `identity` and empty parts ignored, no stacks.
fn reference_coding(value: &str) -> Option<&'static str> {
    let mut found = None;
    for part in value.split(',').map(str::trim) {
        if part.is_empty() || part.eq_ignore_ascii_case("identity") {
            continue;
        }
        let name = ["gzip", "x-gzip", "deflate", "br", "zstd"]
            .into_iter()
            .find(|n| part.eq_ignore_ascii_case(n))?;
        if found.replace(name).is_some() {
            return None;
        }
    }
    Some(found.unwrap_or("identity"))
}

/// A packed body decodes to its bytes in any chunking; `decode_body` with a limit gives the
/// first `limit` bytes and says whether it cut; a prefix of the packed bytes (a capture cut
/// short) decodes, without error, to a prefix of the body.
#[test]
fn packed_bodies_round_trip() {
    let _g = shared();
    proptest!(cases(128), |(
        body in data(),
        events in prop_oneof![Just(0usize), 0usize..600],
        seed in any::<u32>(),
        packing in packing(),
        sizes in splits(),
        empties in any::<bool>(),
        limit in any::<proptest::sample::Index>(),
        cut in any::<proptest::sample::Index>(),
    )| {
        let mut body = body;
        body.extend_from_slice(&crate::gens::long_events(events, seed));
        let packed = packing.pack(&body);
        let enc = packing.header();
        let (out, failed) = stream_decode(enc, &pieces(&packed, &sizes, empties));
        prop_assert!(!failed);
        prop_assert!(out == body, "{:?}: {} bytes out of {}", packing, out.len(), body.len());

        prop_assert_eq!(decode_body(enc, &packed, usize::MAX).unwrap(), (body.clone(), false));
        let limit = limit.index(body.len() + 2);
        let limited = decode_body(enc, &packed, limit);
        check_decode_bounds(&limited, limit)?;
        let (head, truncated) = limited.unwrap();
        prop_assert!(head == body[..limit.min(body.len())]);
        prop_assert_eq!(truncated, body.len() > limit);

        let prefix = &packed[..cut.index(packed.len() + 1)];
        match decode_body(enc, prefix, usize::MAX) {
            Ok((out, _)) => prop_assert!(body.starts_with(&out), "{:?} prefix decodes to other bytes", packing),
            Err(e) => prop_assert!(false, "{:?} prefix of {} bytes: {}", packing, prefix.len(), e),
        }
    });
}

/// A packed body cut anywhere (a capture cut short, a connection dropped, a stream still
/// running): the same bytes out in any chunking.
#[test]
fn cut_bodies_split_invariant() {
    let _g = shared();
    proptest!(cases(128), |(
        body in data(),
        events in 0usize..1200,
        seed in any::<u32>(),
        packing in compressing(),
        cut in any::<proptest::sample::Index>(),
        sizes in splits(),
    )| {
        // Long enough that one piece may decode to more than a decoder's 32 KiB output buffer.
        let mut long = crate::gens::long_events(events, seed);
        long.extend_from_slice(&body);
        let packed = packing.pack(&long);
        let prefix = &packed[..cut.index(packed.len() + 1)];
        let enc = packing.header();
        let whole = stream_decode(enc, &[prefix]);
        let split = stream_decode(enc, &pieces(prefix, &sizes, false));
        prop_assert!(!whole.1 && !split.1);
        prop_assert!(
            split.0 == whole.0,
            "{:?} cut at {} of {}: {} bytes out whole, {} split {:?}",
            packing, prefix.len(), packed.len(), whole.0.len(), split.0.len(), sizes
        );
    });
}

/// Corrupt packed bodies (bytes flipped, inserted, deleted, cut) and random bytes under
/// every coding: no panic, output within its limit, the same failure in any chunking, and
/// whole and split outputs agree as far as both go (a decoder that fails may lose what it
/// decoded in that call, so one may be shorter).
#[test]
fn corrupt_bodies_never_panic_and_agree() {
    let _g = shared();
    proptest!(cases(64), |(
        body in vec(any::<u8>(), 0..2048),
        packing in compressing(),
        as_packing in compressing(),
        edits in edits(4),
        random in any::<bool>(),
        sizes in splits(),
        limit in 0usize..8192,
    )| {
        let packed = if random { body } else { mutate(&packing.pack(&body), &edits) };
        let enc = as_packing.header();
        let result = decode_body(enc, &packed, limit);
        check_decode_bounds(&result, limit)?;
        let whole = stream_decode(enc, &[&packed]);
        let split = stream_decode(enc, &pieces(&packed, &sizes, false));
        prop_assert_eq!(split.1, whole.1, "failure differs by chunking");
        let common = whole.0.len().min(split.0.len());
        prop_assert!(split.0[..common] == whole.0[..common], "outputs differ within their first {} bytes", common);
        if let Ok((out, _)) = &result {
            prop_assert!(whole.0.starts_with(out) || out.starts_with(&whole.0));
        }
    });
}

/// `StreamDecoder::new` accepts exactly one supported coding (any case, `identity` and
/// empty parts ignored) and never panics on other header values.
#[test]
fn content_encoding_names() {
    let _g = shared();
    proptest!(cases(64), |(
        parts in vec(prop_oneof![ proptest::sample::select(&["gzip", "GZip", "x-gzip", "deflate", "br", "zstd", "identity", "", " ", "compress", "snappy"][..]).prop_map(str::to_string), "[ -~]{0,8}", ], 0..4),
        sep in proptest::sample::select(&[",", ", ", " ,", ";"][..]),
    )| {
        let value = parts.join(sep);
        let got = StreamDecoder::new(Some(&value));
        match reference_coding(&value) {
            Some(_) => prop_assert!(got.is_ok(), "{:?} refused: {:?}", value, got.err()),
            None => prop_assert!(
                matches!(got, Err(DecodeError::Unsupported(_))),
                "{:?} accepted",
                value
            ),
        }
    });
}
