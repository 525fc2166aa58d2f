//! The provider module's own tests: shapes and names, the request parser, and response
//! parsing in bounded memory whatever the body.

use std::io::Write;

use super::testkit::*;
use super::*;

#[test]
fn shape_from_path() {
    let cases = [
        ("/v1/messages", ApiShape::AnthropicMessages),
        ("/v1/messages?beta=true", ApiShape::AnthropicMessages),
        ("/anthropic/v1/messages/", ApiShape::AnthropicMessages),
        ("/v1/messages/count_tokens", ApiShape::Unknown),
        ("/v1/messages/batches", ApiShape::Unknown),
        ("/v1/threads/thread_1/messages", ApiShape::Unknown),
        ("/v1/chat/completions", ApiShape::OpenAiChat),
        (
            "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
            ApiShape::OpenAiChat,
        ),
        ("/v1beta/openai/chat/completions", ApiShape::OpenAiChat),
        ("/v1/responses", ApiShape::OpenAiResponses),
        (
            "/openai/v1/responses?api-version=preview",
            ApiShape::OpenAiResponses,
        ),
        ("/v1/completions", ApiShape::OpenAiCompletions),
        ("/v1/embeddings", ApiShape::OpenAiEmbeddings),
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            ApiShape::GeminiGenerate,
        ),
        (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            ApiShape::GeminiGenerate,
        ),
        (
            "/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash:streamGenerateContent",
            ApiShape::GeminiGenerate,
        ),
        (
            "/v1beta/models/gemini-2.5-flash:countTokens",
            ApiShape::Unknown,
        ),
        (
            "/v1beta/models/text-embedding-004:embedContent",
            ApiShape::Unknown,
        ),
        ("/v1/models", ApiShape::Unknown),
        ("/", ApiShape::Unknown),
        ("", ApiShape::Unknown),
        ("?x=1", ApiShape::Unknown),
        (
            "http://localhost:8080/v1/chat/completions",
            ApiShape::OpenAiChat,
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent?key=k",
            ApiShape::GeminiGenerate,
        ),
        (
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            ApiShape::BedrockConverse,
        ),
        (
            "/model/us.anthropic.claude-3-5-sonnet-20240620-v1:0/converse-stream",
            ApiShape::BedrockConverse,
        ),
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.amazon.nova-pro-v1%3A0/converse",
            ApiShape::BedrockConverse,
        ),
        ("/bedrock/model/m/converse/", ApiShape::BedrockConverse),
        ("/model/m/invoke", ApiShape::Unknown),
        ("/model/m/invoke-with-response-stream", ApiShape::Unknown),
        ("/model//converse", ApiShape::Unknown),
        ("/models/m/converse", ApiShape::Unknown),
        ("/v1/converse", ApiShape::Unknown),
    ];
    for (path, want) in cases {
        assert_eq!(ApiShape::from_path(path), want, "{path}");
        // No two APIs claim a path, so the registry's order never matters.
        let bare = strip_query(path).trim_end_matches('/');
        let claims = REGISTRY.iter().filter(|p| p.recognises(bare)).count();
        assert!(claims <= 1, "{path}: {claims} APIs");
    }
}

#[test]
fn registry_is_consistent() {
    let mut names: Vec<&str> = ApiShape::all().map(ApiShape::name).collect();
    names.sort();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "one id per API");
    assert!(!names.contains(&ApiShape::Unknown.name()));
    for shape in ApiShape::all() {
        let provider = shape.provider().unwrap();
        assert_eq!(provider.api().shape, shape);
        assert!(
            provider.api().keys.max_tokens.len() <= request::MAX_LIMITS,
            "{shape:?}"
        );
    }
    assert!(ApiShape::Unknown.provider().is_none());
    assert_eq!(format!("{:?}", ApiShape::OpenAiChat), "OpenAiChat");
}

