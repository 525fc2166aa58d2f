//! Test kit for the provider parsers: fixtures found by directory, the facts each must give,
//! random chunkings and the encodings, checked the same way for every provider.

use std::io::Write;
use std::path::PathBuf;

use super::*;

/// Where the provider fixtures are: one directory per provider file, plus `requests/` and `garbage/`.
fn fixtures_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/providers")
}

/// The file names in fixture directory `dir`, sorted.
pub(crate) fn fixture_names(dir: &str) -> Vec<String> {
    let path = fixtures_root().join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The bytes of fixture `dir/name`.
pub(crate) fn fixture(dir: &str, name: &str) -> Vec<u8> {
    let path = fixtures_root().join(dir).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every provider fixture of every directory (responses, requests, garbage).
pub(crate) fn all_fixtures() -> Vec<Vec<u8>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut all = Vec::new();
    for dir in dirs {
        let dir = dir.file_name().unwrap().to_string_lossy().into_owned();
        for name in fixture_names(&dir) {
            all.push(fixture(&dir, &name));
        }
    }
    all
}

/// One response fixture (a file of the provider's directory) and the facts it must give.
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) file: &'static str,
    pub(crate) shape: ApiShape,
    pub(crate) content_type: Option<&'static str>,
    pub(crate) status: u16,
    pub(crate) model: Option<&'static str>,
    pub(crate) id: Option<&'static str>,
    pub(crate) finish: &'static [&'static str],
    /// input, output, cache_read, cache_creation, reasoning
    pub(crate) usage: [Option<i64>; 5],
    pub(crate) source: UsageSource,
    /// Error type and message; an empty type: the error names none.
    pub(crate) error: Option<(&'static str, &'static str)>,
    pub(crate) is_stream: bool,
}

/// A case that expects nothing yet (`..case(…)` fills what a table row leaves out): status
/// 200, no facts, usage absent, a stream when the content type says so.
pub(crate) fn case(
    shape: ApiShape,
    content_type: Option<&'static str>,
    name: &'static str,
    file: &'static str,
) -> Case {
    Case {
        name,
        file,
        shape,
        content_type,
        status: 200,
        model: None,
        id: None,
        finish: &[],
        usage: [None; 5],
        source: UsageSource::Absent,
        error: None,
        is_stream: content_type.is_some_and(|t| t.contains("stream")),
    }
}

/// One request fixture and the facts it must give.
pub(crate) struct RequestCase {
    pub(crate) file: &'static str,
    pub(crate) shape: ApiShape,
    pub(crate) path: &'static str,
    pub(crate) model: Option<&'static str>,
    pub(crate) stream: Option<bool>,
    pub(crate) max_tokens: Option<i64>,
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
        error_type: c
            .error
            .map(|e| e.0)
            .filter(|k| !k.is_empty())
            .map(str::to_string),
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

/// The files of `dir` are exactly those the cases name: a fixture without expected facts, or
/// a case without its file, fails. Then every case is checked as [`check_case`] and
/// [`check_request`] say.
pub(crate) fn check_fixtures(dir: &str, cases: &[Case], requests: &[RequestCase]) {
    let mut named: Vec<String> = cases.iter().map(|c| c.file.to_string()).collect();
    named.extend(requests.iter().map(|r| r.file.to_string()));
    named.sort();
    assert_eq!(
        fixture_names(dir),
        named,
        "fixtures of {dir} and their cases"
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for c in cases {
        check_case(c, &fixture(dir, c.file), &mut rng);
    }
    for r in requests {
        check_request(r, &fixture(dir, r.file), &mut rng);
    }
}

/// Whole, byte by byte, random splits, compressed, CRLF/CR line ends and sniffed content type: all the same facts.
fn check_case(c: &Case, body: &[u8], rng: &mut Rng) {
    let want = expected(c);
    for complete in [true, false] {
        assert_eq!(
            parse(c, c.content_type, None, &[body], complete),
            want,
            "{} complete={complete}",
            c.name
        );
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(
        parse(c, c.content_type, None, &bytes, true),
        want,
        "{} byte by byte",
        c.name
    );
    for round in 0..30 {
        let pieces = random_pieces(body, rng);
        assert_eq!(
            parse(c, c.content_type, None, &pieces, true),
            want,
            "{} split round {round}",
            c.name
        );
    }
    for enc in ["gzip", "deflate", "br", "zstd"] {
        let packed = compress(enc, body);
        let pieces = random_pieces(&packed, rng);
        assert_eq!(
            parse(c, c.content_type, Some(enc), &pieces, true),
            want,
            "{} {enc}",
            c.name
        );
    }
    assert_eq!(
        parse(c, None, None, &[body], true),
        want,
        "{} sniffed",
        c.name
    );
    if c.content_type.is_some_and(|t| t.contains("event-stream")) {
        for eol in ["\r\n", "\r"] {
            let text = String::from_utf8_lossy(body).replace('\n', eol);
            let pieces = random_pieces(text.as_bytes(), rng);
            assert_eq!(
                parse(c, c.content_type, None, &pieces, true),
                want,
                "{} eol {eol:?}",
                c.name
            );
        }
    }
}

/// Whole, in random pieces and gzip-compressed: the same request facts.
fn check_request(r: &RequestCase, body: &[u8], rng: &mut Rng) {
    let want = RequestFacts {
        model: r.model.map(str::to_string),
        stream: r.stream,
        max_tokens: r.max_tokens,
        stopped: None,
    };
    assert_eq!(parse_request(r.shape, r.path, body), want, "{}", r.file);
    for enc in [None, Some("gzip")] {
        let packed = compress(enc.unwrap_or("identity"), body);
        let mut p = RequestParser::new(r.shape, r.path, enc);
        for piece in random_pieces(&packed, rng) {
            p.feed(piece);
        }
        assert_eq!(p.finish(), want, "{} {enc:?}", r.file);
    }
}
