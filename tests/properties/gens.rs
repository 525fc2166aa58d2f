//! Generators shared by the properties: chunkings, mutations, fixtures, compression.

use std::io::Write;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Chunk sizes, used in turn to cut a body: byte by byte, tiny, small or large pieces.
pub fn splits() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![1]),
        vec(1usize..4, 1..8),
        vec(1usize..64, 1..8),
        vec(1usize..2048, 1..4),
    ]
}

/// `data` cut into pieces of the sizes in `sizes`, in turn; with `empties`, an empty piece
/// goes between every two (parsers must take empty chunks in their stride).
pub fn pieces<'a>(data: &'a [u8], sizes: &[usize], empties: bool) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut turn = 0;
    while !rest.is_empty() {
        let size = sizes.get(turn % sizes.len().max(1)).copied().unwrap_or(1);
        turn += 1;
        let (piece, tail) = rest.split_at(size.clamp(1, rest.len()));
        out.push(piece);
        if empties {
            out.push(&[]);
        }
        rest = tail;
    }
    out
}

/// Bytes that matter to JSON, SSE, and the encodings' headers.
pub const SPECIALS: &[u8] = b"\"\\{}[]:,\n\r 0-e.ntf\xff\x00\xef\x1f\x8b";

/// One edit of a byte string; positions are relative, so they fit any length.
#[derive(Debug, Clone)]
pub enum Edit {
    Flip(Index, u8),
    Insert(Index, u8),
    Special(Index, Index),
    Delete(Index),
    Cut(Index),
    Repeat(Index, Index),
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, s)| Edit::Special(i, s)),
        any::<Index>().prop_map(Edit::Delete),
        any::<Index>().prop_map(Edit::Cut),
        (any::<Index>(), any::<Index>()).prop_map(|(i, n)| Edit::Repeat(i, n)),
    ]
}

pub fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    vec(edit(), 0..=max)
}

/// `data` with `edits` applied in order.
pub fn mutate(data: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = data.to_vec();
    for e in edits {
        let len = out.len();
        let at = |i: &Index| if len == 0 { 0 } else { i.index(len) };
        match e {
            Edit::Flip(i, bit) if len > 0 => out[at(i)] ^= 1 << bit,
            Edit::Insert(i, b) => out.insert(at(i), *b),
            Edit::Special(i, s) => out.insert(at(i), SPECIALS[s.index(SPECIALS.len())]),
            Edit::Delete(i) if len > 0 => {
                out.remove(at(i));
            }
            Edit::Cut(i) => out.truncate(at(i)),
            Edit::Repeat(i, n) if len > 0 => {
                let start = at(i);
                let end = (start + 1 + n.index(64)).min(len);
                let copy = out[start..end].to_vec();
                out.splice(end..end, copy);
            }
            _ => {}
        }
    }
    out
}