#[test]
fn names() {
    let ops = [
        (ApiShape::AnthropicMessages, Some("chat")),
        (ApiShape::OpenAiChat, Some("chat")),
        (ApiShape::OpenAiResponses, Some("chat")),
        (ApiShape::OpenAiCompletions, Some("text_completion")),
        (ApiShape::OpenAiEmbeddings, Some("embeddings")),
        (ApiShape::GeminiGenerate, Some("generate_content")),
        (ApiShape::BedrockConverse, Some("chat")),
        (ApiShape::Unknown, None),
    ];
    for (shape, want) in ops {
        assert_eq!(shape.operation_name(), want, "{shape:?}");
    }
    let providers = [
        (
            ApiShape::AnthropicMessages,
            Some("anthropic"),
            Some(ErrorShape::Anthropic),
        ),
        (
            ApiShape::OpenAiResponses,
            Some("openai"),
            Some(ErrorShape::OpenAi),
        ),
        (
            ApiShape::OpenAiEmbeddings,
            Some("openai"),
            Some(ErrorShape::OpenAi),
        ),
        (
            ApiShape::GeminiGenerate,
            Some("gcp.gemini"),
            Some(ErrorShape::Gemini),
        ),
        (
            ApiShape::BedrockConverse,
            Some("aws.bedrock"),
            Some(ErrorShape::Bedrock),
        ),
        (ApiShape::Unknown, None, None),
    ];
    for (shape, provider, errors) in providers {
        assert_eq!(
            (shape.default_provider(), shape.error_shape()),
            (provider, errors)
        );
    }
    let stops = [
        (ParseStop::RatioLimit, "ratio_limit"),
        (ParseStop::CorruptEncoding, "corrupt_encoding"),
        (ParseStop::UnsupportedEncoding, "unsupported_encoding"),
        (ParseStop::MemoryLimit, "memory_limit"),
        (ParseStop::FrameLimit, "frame_limit"),
        (ParseStop::CorruptFrame, "corrupt_frame"),
    ];
    for (stop, want) in stops {
        assert_eq!(stop.as_str(), want);
    }
    let sources = [
        (UsageSource::Response, "response"),
        (UsageSource::Stream, "stream"),
        (UsageSource::Absent, "absent"),
        (UsageSource::StreamCutShort, "stream_cut_short"),
    ];
    for (source, want) in sources {
        assert_eq!(source.as_str(), want);
    }
}

fn req(model: Option<&str>, stream: Option<bool>, max_tokens: Option<i64>) -> RequestFacts {
    RequestFacts {
        model: model.map(str::to_string),
        stream,
        max_tokens,
        stopped: None,
    }
}

