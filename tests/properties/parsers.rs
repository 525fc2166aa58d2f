//! `ResponseParser` (SSE framer, JSON skimmer, every provider format, every content-encoding)
//! and `RequestParser`: no panic, split-invariance, bounded facts and memory, and the facts a
//! generated valid body was made with.

use proptest::collection::vec;
use proptest::prelude::*;

use llmtap::providers::{
    ApiShape, RequestFacts, RequestParser, ResponseFacts, ResponseParser, Usage, UsageSource,
};

use crate::gens::{Packing, eol, json, mutated_fixture, packing, pieces, soup, splits, text};
use crate::{cases, exclusive, net_allocated, shared};

/// Most a parser may keep between `feed` calls, whatever the body's length: a 64 KiB captured
/// value (its buffer may be twice that), the open-container stack, the decoder's 32 KiB output
/// buffer and its inflate window.
pub const HELD_BOUND: isize = 512 * 1024;

/// Largest model, id or error string the facts may carry (the skimmer's capture limit).
const MAX_FACT: usize = 64 * 1024;
/// Most finish reasons the facts may carry.
const MAX_FINISH: usize = 64;

const SHAPES: &[ApiShape] = &[
    ApiShape::AnthropicMessages,
    ApiShape::OpenAiChat,
    ApiShape::OpenAiResponses,
    ApiShape::OpenAiCompletions,
    ApiShape::OpenAiEmbeddings,
    ApiShape::GeminiGenerate,
    ApiShape::Unknown,
];

const SSE: Option<&str> = Some("text/event-stream; charset=utf-8");
const JSON: Option<&str> = Some("application/json");

fn shape() -> impl Strategy<Value = ApiShape> {
    proptest::sample::select(SHAPES)
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    proptest::sample::select(
        &[
            Some("text/event-stream"),
            SSE,
            Some("TEXT/EVENT-STREAM"),
            JSON,
            Some("application/json; charset=utf-8"),
            Some("text/html"),
            None,
        ][..],
    )
}

fn status() -> impl Strategy<Value = u16> {
    proptest::sample::select(&[200u16, 201, 400, 401, 429, 500, 503][..])
}

/// One response parse: which parser, and whether the body ended normally.
#[derive(Debug, Clone, Copy)]
struct Head {
    shape: ApiShape,
    content_type: Option<&'static str>,
    status: u16,
    complete: bool,
}

fn head() -> impl Strategy<Value = Head> {
    (shape(), content_type(), status(), any::<bool>()).prop_map(
        |(shape, content_type, status, complete)| Head {
            shape,
            content_type,
            status,
            complete,
        },
    )
}

fn respond(h: Head, encoding: Option<&str>, parts: &[&[u8]]) -> ResponseFacts {
    let mut p = ResponseParser::new(h.shape, h.content_type, encoding, h.status);
    for part in parts {
        p.feed(part);
    }
    p.finish(h.complete)
}

/// The first bytes of a body, for a failure message.
pub fn show(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let head: String = text.chars().take(300).collect();
    if head.len() < text.len() {
        format!("{head:?}… ({} bytes)", body.len())
    } else {
        format!("{head:?}")
    }
}

/// A value's `Debug` form, cut short for a failure message.
pub fn brief<T: std::fmt::Debug>(value: &T) -> String {
    let text = format!("{value:?}");
    if text.len() > 600 {
        let head: String = text.chars().take(600).collect();
        format!("{head}… ({} bytes)", text.len())
    } else {
        text
    }
}

/// The facts stay within their bounds.
fn check_bounded(f: &ResponseFacts) -> Result<(), TestCaseError> {
    prop_assert!(
        f.finish_reasons.len() <= MAX_FINISH,
        "{} reasons",
        f.finish_reasons.len()
    );
    for s in [&f.model, &f.id, &f.error_type, &f.error_message]
        .into_iter()
        .flatten()
    {
        prop_assert!(s.len() <= MAX_FACT, "a {} byte fact", s.len());
    }
    for r in &f.finish_reasons {
        prop_assert!(r.len() <= MAX_FACT, "a {} byte finish reason", r.len());
    }
    Ok(())
}