/// Random bytes: uniform, or drawn from JSON/SSE punctuation and a few words (deeper paths).
pub fn soup(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let words: &'static [&'static [u8]] = &[
        b"data: ",
        b"data:",
        b"event: ",
        b"\n\n",
        b"\r\n",
        b"\r",
        b": ping\n",
        b"[DONE]",
        b"{\"usage\":{\"input_tokens\":",
        b"\"output_tokens\":",
        b"\"model\":\"",
        b"\"id\":\"",
        b"\"choices\":[{\"index\":",
        b"\"finish_reason\":\"",
        b"\"type\":\"message_stop\"",
        b"\"error\":{\"type\":\"x\",\"message\":\"y\"}",
        b"\"candidates\":[{\"finishReason\":\"STOP\"}]",
        b"\"usageMetadata\":{\"promptTokenCount\":",
        b"\"response\":{\"status\":\"completed\"",
        b"\"stream\":true",
        b"\"max_tokens\":",
        b"12",
        b"-1",
        b"1e3",
        b"null",
        b"\\\"",
        b"\\u00e9",
    ];
    prop_oneof![
        vec(any::<u8>(), 0..max),
        vec(
            prop_oneof![
                3 => proptest::sample::select(SPECIALS).prop_map(|b| vec![b]),
                2 => proptest::sample::select(words).prop_map(<[u8]>::to_vec),
                1 => "[a-z0-9 ]{1,6}".prop_map(String::into_bytes),
            ],
            0..max / 4,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

/// A content-encoding used to pack a body, and the header that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    Identity,
    Gzip,
    /// Several gzip members and trailing zero padding.
    GzipMulti,
    /// A gzip header with a file name, a comment and an extra field.
    GzipFields,
    /// `deflate` as meant (zlib-wrapped).
    Zlib,
    /// `deflate` as some servers send it (raw).
    RawDeflate,
    Br,
    Zstd,
    /// Two zstd frames.
    ZstdMulti,
}

pub const PACKINGS: &[Packing] = &[
    Packing::Identity,
    Packing::Gzip,
    Packing::GzipMulti,
    Packing::GzipFields,
    Packing::Zlib,
    Packing::RawDeflate,
    Packing::Br,
    Packing::Zstd,
    Packing::ZstdMulti,
];

pub fn packing() -> impl Strategy<Value = Packing> {
    proptest::sample::select(PACKINGS)
}

/// The real codings (no identity).
pub fn compressing() -> impl Strategy<Value = Packing> {
    proptest::sample::select(&PACKINGS[1..])
}

impl Packing {
    /// The `Content-Encoding` value.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Packing::Identity => None,
            Packing::Gzip | Packing::GzipMulti | Packing::GzipFields => Some("gzip"),
            Packing::Zlib | Packing::RawDeflate => Some("deflate"),
            Packing::Br => Some("br"),
            Packing::Zstd | Packing::ZstdMulti => Some("zstd"),
        }
    }

    pub fn pack(self, data: &[u8]) -> Vec<u8> {
        let level = flate2::Compression::fast();
        match self {
            Packing::Identity => data.to_vec(),
            Packing::Gzip => gzip(data),
            Packing::GzipMulti => {
                let (a, b) = data.split_at(data.len() / 3);
                [gzip(a), gzip(b), vec![0, 0, 0]].concat()
            }
            Packing::GzipFields => {
                let mut e = flate2::GzBuilder::new()
                    .filename("body.json")
                    .comment("a comment")
                    .extra(vec![1, 2, 3, 4])
                    .write(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Packing::Zlib => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Packing::RawDeflate => {
                let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Packing::Br => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 4, 18);
                    w.write_all(data).unwrap();
                }
                out
            }
            Packing::Zstd => zstd::encode_all(data, 1).unwrap(),
            Packing::ZstdMulti => {
                let (a, b) = data.split_at(data.len() / 2);
                [
                    zstd::encode_all(a, 1).unwrap(),
                    zstd::encode_all(b, 1).unwrap(),
                ]
                .concat()
            }
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Every provider fixture (responses, requests, garbage), as real bytes to start from: every
/// file of every directory under `tests/fixtures/providers`, so a new one is fuzzed too.
pub fn fixtures() -> &'static [Vec<u8>] {
    static ALL: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/providers");
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root)
            .unwrap()
            .flat_map(|dir| std::fs::read_dir(dir.unwrap().path()).unwrap())
            .map(|file| file.unwrap().path())
            .collect();
        files.sort();
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    })
}

/// A fixture, mutated by up to `max_edits` edits.
pub fn mutated_fixture(max_edits: usize) -> impl Strategy<Value = Vec<u8>> {
    (proptest::sample::select(fixtures()), edits(max_edits)).prop_map(|(f, e)| mutate(&f, &e))
}

/// Text for JSON strings: ASCII, quotes, backslashes, controls, non-ASCII, fake JSON.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,24}",
        "[a-z \"\\\\{}:,\n\t\u{e9}\u{2713}\u{4e2d}\u{1F600}]{0,24}",
        Just(r#"{"usage":{"output_tokens":999},"model":"fake"}"#.to_string()),
        Just("data: [DONE]\n\n".to_string()),
        any::<String>().prop_map(|s| s.chars().take(24).collect()),
    ]
}

/// A JSON string literal for `s`.
pub fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A line end: LF, CRLF or CR (one per stream: a CR line end before an LF blank line would
/// read as one CRLF).
pub fn eol() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&["\n", "\r\n", "\r"][..])
}

/// A long run of SSE delta events, each different (so compressed it is many short matches, as
/// real streams are): `n` events of about 130 bytes.
pub fn long_events(n: usize, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 140);
    for i in 0..n as u32 {
        let x = i.wrapping_add(seed).wrapping_mul(2_654_435_761) % 99_991;
        out.extend_from_slice(
            format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{x:x} \\u00e9 {i}\"}}}}\n\n"
            )
            .as_bytes(),
        );
    }
    out
}