#[test]
fn requests() {
    let cases: Vec<(&str, ApiShape, &str, &[u8], RequestFacts)> = vec![
        ("gemini non-stream", ApiShape::GeminiGenerate, "/v1beta/models/gemini-2.5-pro:generateContent", b"{}", req(Some("gemini-2.5-pro"), Some(false), None)),
        ("gemini snake case", ApiShape::GeminiGenerate, "/v1/models/g:generateContent", br#"{"generation_config":{"max_output_tokens":7}}"#, req(Some("g"), Some(false), Some(7))),
        ("chat max_tokens only", ApiShape::OpenAiChat, "/v1/chat/completions", br#"{"model":"gpt-4o","max_tokens":100}"#, req(Some("gpt-4o"), Some(false), Some(100))),
        ("chat both limits", ApiShape::OpenAiChat, "/v1/chat/completions", br#"{"max_tokens":1,"max_completion_tokens":2,"model":"m","stream":false}"#, req(Some("m"), Some(false), Some(2))),
        ("truncated: stream unknown", ApiShape::AnthropicMessages, "/v1/messages", br#"{"model":"claude-opus-4-1","max_tokens":1024,"messages":[{"role":"user","content":"hel"#, req(Some("claude-opus-4-1"), None, Some(1024))),
        ("truncated number is not trusted", ApiShape::AnthropicMessages, "/v1/messages", br#"{"model":"c","max_tokens":10"#, req(Some("c"), None, None)),
        ("nested model ignored", ApiShape::OpenAiChat, "/v1/chat/completions", br#"{"messages":[{"model":"no"}],"metadata":{"model":"no"}}"#, req(None, Some(false), None)),
        ("embeddings", ApiShape::OpenAiEmbeddings, "/v1/embeddings", br#"{"model":"text-embedding-3-small","input":"hi"}"#, req(Some("text-embedding-3-small"), None, None)),
        ("completions", ApiShape::OpenAiCompletions, "/v1/completions", br#"{"model":"gpt-3.5-turbo-instruct","max_tokens":7,"stream":true}"#, req(Some("gpt-3.5-turbo-instruct"), Some(true), Some(7))),
        ("empty model and odd types", ApiShape::OpenAiChat, "/v1/chat/completions", br#"{"model":"","stream":"yes","max_tokens":"12"}"#, req(None, Some(false), Some(12))),
        ("garbage", ApiShape::OpenAiChat, "/v1/chat/completions", b"\x00\x01not json", req(None, None, None)),
        ("empty body", ApiShape::AnthropicMessages, "/v1/messages", b"", req(None, None, None)),
        ("unknown shape", ApiShape::Unknown, "/v1/models", br#"{"model":"x"}"#, req(None, None, None)),
    ];
    for (name, shape, path, body, want) in cases {
        assert_eq!(parse_request(shape, path, body), want, "{name}");
    }
}

#[test]
fn request_fixtures() {
    let gemini_stream = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
    let case = |file, shape, path, model, stream, max_tokens| RequestCase {
        file,
        shape,
        path,
        model: Some(model),
        stream: Some(stream),
        max_tokens: Some(max_tokens),
    };
    check_fixtures(
        "requests",
        &[],
        &[
            case(
                "anthropic.json",
                ApiShape::AnthropicMessages,
                "/v1/messages",
                "claude-sonnet-4-5",
                true,
                8192,
            ),
            case(
                "openai_chat.json",
                ApiShape::OpenAiChat,
                "/v1/chat/completions",
                "gpt-4.1",
                true,
                2048,
            ),
            case(
                "openai_responses.json",
                ApiShape::OpenAiResponses,
                "/v1/responses",
                "gpt-5",
                false,
                4096,
            ),
            case(
                "gemini.json",
                ApiShape::GeminiGenerate,
                gemini_stream,
                "gemini-2.5-flash",
                true,
                1000,
            ),
        ],
    );
}

#[test]
fn garbage_never_panics() {
    let mut bodies: Vec<Vec<u8>> = fixture_names("garbage")
        .iter()
        .map(|name| fixture("garbage", name))
        .collect();
    bodies.push(Vec::new());
    let shapes: Vec<ApiShape> = ApiShape::all().chain([ApiShape::Unknown]).collect();
    let mut rng = Rng(7);
    for body in &bodies {
        for &shape in &shapes {
            for (ct, enc, status) in [
                (Some("text/event-stream"), None, 200),
                (Some("application/json"), None, 200),
                (None, None, 502),
                (Some("text/event-stream"), Some("gzip"), 200),
                (Some("application/json"), Some("br"), 500),
                (Some("application/json"), Some("zstd"), 200),
                (None, Some("compress"), 200),
            ] {
                let mut whole = ResponseParser::new(shape, ct, enc, status);
                whole.feed(body);
                let mut p = ResponseParser::new(shape, ct, enc, status);
                for piece in random_pieces(body, &mut rng) {
                    p.feed(piece);
                }
                let facts = p.finish(false);
                assert_eq!(facts, whole.finish(false), "{shape:?} {ct:?} split");
                assert_eq!(facts.usage, Usage::default(), "{shape:?} {ct:?}");
                let _ = parse_request(shape, "/v1beta/models/x:generateContent", body);
            }
        }
    }
}

#[test]
fn unknown_shape_and_unsupported_encoding() {
    let mut p = ResponseParser::new(
        ApiShape::Unknown,
        Some("text/event-stream"),
        Some("gzip"),
        200,
    );
    p.feed(b"data: {\"usage\":{}}\n\n");
    let facts = p.finish(true);
    assert_eq!(
        (facts.is_stream, facts.usage_source),
        (true, UsageSource::StreamCutShort)
    );
    let mut p = ResponseParser::new(
        ApiShape::OpenAiChat,
        Some("application/json"),
        Some("gzip, br"),
        200,
    );
    p.feed(br#"{"model":"x","usage":{"prompt_tokens":1}}"#);
    let facts = p.finish(true);
    assert_eq!(
        (facts.model, facts.usage_source),
        (None, UsageSource::Absent)
    );
}

#[test]
fn parser_is_send() {
    fn send<T: Send + 'static>() {}
    send::<ResponseParser>();
}

#[test]
fn fifty_megabyte_stream_finds_final_usage_in_bounded_memory() {
    let head = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_big\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n";
    let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lorem ipsum dolor sit amet, \\\"quoted\\\" \\u00e9 {not json} \"}}\n\n".repeat(200);
    let tail = b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":123456}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let mut p = ResponseParser::new(
        ApiShape::AnthropicMessages,
        Some("text/event-stream"),
        None,
        200,
    );
    p.feed(head);
    let mut fed = 0;
    let mut most = 0;
    while fed < 50 << 20 {
        for piece in delta.as_bytes().chunks(16 * 1024 + 7) {
            p.feed(piece);
        }
        fed += delta.len();
        most = most.max(p.held());
    }
    p.feed(tail);
    assert!(most < 4096, "held {most} bytes");
    let facts = p.finish(true);
    assert_eq!(facts.usage.output_tokens, Some(123456));
    assert_eq!(facts.usage_source, UsageSource::Stream);
    assert_eq!(facts.finish_reasons, vec!["end_turn".to_string()]);
}

#[test]
fn huge_json_bodies_and_events() {
    // Text, not one letter repeated: 12 MiB of `x` compresses past the bomb ratio.
    let mut rng = Rng(7);
    let text: String = (0..12 << 20)
        .map(|_| char::from(b"abcdefghij klmnopqrstuvwxyz"[rng.below(27)]))
        .collect();
    let body = format!(
        r#"{{"id":"chatcmpl-big","object":"chat.completion","model":"gpt-4.1","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"length"}}],"usage":{{"prompt_tokens":5,"completion_tokens":32768}}}}"#
    );
    let mut p = ResponseParser::new(
        ApiShape::OpenAiChat,
        Some("application/json"),
        Some("gzip"),
        200,
    );
    let packed = compress("gzip", body.as_bytes());
    let mut most = 0;
    for piece in packed.chunks(8192) {
        p.feed(piece);
        most = most.max(p.held());
    }
    assert!(most < 4096, "held {most} bytes");
    let facts = p.finish(true);
    assert_eq!(
        (facts.usage.output_tokens, facts.finish_reasons),
        (Some(32768), vec!["length".to_string()])
    );
    // One 3 MB `response.completed` event (the whole output echoed back) still yields its usage.
    let big = "y".repeat(3 << 20);
    let event = format!(
        "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"resp_1\",\"status\":\"completed\",\"instructions\":\"{big}\",\"model\":\"gpt-5\",\"output\":[{{\"type\":\"message\",\"content\":[{{\"type\":\"output_text\",\"text\":\"{big}\"}}]}}],\"usage\":{{\"input_tokens\":1,\"output_tokens\":2}}}}}}\n\n"
    );
    let mut p = ResponseParser::new(
        ApiShape::OpenAiResponses,
        Some("text/event-stream"),
        None,
        200,
    );
    for piece in event.as_bytes().chunks(65536) {
        p.feed(piece);
    }
    let facts = p.finish(true);
    assert_eq!(
        (facts.model.as_deref(), facts.usage.output_tokens),
        (Some("gpt-5"), Some(2))
    );
    assert_eq!(facts.usage_source, UsageSource::Stream);
}

#[test]
fn decompression_bomb_stops_parsing() {
    let zeros = vec![b' '; 100 << 20];
    let packed = compress("zstd", &zeros);
    let mut p = ResponseParser::new(
        ApiShape::OpenAiChat,
        Some("application/json"),
        Some("zstd"),
        200,
    );
    for piece in packed.chunks(1024) {
        p.feed(piece);
    }
    assert_eq!(p.stopped(), Some(ParseStop::RatioLimit));
    assert!(p.decoded_len() <= FREE_DECODED);
    assert_eq!(p.finish(true).usage_source, UsageSource::Absent);
}

/// Flip, insert and cut bytes of every fixture; any shape, content type and encoding must cope.
#[test]
fn mutated_fixtures_never_panic() {
    let rounds: usize = std::env::var("LLMTAP_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let specials = [
        b'"', b'\\', b'{', b'}', b'[', b']', b':', b',', b'\n', b'\r', 0xff, b'0',
    ];
    let mut rng = Rng(0x5eed);
    let shapes: Vec<ApiShape> = ApiShape::all().collect();
    let types = [
        Some("text/event-stream"),
        Some("application/json"),
        Some("application/vnd.amazon.eventstream"),
        None,
    ];
    for fixture in all_fixtures() {
        for _ in 0..rounds {
            let mut body = fixture.to_vec();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(body.len());
                match rng.below(3) {
                    0 => body.insert(at, specials[rng.below(specials.len())]),
                    1 => body.truncate(at.max(1)),
                    _ => {
                        if let Some(b) = body.get_mut(at) {
                            *b = specials[rng.below(specials.len())];
                        }
                    }
                }
            }
            let shape = shapes[rng.below(shapes.len())];
            let ct = types[rng.below(types.len())];
            let status = [200, 429][rng.below(2)];
            let mut p = ResponseParser::new(shape, ct, None, status);
            for piece in random_pieces(&body, &mut rng) {
                p.feed(piece);
            }
            let _ = p.finish(rng.below(2) == 0);
            let _ = parse_request(shape, "/v1beta/models/m:streamGenerateContent", &body);
            let enc = ["gzip", "deflate", "br", "zstd"][rng.below(4)];
            let mut packed = compress(enc, &body);
            let at = rng.below(packed.len());
            if let Some(b) = packed.get_mut(at) {
                *b ^= 1 << rng.below(8);
            }
            let mut p = ResponseParser::new(shape, ct, Some(enc), status);
            for piece in random_pieces(&packed, &mut rng) {
                p.feed(piece);
            }
            let _ = p.finish(true);
            let cut = packed
                .get(..rng.below(packed.len()) + 1)
                .unwrap_or_default();
            let _ = decode::decode_body(Some(enc), cut, 1 << 20);
        }
    }
}

fn big_prompt_model_last() -> Vec<u8> {
    let prompt = "x".repeat(3 * 1024 * 1024);
    format!(
        r#"{{"max_tokens":64,"messages":[{{"role":"user","content":"{prompt}"}}],"model":"claude-opus-4-1","stream":true}}"#
    )
    .into_bytes()
}

#[test]
fn model_after_a_long_prompt_is_found_in_any_chunking() {
    let body = big_prompt_model_last();
    for chunk in [1usize << 20, 65_536, 7_777] {
        let mut p = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", None);
        for piece in body.chunks(chunk) {
            p.feed(piece);
        }
        let facts = p.finish();
        assert_eq!(
            facts.model.as_deref(),
            Some("claude-opus-4-1"),
            "chunk {chunk}"
        );
        assert_eq!(facts.stream, Some(true));
        assert_eq!(facts.max_tokens, Some(64));
    }
}

#[test]
fn gzip_request_bodies_are_decoded_on_the_copy() {
    let body = big_prompt_model_last();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&body).unwrap();
    let gz = gz.finish().unwrap();
    let mut p = RequestParser::new(ApiShape::AnthropicMessages, "/v1/messages", Some("gzip"));
    for piece in gz.chunks(1000) {
        p.feed(piece);
    }
    assert_eq!(p.finish().model.as_deref(), Some("claude-opus-4-1"));
}

#[test]
fn unknown_encodings_and_garbage_give_unknown_facts() {
    let mut p = RequestParser::new(ApiShape::OpenAiChat, "/v1/chat/completions", Some("snappy"));
    p.feed(br#"{"model":"gpt"}"#);
    assert_eq!(
        p.finish(),
        RequestFacts {
            stopped: Some(ParseStop::UnsupportedEncoding),
            ..RequestFacts::default()
        }
    );
    let mut p = RequestParser::new(ApiShape::OpenAiChat, "/v1/chat/completions", None);
    p.feed(b"\x00\xff{{{]]]");
    assert_eq!(p.finish().model, None);
    let facts = parse_request(
        ApiShape::GeminiGenerate,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        br#"{"generationConfig":{"maxOutputTokens":77}}"#,
    );
    assert_eq!(facts.model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(facts.stream, Some(true));
    assert_eq!(facts.max_tokens, Some(77));
}