/// The same bytes, whole and in `sizes` pieces: the same facts, within bounds.
fn check_split_invariant(
    h: Head,
    encoding: Option<&str>,
    body: &[u8],
    sizes: &[usize],
    empties: bool,
) -> Result<ResponseFacts, TestCaseError> {
    let whole = respond(h, encoding, &[body]);
    let split = respond(h, encoding, &pieces(body, sizes, empties));
    prop_assert!(
        split == whole,
        "split {:?} gives {}\nwhole gives {}\nbody {}",
        sizes,
        brief(&split),
        brief(&whole),
        show(body)
    );
    check_bounded(&whole)?;
    Ok(whole)
}

// ---------------------------------------------------------------------------------------------
// Generated valid streams and bodies, with the facts they carry.

/// How an SSE stream is written: line end, BOM, `data:` without its space, data split over two
/// `data:` lines, `id:`/`retry:`/comment lines.
#[derive(Debug, Clone)]
struct Style {
    eol: &'static str,
    bom: bool,
    no_space: bool,
    split_data: bool,
    extra_lines: bool,
}

fn style() -> impl Strategy<Value = Style> {
    (
        eol(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(eol, bom, no_space, split_data, extra_lines)| Style {
            eol,
            bom,
            no_space,
            split_data,
            extra_lines,
        })
}

struct SseOut {
    out: String,
    style: Style,
}

impl SseOut {
    fn new(style: Style) -> SseOut {
        let out = if style.bom { "\u{feff}" } else { "" }.to_string();
        SseOut { out, style }
    }

    fn line(&mut self, text: &str) {
        self.out.push_str(text);
        self.out.push_str(self.style.eol);
    }

    /// One event; `data` is JSON whose first `,` is outside any string.
    fn event(&mut self, name: Option<&str>, data: &str) {
        if self.style.extra_lines {
            self.line(": keep-alive");
            self.line("id: 7");
        }
        if let Some(name) = name {
            self.line(&format!("event: {name}"));
        }
        let field = if self.style.no_space {
            "data:"
        } else {
            "data: "
        };
        match data.split_once(',') {
            Some((a, b)) if self.style.split_data => {
                self.line(&format!("{field}{a},"));
                self.line(&format!("{field}{b}"));
            }
            _ => self.line(&format!("{field}{data}")),
        }
        if self.style.extra_lines {
            self.line("retry: 1000");
        }
        self.line("");
    }
}

fn reason() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "end_turn",
                "max_tokens",
                "stop_sequence",
                "tool_use",
                "stop",
                "length"
            ][..]
        )
        .prop_map(str::to_string),
        "[a-z_\u{e9}]{1,12}",
    ]
}

fn count() -> impl Strategy<Value = i64> {
    prop_oneof![0i64..10, 0i64..1_000_000]
}

/// An Anthropic Messages stream and the facts it carries.
fn anthropic_stream() -> impl Strategy<Value = (Vec<u8>, ResponseFacts)> {
    (
        ("msg_[A-Za-z0-9]{8,24}", "claude-[a-z0-9.-]{1,20}", reason()),
        (count(), count(), count(), count(), count()),
        vec((text(), any::<bool>()), 0..6),
        style(),
    )
        .prop_map(|((id, model, reason), (input, read, create, first, output), deltas, style)| {
            let mut s = SseOut::new(style);
            s.event(
                Some("message_start"),
                &format!(
                    r#"{{"type":"message_start","message":{{"id":{},"type":"message","role":"assistant","model":{},"content":[],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{input},"cache_creation_input_tokens":{create},"cache_read_input_tokens":{read},"output_tokens":{first}}}}}}}"#,
                    json(&id),
                    json(&model)
                ),
            );
            s.event(
                Some("content_block_start"),
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            );
            for (delta, ping) in &deltas {
                if *ping {
                    s.event(Some("ping"), r#"{"type": "ping"}"#);
                }
                s.event(
                    Some("content_block_delta"),
                    &format!(
                        r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}}}"#,
                        json(delta)
                    ),
                );
            }
            s.event(
                Some("content_block_stop"),
                r#"{"type":"content_block_stop","index":0}"#,
            );
            s.event(
                Some("message_delta"),
                &format!(
                    r#"{{"type":"message_delta","delta":{{"stop_reason":{},"stop_sequence":null}},"usage":{{"output_tokens":{output}}}}}"#,
                    json(&reason)
                ),
            );
            s.event(Some("message_stop"), r#"{"type":"message_stop"}"#);
            let want = ResponseFacts {
                model: Some(model),
                id: Some(id),
                finish_reasons: vec![reason],
                usage: Usage {
                    input_tokens: Some(input + read + create),
                    output_tokens: Some(output),
                    cache_read_input_tokens: Some(read),
                    cache_creation_input_tokens: Some(create),
                    reasoning_output_tokens: None,
                },
                usage_source: UsageSource::Stream,
                error_type: None,
                error_message: None,
                is_stream: true,
            };
            (s.out.into_bytes(), want)
        })
}

