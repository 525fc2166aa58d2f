//! The minimal inputs of the bugs the properties found, as plain tests (each fails until its
//! bug is fixed; the property that found it names it too).

use std::io::Write;

use llmtap::config::{parse_connect_to, parse_resolve};
use llmtap::policy::pattern::HostRule;
use llmtap::policy_check::parse_target;
use llmtap::providers::decode::StreamDecoder;
use llmtap::providers::{ApiShape, ResponseParser};
use llmtap::proxy::handler::authority_target;
use llmtap::redact::{RedactionConfig, Redactor};

use crate::shared;

fn facts(
    shape: ApiShape,
    ct: &str,
    enc: Option<&str>,
    parts: &[&[u8]],
) -> llmtap::providers::ResponseFacts {
    let mut p = ResponseParser::new(shape, Some(ct), enc, 200);
    for part in parts {
        p.feed(part);
    }
    p.finish(true)
}

/// `providers/anthropic.rs` `into_acc`: `cache_read + cache_creation` (and `input + cached`)
/// are added as plain `i64`, so an upstream's large counts panic a debug build inside a body
/// poll and wrap to a negative count in release (issue 9 item 8).
/// Found by `parsers::hostile_token_counts_never_panic_nor_wrap`.
#[test]
fn anthropic_token_sum_does_not_overflow() {
    let _g = shared();
    let body = br#"{"usage":{"input_tokens":1,"cache_read_input_tokens":9223372036854775807,"cache_creation_input_tokens":1}}"#;
    let f = facts(
        ApiShape::AnthropicMessages,
        "application/json",
        None,
        &[body],
    );
    assert!(f.usage.input_tokens.is_none_or(|n| n >= 0), "{:?}", f.usage);
}

/// `providers/skim.rs` `JsonSkim::end_value`: a wanted value that lies wholly inside one chunk
/// is handed over whatever its size (the `MAX_CAPTURE` check is made only when it spans
/// chunks). So a 70 KB error message is reported when the body comes in one piece and dropped
/// when it comes in two: the facts depend on the chunking, and a fact may be as large as a
/// chunk. Found by `parsers::response_facts_stay_bounded`.
#[test]
fn oversized_value_is_skipped_in_any_chunking() {
    let _g = shared();
    let body = format!(
        r#"{{"error":{{"type":"t","message":"{}"}}}}"#,
        "e".repeat(70_000)
    );
    let (a, b) = body.as_bytes().split_at(10);
    let whole = facts(
        ApiShape::OpenAiChat,
        "application/json",
        None,
        &[body.as_bytes()],
    );
    let split = facts(ApiShape::OpenAiChat, "application/json", None, &[a, b]);
    assert_eq!(whole, split);
    assert!(whole.error_message.is_none_or(|m| m.len() <= 64 * 1024));
}

/// `providers/decode.rs` `Brotli::push`: on `NeedsMoreInput` it returns, but the brotli
/// decoder says `NeedsMoreInput` also when it could not flush its ring buffer because the
/// output buffer (32 KiB) filled: the rest of what it decoded waits for the next input. A body
/// that decodes to more than 32 KiB per input chunk so yields less when fed whole than in small
/// pieces: a stream cut short (or still running) gives facts that depend on the chunking, and
/// live events are held back. Found by `decoders::cut_bodies_split_invariant` and
/// `parsers::cut_compressed_response_split_invariant`.
#[test]
fn brotli_flushes_what_it_decoded() {
    let _g = shared();
    let data: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("data: {{\"i\":{i}}}\n\n").into_bytes())
        .collect();
    let mut packed = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut packed, 4096, 4, 18);
        w.write_all(&data).unwrap();
    }
    let prefix = &packed[..packed.len() / 4];
    let decode = |parts: &[&[u8]]| {
        let mut d = StreamDecoder::new(Some("br")).unwrap();
        let mut out = Vec::new();
        for part in parts {
            d.push(part, &mut out).unwrap();
        }
        out.len()
    };
    let bytewise: Vec<&[u8]> = prefix.chunks(1).collect();
    assert_eq!(
        decode(&[prefix]),
        decode(&bytewise),
        "cut at {} of {}",
        prefix.len(),
        packed.len()
    );
}

/// `providers/decode.rs` `inflate`: it stops once the input is used and a call left room in the
/// output buffer, but miniz can still hold decoded bytes in its 32 KiB window then; they come
/// out only with the next input (a call with empty input would flush them). So a gzip or
/// deflate body cut at such a point (a stream dropped, or still running) decodes to one byte
/// less in 2-byte pieces than whole (98 304 against 98 305 here, at a 32 KiB multiple).
/// Found by `decoders::cut_bodies_split_invariant` (about one run in three at 400 cases).
#[test]
fn gzip_flushes_its_window_at_a_cut() {
    let _g = shared();
    let packed = crate::gens::Packing::Gzip.pack(&crate::gens::long_events(1153, 0));
    let prefix = &packed[..5546.min(packed.len())];
    let decode = |parts: &[&[u8]]| {
        let mut d = StreamDecoder::new(Some("gzip")).unwrap();
        let mut out = Vec::new();
        for part in parts {
            d.push(part, &mut out).unwrap();
        }
        out.len()
    };
    let pairs: Vec<&[u8]> = prefix.chunks(2).collect();
    assert_eq!(
        decode(&[prefix]),
        decode(&pairs),
        "cut at {} of {}",
        prefix.len(),
        packed.len()
    );
}