/// An OpenAI Chat Completions body, streamed or not, with `n` choices, and its facts.
fn openai_chat() -> impl Strategy<Value = (bool, Vec<u8>, ResponseFacts)> {
    (1usize..4)
        .prop_flat_map(|n| {
            (
                any::<bool>(),
                ("chatcmpl-[A-Za-z0-9]{8,20}", "gpt-[a-z0-9.-]{1,12}"),
                vec(reason(), n),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                vec((0..n, text()), 0..6),
                (count(), count(), count(), count()),
                style(),
            )
        })
        .prop_map(|(stream, (id, model), reasons, order, deltas, (p, c, k, r), style)| {
            let usage = format!(
                r#"{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":{k}}},"completion_tokens_details":{{"reasoning_tokens":{r}}}}}"#,
                p + c
            );
            let head = format!(
                r#""id":{},"object":"chat.completion.chunk","created":1700000000,"model":{}"#,
                json(&id),
                json(&model)
            );
            let body = if stream {
                let mut s = SseOut::new(style);
                for (i, delta) in &deltas {
                    s.event(
                        None,
                        &format!(
                            r#"{{{head},"choices":[{{"index":{i},"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#,
                            json(delta)
                        ),
                    );
                }
                let last: Vec<String> = order
                    .iter()
                    .map(|&i| {
                        format!(
                            r#"{{"finish_reason":{},"index":{i},"delta":{{}}}}"#,
                            json(&reasons[i])
                        )
                    })
                    .collect();
                s.event(
                    None,
                    &format!(r#"{{{head},"choices":[{}],"usage":null}}"#, last.join(",")),
                );
                s.event(None, &format!(r#"{{{head},"choices":[],"usage":{usage}}}"#));
                s.event(None, "[DONE]");
                s.out
            } else {
                let choices: Vec<String> = order
                    .iter()
                    .map(|&i| {
                        format!(
                            r#"{{"index":{i},"message":{{"role":"assistant","content":{}}},"finish_reason":{}}}"#,
                            json(&deltas.first().map(|d| d.1.clone()).unwrap_or_default()),
                            json(&reasons[i])
                        )
                    })
                    .collect();
                format!(
                    r#"{{{head},"choices":[{}],"usage":{usage}}}"#,
                    choices.join(",")
                )
            };
            let want = ResponseFacts {
                model: Some(model),
                id: Some(id),
                finish_reasons: reasons,
                usage: Usage {
                    input_tokens: Some(p),
                    output_tokens: Some(c),
                    cache_read_input_tokens: Some(k),
                    cache_creation_input_tokens: None,
                    reasoning_output_tokens: Some(r),
                },
                usage_source: if stream {
                    UsageSource::Stream
                } else {
                    UsageSource::Response
                },
                error_type: None,
                error_message: None,
                is_stream: stream,
            };
            (stream, body.into_bytes(), want)
        })
}

/// A token count as a hostile upstream may write it: huge, negative, float, string.
fn wild_count() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..=i64::MAX).prop_map(|n| n.to_string()),
        (i64::MAX - 1000..=i64::MAX).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| format!("\"{n}\"")),
        Just("9.2e18".to_string()),
        Just("8.9e15".to_string()),
        Just("1e400".to_string()),
        Just("18446744073709551615".to_string()),
        Just("-0".to_string()),
        Just("null".to_string()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Request bodies.

/// How a number is written in a request body.
fn number_as(n: i64) -> impl Strategy<Value = String> {
    proptest::sample::select(&[0u8, 1, 2, 3][..]).prop_map(move |form| match form {
        0 => n.to_string(),
        1 => format!("{n}.0"),
        2 => format!("\"{n}\""),
        _ => format!("\" {n} \""),
    })
}

/// Fields a request parser must not read: nested look-alikes, long prompts, odd values.
fn noise() -> impl Strategy<Value = Vec<(String, String)>> {
    vec(
        prop_oneof![
            text().prop_map(|t| (
                "messages".to_string(),
                format!(
                    r#"[{{"role":"user","content":{},"model":"nested","stream":true,"max_tokens":1}}]"#,
                    json(&t)
                )
            )),
            Just((
                "metadata".to_string(),
                r#"{"model":"no","user_id":"u","generationConfig":{"maxOutputTokens":3}}"#
                    .to_string()
            )),
            (0usize..4000).prop_map(|n| ("system".to_string(), json(&"\u{e9}x\\\"".repeat(n)))),
            Just(("temperature".to_string(), "0.7".to_string())),
            Just((
                "tools".to_string(),
                r#"[{"name":"t","input_schema":{"type":"object","properties":{"model":{"type":"string"}}}}]"#
                    .to_string()
            )),
        ],
        0..4,
    )
}

#[derive(Debug, Clone)]
struct Request {
    shape: ApiShape,
    path: String,
    body: Vec<u8>,
    want: RequestFacts,
    /// OpenAI chat: `max_tokens`, which a cut body may report when `max_completion_tokens`
    /// (which wins) lies past the cut.
    fallback_max: Option<i64>,
}

fn request() -> impl Strategy<Value = Request> {
    let shapes = &[
        ApiShape::AnthropicMessages,
        ApiShape::OpenAiChat,
        ApiShape::OpenAiResponses,
        ApiShape::OpenAiCompletions,
        ApiShape::OpenAiEmbeddings,
        ApiShape::GeminiGenerate,
    ][..];
    let limit =
        || proptest::option::of((0i64..(1 << 40)).prop_flat_map(|n| (Just(n), number_as(n))));
    (
        proptest::sample::select(shapes),
        proptest::option::of(prop_oneof![
            4 => "[a-zA-Z0-9._/:-]{1,30}".prop_map(|m| (Some(m.clone()), json(&m))),
            1 => Just((None, "\"\"".to_string())),
            1 => Just((None, "5".to_string())),
        ]),
        proptest::option::of(prop_oneof![
            4 => any::<bool>().prop_map(|b| (Some(b), b.to_string())),
            1 => Just((None, "\"yes\"".to_string())),
            1 => Just((None, "null".to_string())),
        ]),
        (limit(), limit(), limit(), limit()),
        ("gemini-[a-z0-9.-]{1,12}", any::<bool>()),
        noise(),
    )
        .prop_flat_map(
            |(
                shape,
                model,
                stream,
                (max, max_completion, max_output, gemini),
                (gmodel, gstream),
                noise,
            )| {
                let mut fields = noise;
                let mut add = |key: &str, value: &Option<(i64, String)>| {
                    if let Some((_, v)) = value {
                        fields.push((key.to_string(), v.clone()));
                    }
                };
                add("max_tokens", &max);
                add("max_completion_tokens", &max_completion);
                add("max_output_tokens", &max_output);
                if let Some((_, v)) = &gemini {
                    fields.push((
                        "generationConfig".to_string(),
                        format!(r#"{{"temperature":1,"maxOutputTokens":{v}}}"#),
                    ));
                }
                if let Some((_, v)) = &model {
                    fields.push(("model".to_string(), v.clone()));
                }
                if let Some((_, v)) = &stream {
                    fields.push(("stream".to_string(), v.clone()));
                }
                let n = |v: &Option<(i64, String)>| v.as_ref().map(|(n, _)| *n);
                let model_v = model.and_then(|m| m.0);
                let stream_v = stream.and_then(|s| s.0);
                let path = match shape {
                    ApiShape::GeminiGenerate if gstream => {
                        format!("/v1beta/models/{gmodel}:streamGenerateContent?alt=sse")
                    }
                    ApiShape::GeminiGenerate => format!("/v1beta/models/{gmodel}:generateContent"),
                    _ => "/v1/whatever".to_string(),
                };
                let defaulted = stream_v.or(Some(false));
                let want = match shape {
                    ApiShape::GeminiGenerate => RequestFacts {
                        model: Some(gmodel),
                        stream: Some(gstream),
                        max_tokens: n(&gemini),
                        ..RequestFacts::default()
                    },
                    ApiShape::OpenAiChat => RequestFacts {
                        model: model_v,
                        stream: defaulted,
                        max_tokens: n(&max_completion).or(n(&max)),
                        ..RequestFacts::default()
                    },
                    ApiShape::OpenAiResponses => RequestFacts {
                        model: model_v,
                        stream: defaulted,
                        max_tokens: n(&max_output),
                        ..RequestFacts::default()
                    },
                    ApiShape::OpenAiEmbeddings => RequestFacts {
                        model: model_v,
                        stream: stream_v,
                        max_tokens: None,
                        ..RequestFacts::default()
                    },
                    _ => RequestFacts {
                        model: model_v,
                        stream: defaulted,
                        max_tokens: n(&max),
                        ..RequestFacts::default()
                    },
                };
                let fallback = if shape == ApiShape::OpenAiChat {
                    n(&max)
                } else {
                    None
                };
                (
                    Just(fields).prop_shuffle(),
                    Just(shape),
                    Just(path),
                    Just((want, fallback)),
                )
            },
        )
        .prop_map(|(fields, shape, path, (want, fallback_max))| {
            let members: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}: {v}", json(k)))
                .collect();
            Request {
                shape,
                path,
                body: format!("{{{}}}", members.join(", ")).into_bytes(),
                want,
                fallback_max,
            }
        })
}

fn parse_request(
    shape: ApiShape,
    path: &str,
    encoding: Option<&str>,
    parts: &[&[u8]],
) -> RequestFacts {
    let mut p = RequestParser::new(shape, path, encoding);
    for part in parts {
        p.feed(part);
    }
    p.finish()
}

/// Real fixtures, mutated, under every parser: the same facts in any chunking.
#[test]
fn response_facts_split_invariant_on_mutated_fixtures() {
    let _g = shared();
    proptest!(cases(192), |(
        body in mutated_fixture(6),
        h in head(),
        sizes in splits(),
        empties in any::<bool>(),
    )| {
        check_split_invariant(h, None, &body, &sizes, empties)?;
    });
}

/// Random bytes and SSE/JSON soup under every parser: the same facts in any chunking.
#[test]
fn response_facts_split_invariant_on_soup() {
    let _g = shared();
    proptest!(cases(192), |(
        body in soup(2048),
        h in head(),
        sizes in splits(),
        empties in any::<bool>(),
    )| {
        check_split_invariant(h, None, &body, &sizes, empties)?;
    });
}

/// A fixture packed with any coding gives the facts of the identity body, in any chunking.
#[test]
fn compressed_response_gives_identity_facts() {
    let _g = shared();
    proptest!(cases(96), |(
        body in mutated_fixture(2),
        h in head(),
        packing in packing(),
        sizes in splits(),
    )| {
        let want = respond(h, None, &[&body]);
        let packed = packing.pack(&body);
        let got = check_split_invariant(h, packing.header(), &packed, &sizes, false)?;
        prop_assert_eq!(got, want);
    });
}

/// A packed body cut anywhere (a connection dropped mid-body): the same facts in any
/// chunking.
#[test]
fn cut_compressed_response_split_invariant() {
    let _g = shared();
    proptest!(cases(96), |(
        (body, _) in anthropic_stream(),
        fixture in mutated_fixture(0),
        use_fixture in any::<bool>(),
        events in 100usize..1200,
        seed in any::<u32>(),
        h in head(),
        packing in crate::gens::compressing(),
        cut in any::<proptest::sample::Index>(),
        sizes in splits(),
    )| {
        // Long enough that one piece may decode to more than a decoder's 32 KiB output buffer.
        let mut long = crate::gens::long_events(events, seed);
        long.extend_from_slice(if use_fixture { &fixture } else { &body });
        let h = if use_fixture {
            h
        } else {
            Head { shape: ApiShape::AnthropicMessages, content_type: SSE, status: 200, ..h }
        };
        let packed = packing.pack(&long);
        let packed = &packed[..cut.index(packed.len() + 1)];
        check_split_invariant(h, packing.header(), packed, &sizes, false)?;
    });
}

/// A packed body with bytes flipped, inserted or deleted: no panic, facts within bounds.
/// (Not split-invariant: a decoder that fails loses what it decoded in that call.)
#[test]
fn corrupt_compressed_response_never_panics() {
    let _g = shared();
    proptest!(cases(96), |(
        body in mutated_fixture(1),
        h in head(),
        packing in packing(),
        edits in crate::gens::edits(3),
        sizes in splits(),
    )| {
        let packed = crate::gens::mutate(&packing.pack(&body), &edits);
        check_bounded(&respond(h, packing.header(), &[&packed]))?;
        check_bounded(&respond(h, packing.header(), &pieces(&packed, &sizes, false)))?;
    });
}

/// A generated Anthropic stream yields its model, id, stop reason and usage, however it is
/// written (line ends, BOM, split data lines, comments), packed and chunked.
#[test]
fn generated_anthropic_stream_yields_its_facts() {
    let _g = shared();
    proptest!(cases(96), |(
        (body, want) in anthropic_stream(),
        packing in packing(),
        sizes in splits(),
        empties in any::<bool>(),
        complete in any::<bool>(),
    )| {
        let h = Head { shape: ApiShape::AnthropicMessages, content_type: SSE, status: 200, complete };
        let packed = packing.pack(&body);
        let got = respond(h, packing.header(), &pieces(&packed, &sizes, empties));
        prop_assert_eq!(got, want);
    });
}

/// A generated OpenAI chat body (JSON or stream, n choices in any order) yields its facts;
/// also with no content type (sniffed) when it starts like one.
#[test]
fn generated_openai_chat_yields_its_facts() {
    let _g = shared();
    proptest!(cases(96), |(
        (stream, body, want) in openai_chat(),
        packing in packing(),
        sizes in splits(),
        sniff in any::<bool>(),
    )| {
        let ct = match (sniff && !body.starts_with("\u{feff}".as_bytes()), stream) {
            (true, _) => None,
            (false, true) => SSE,
            (false, false) => JSON,
        };
        let h = Head { shape: ApiShape::OpenAiChat, content_type: ct, status: 200, complete: true };
        let packed = packing.pack(&body);
        let got = respond(h, packing.header(), &pieces(&packed, &sizes, false));
        prop_assert_eq!(got, want);
    });
}

/// A generated stream cut anywhere: the same facts in any chunking, and every fact it does
/// report is one the whole stream carries.
#[test]
fn cut_generated_stream_reports_only_true_facts() {
    let _g = shared();
    proptest!(cases(96), |(
        (body, want) in anthropic_stream(),
        cut in any::<proptest::sample::Index>(),
        sizes in splits(),
        complete in any::<bool>(),
    )| {
        let body = &body[..cut.index(body.len() + 1)];
        let h = Head { shape: ApiShape::AnthropicMessages, content_type: SSE, status: 200, complete };
        let got = check_split_invariant(h, None, body, &sizes, false)?;
        prop_assert!(got.model.is_none() || got.model == want.model);
        prop_assert!(got.id.is_none() || got.id == want.id);
        prop_assert!(got.finish_reasons.is_empty() || got.finish_reasons == want.finish_reasons);
        prop_assert!(got.error_type.is_none());
    });
}

/// Hostile token counts (huge, negative, float, string) never panic, and counts that the
/// upstream gave as non-negative are never reported negative (no wrap-around).
#[test]
fn hostile_token_counts_never_panic_nor_wrap() {
    let _g = shared();
    proptest!(cases(96), |(
        counts in vec(wild_count(), 4),
        as_stream in any::<bool>(),
        sizes in splits(),
    )| {
        let usage = format!(
            r#"{{"input_tokens":{},"cache_read_input_tokens":{},"cache_creation_input_tokens":{},"output_tokens":{}}}"#,
            counts[0], counts[1], counts[2], counts[3]
        );
        let body = if as_stream {
            format!(
                "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"m\",\"model\":\"c\",\"usage\":{usage}}}}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"usage\":{usage}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
            )
        } else {
            format!(r#"{{"id":"m","model":"c","stop_reason":"end_turn","usage":{usage}}}"#)
        };
        let h = Head {
            shape: ApiShape::AnthropicMessages,
            content_type: if as_stream { SSE } else { JSON },
            status: 200,
            complete: true,
        };
        let facts = check_split_invariant(h, None, body.as_bytes(), &sizes, false)?;
        let non_negative = counts.iter().all(|c| !c.contains('-'));
        if non_negative {
            let u = &facts.usage;
            for n in [
                u.input_tokens,
                u.output_tokens,
                u.cache_read_input_tokens,
                u.cache_creation_input_tokens,
            ]
            .into_iter()
            .flatten()
            {
                prop_assert!(n >= 0, "negative count {} from {:?}", n, counts);
            }
        }
        // The same counts through the other formats.
        for (shape, doc) in [
            (ApiShape::OpenAiChat, format!(r#"{{"usage":{{"prompt_tokens":{},"completion_tokens":{},"prompt_tokens_details":{{"cached_tokens":{}}}}}}}"#, counts[0], counts[1], counts[2])),
            (ApiShape::OpenAiResponses, format!(r#"{{"usage":{{"input_tokens":{},"output_tokens":{},"output_tokens_details":{{"reasoning_tokens":{}}}}}}}"#, counts[0], counts[1], counts[3])),
            (ApiShape::GeminiGenerate, format!(r#"{{"usageMetadata":{{"promptTokenCount":{},"candidatesTokenCount":{},"thoughtsTokenCount":{}}}}}"#, counts[0], counts[1], counts[2])),
        ] {
            let h = Head { shape, content_type: JSON, status: 200, complete: true };
            check_split_invariant(h, None, doc.as_bytes(), &sizes, false)?;
        }
    });
}

/// Many choices and oversized values: at most 64 finish reasons, no fact over 64 KiB.
#[test]
fn response_facts_stay_bounded() {
    let _g = shared();
    proptest!(cases(24), |(
        choices in 0usize..200,
        model_len in prop_oneof![0usize..100, 65_000usize..67_000],
        message_len in prop_oneof![0usize..100, 65_000usize..67_000],
        stream in any::<bool>(),
    )| {
        let model = "m".repeat(model_len);
        let list: Vec<String> = (0..choices)
            .map(|i| format!(r#"{{"index":{i},"finish_reason":"r{i}"}}"#))
            .collect();
        let doc = format!(
            r#"{{"id":"x","model":"{model}","choices":[{}],"error":{{"type":"t","message":"{}"}}}}"#,
            list.join(","),
            "e".repeat(message_len)
        );
        let body = if stream { format!("data: {doc}\n\ndata: [DONE]\n\n") } else { doc };
        let h = Head {
            shape: ApiShape::OpenAiChat,
            content_type: if stream { SSE } else { JSON },
            status: 200,
            complete: true,
        };
        let facts = check_split_invariant(h, None, body.as_bytes(), &[4096, 333], false)?;
        prop_assert_eq!(facts.finish_reasons.len(), choices.min(MAX_FINISH));
        if model_len <= 100 && model_len > 0 {
            prop_assert_eq!(facts.model, Some(model.clone()));
        }
        // The request side: the same bound on the model it reports, in any chunking.
        let req = format!(r#"{{"messages":[],"model":"{model}","max_tokens":5}}"#);
        let path = "/v1/chat/completions";
        let whole = parse_request(ApiShape::OpenAiChat, path, None, &[req.as_bytes()]);
        let split = parse_request(ApiShape::OpenAiChat, path, None, &pieces(req.as_bytes(), &[4096, 333], false));
        prop_assert_eq!(&split, &whole);
        prop_assert!(whole.model.as_ref().is_none_or(|m| m.len() <= MAX_FACT), "a {} byte model", model_len);
    });
}

/// A long body (1–3 MiB) of one of the shapes a hostile upstream or client may send.
fn long_body() -> impl Strategy<Value = (ApiShape, Option<&'static str>, Vec<u8>)> {
    let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lorem \\\"ipsum\\\" \\u00e9 {not json} \"}}\n\n";
    (0u8..5, 1usize..3).prop_map(move |(kind, mib)| {
        let n = mib << 20;
        match kind {
            // Many small events.
            0 => (
                ApiShape::AnthropicMessages,
                SSE,
                delta.repeat(n / delta.len()).into_bytes(),
            ),
            // One event with a huge text.
            1 => (
                ApiShape::AnthropicMessages,
                SSE,
                format!(
                    "data: {{\"type\":\"x\",\"text\":\"{}\"}}\n\n",
                    "y".repeat(n)
                )
                .into_bytes(),
            ),
            // A huge value the parser wants (too big to capture).
            2 => (
                ApiShape::OpenAiChat,
                JSON,
                format!(
                    "{{\"model\":\"{}\",\"usage\":{{\"x\":[{}]}}}}",
                    "m".repeat(n / 2),
                    "1,".repeat(n / 4)
                )
                .into_bytes(),
            ),
            // Deep nesting.
            3 => (
                ApiShape::OpenAiResponses,
                JSON,
                "[{\"a\":".repeat(n / 6).into_bytes(),
            ),
            // One endless SSE line.
            _ => (
                ApiShape::GeminiGenerate,
                SSE,
                format!("data: {}", "z".repeat(n)).into_bytes(),
            ),
        }
    })
}

/// What a parser keeps between `feed` calls does not grow with the body: a few MiB in
/// pieces of any size keep at most `HELD_BOUND` bytes allocated.
#[test]
fn parsers_hold_bounded_memory() {
    let _g = exclusive();
    proptest!(cases(10), |(
        (shape, ct, body) in long_body(),
        packing in proptest::sample::select(&[Packing::Identity, Packing::Gzip, Packing::Zlib, Packing::RawDeflate][..]),
        piece in prop_oneof![1usize..64, 1024usize..65536],
    )| {
        let packed = packing.pack(&body);
        let (parser, held) = net_allocated(|| {
            let mut p = ResponseParser::new(shape, ct, packing.header(), 200);
            for part in packed.chunks(piece) {
                p.feed(part);
            }
            p
        });
        drop(parser);
        prop_assert!(held <= HELD_BOUND, "response parser holds {} bytes", held);
        let (parser, held) = net_allocated(|| {
            let mut p = RequestParser::new(shape, "/v1beta/models/g:generateContent", packing.header());
            for part in packed.chunks(piece) {
                p.feed(part);
            }
            p
        });
        drop(parser);
        prop_assert!(held <= HELD_BOUND, "request parser holds {} bytes", held);
    });
}

/// A generated request yields its model, stream flag and token limit wherever they sit
/// (after a long prompt, among nested look-alikes), packed with any coding, in any chunking.
#[test]
fn generated_request_yields_its_facts() {
    let _g = shared();
    proptest!(cases(128), |(
        req in request(),
        packing in packing(),
        sizes in splits(),
        empties in any::<bool>(),
    )| {
        let packed = packing.pack(&req.body);
        let got = parse_request(req.shape, &req.path, packing.header(), &pieces(&packed, &sizes, empties));
        prop_assert_eq!(got, req.want.clone(), "{}", show(&req.body));
    });
}

/// A request cut anywhere: the same facts in any chunking, and each fact is the true one or
/// unknown (a number cut short is not trusted).
#[test]
fn cut_request_reports_only_true_facts() {
    let _g = shared();
    proptest!(cases(128), |(
        req in request(),
        cut in any::<proptest::sample::Index>(),
        sizes in splits(),
    )| {
        let body = &req.body[..cut.index(req.body.len() + 1)];
        let whole = parse_request(req.shape, &req.path, None, &[body]);
        let split = parse_request(req.shape, &req.path, None, &pieces(body, &sizes, false));
        prop_assert_eq!(&split, &whole);
        prop_assert!(whole.model.is_none() || whole.model == req.want.model, "{:?}", whole);
        prop_assert!(
            whole.max_tokens.is_none()
                || whole.max_tokens == req.want.max_tokens
                || whole.max_tokens == req.fallback_max,
            "{:?}",
            whole
        );
        prop_assert!(whole.stream.is_none() || whole.stream == req.want.stream, "{:?}", whole);
    });
}

/// Mutated fixtures and soup, packed with any coding, under every request parser: the same
/// facts in any chunking; corrupt packed bytes: no panic.
#[test]
fn request_facts_split_invariant() {
    let _g = shared();
    proptest!(cases(128), |(
        body in prop_oneof![mutated_fixture(6), soup(2048)],
        shape in shape(),
        packing in packing(),
        edits in crate::gens::edits(2),
        sizes in splits(),
        empties in any::<bool>(),
    )| {
        let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
        let packed = packing.pack(&body);
        let whole = parse_request(shape, path, packing.header(), &[&packed]);
        let split = parse_request(shape, path, packing.header(), &pieces(&packed, &sizes, empties));
        prop_assert_eq!(split, whole);
        // Corrupt packed bytes: no panic (not split-invariant: see the module doc).
        let corrupt = crate::gens::mutate(&packed, &edits);
        let _ = parse_request(shape, path, packing.header(), &[&corrupt]);
        let _ = parse_request(shape, path, packing.header(), &pieces(&corrupt, &sizes, empties));
    });
}