/// `redact.rs` patterns written with `(?-u:\b)`: in a JSON body a newline or tab before a key
/// is the escape `\n` or `\t`, whose letter is a word character, so there is no word boundary
/// and the key is not redacted: `"content":"my key:\nsk-…"` exports the key. The same for
/// `\nBearer …`, `\tBasic …`, `\tAKIA…` (every pattern that starts with `\b`).
/// Found by `redaction::embedded_secrets_never_survive`.
#[test]
fn keys_after_a_json_escape_are_redacted() {
    let _g = shared();
    let r = Redactor::new(&RedactionConfig::default()).unwrap();
    let leaks: Vec<String> = [
        (
            r#"{"content":"my key:\nsk-AaAAa00aAAAaa0aAaA0AaA0AaA000a0A"}"#,
            "sk-AaAAa00aAAAaa0aAaA0AaA0AaA000a0A",
        ),
        (
            r#"{"content":"Authorization:\nBearer abcdefghijklmnop0123"}"#,
            "abcdefghijklmnop0123",
        ),
        (
            r#"{"content":"auth:\tBasic dXNlcjpwYXNzd29yZA=="}"#,
            "dXNlcjpwYXNzd29yZA",
        ),
        (
            r#"{"content":"id\tAKIAIOSFODNN7EXAMPLE"}"#,
            "AKIAIOSFODNN7EXAMPLE",
        ),
    ]
    .into_iter()
    .filter_map(|(text, secret)| {
        let out = r.redact_text(text);
        out.contains(secret)
            .then(|| format!("{secret} survives in {out}"))
    })
    .collect();
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// `proxy/handler.rs` `authority_target`: the port is read with `u16::from_str`, which takes a
/// leading `+`, so `CONNECT x.com:+443` is tunnelled to 443 (issue 9 item 7: a port is 1–65535
/// in digits). The same in `policy/pattern.rs` `parse_port`, `policy_check::parse_target` and
/// `config::parse_resolve`. Found by `targets::connect_authority_is_strict`.
#[test]
fn ports_are_digits_only() {
    let _g = shared();
    let auth: http::uri::Authority = "x.com:+443".parse().unwrap();
    assert!(
        authority_target(&auth, None).is_err(),
        "CONNECT x.com:+443 accepted"
    );
    assert!(
        HostRule::parse("x.com:+443").is_err(),
        "pattern x.com:+443 accepted"
    );
    assert!(
        parse_target("x.com:+443", 443).is_err(),
        "target x.com:+443 accepted"
    );
    assert!(
        parse_resolve("x.com:+443:127.0.0.1").is_err(),
        "--resolve x.com:+443:… accepted"
    );
}

/// `proxy/handler.rs` `authority_target`: the emptiness check is made before normalising, so
/// `CONNECT .:443` (and `..:443`) gives a target whose host is empty. The same in
/// `config::parse_resolve` (`.:443:ADDR`, also port 0) and `config::parse_connect_to`
/// (`.:443:[.]:80`). Found by `targets::connect_authority_is_strict` and
/// `config::{resolve,connect_to}_pins_parse_as_written`.
#[test]
fn empty_hosts_are_refused() {
    let _g = shared();
    let auth: http::uri::Authority = ".:443".parse().unwrap();
    assert!(
        authority_target(&auth, None).is_err(),
        "CONNECT .:443 accepted"
    );
    assert!(
        parse_resolve(".:443:127.0.0.1").is_err(),
        "--resolve .:443:… accepted"
    );
    assert!(
        parse_resolve("x.com:0:127.0.0.1").is_err(),
        "--resolve x.com:0:… accepted"
    );
    assert!(
        parse_connect_to(".:443:[.]:80").is_err(),
        "--connect-to .:443:[.]:80 accepted"
    );
}

/// `proxy/handler.rs` `authority_target`: `Authority::port()` is `None` for a port that is not
/// a `u16`, and the default port then applies, so an absolute-form `http://x.com:99999/` (or
/// `:65536`) is forwarded to port 80 instead of refused (issue 9 item 7).
/// Found by `targets::connect_authority_is_strict`.
#[test]
fn out_of_range_ports_are_refused_not_defaulted() {
    let _g = shared();
    for raw in ["x.com:99999", "x.com:65536", "x.com:4294967739"] {
        let auth: http::uri::Authority = raw.parse().unwrap();
        assert!(
            authority_target(&auth, Some(80)).is_err(),
            "http://{raw}/ accepted"
        );
    }
}

/// `policy_check::parse_target`: a bare host is not checked, so `::]` is taken as an IPv6
/// literal; its target prints as `[::]]:443`, which `parse_target` refuses; and `0 .` is
/// accepted with the host `"0 "`.
/// Found by `targets::policy_check_targets_round_trip`.
#[test]
fn policy_check_targets_print_as_they_parse() {
    let _g = shared();
    // `"0 ."`: `route::normalize_host` trims spaces before it drops the trailing dot, so the
    // host is `"0 "`, which prints as `0 :443` and parses back as `"0"`.
    for raw in ["::]", "0 ."] {
        if let Ok(t) = parse_target(raw, 443) {
            assert_eq!(parse_target(&t.authority(), 443), Ok(t), "{raw:?}");
        }
    }
}
