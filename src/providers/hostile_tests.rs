//! Hostile numbers from an upstream or a client, for every provider parser: no panic (debug
//! builds check overflow), no negative or made-up count.

use super::*;

const MAX: i64 = i64::MAX;

/// A raw JSON value and the count it must give (`None`: unknown).
const VALUES: &[(&str, Option<i64>)] = &[
    ("9223372036854775807", Some(MAX)),
    ("-5", None),
    ("-9223372036854775808", None),
    ("1e300", None),
    ("-1e300", None),
    ("1e400", None),
    ("18446744073709551615", None),
    ("99999999999999999999999", None),
    ("9007199254740993.0", None),
    ("2.5", None),
    ("2e3", Some(2000)),
    ("\"123\"", Some(123)),
    ("\" 42 \"", Some(42)),
    ("\"-7\"", None),
    ("\"9223372036854775808\"", None),
    ("\"1e3\"", None),
    ("null", None),
    ("true", None),
    ("{}", None),
    ("[1]", None),
];

fn response(shape: ApiShape, content_type: &str, body: &str) -> ResponseFacts {
    let mut p = ResponseParser::new(shape, Some(content_type), None, 200);
    p.feed(body.as_bytes());
    p.finish(true)
}

/// The usage a body with every usage field set to `v` gives, or None when the parser rejected
/// the whole usage object (a number serde_json cannot hold, like `1e400`).
fn usage_of(facts: &ResponseFacts) -> [Option<i64>; 5] {
    let u = &facts.usage;
    [
        u.input_tokens,
        u.output_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
        u.reasoning_output_tokens,
    ]
}

#[test]
fn anthropic_counts_saturate_and_refuse_negatives() {
    for (v, want) in VALUES {
        let json = format!(
            r#"{{"id":"m","model":"claude","stop_reason":"end_turn","usage":{{"input_tokens":{v},"output_tokens":{v},"cache_read_input_tokens":{v},"cache_creation_input_tokens":{v}}}}}"#
        );
        let facts = response(ApiShape::AnthropicMessages, "application/json", &json);
        // input = input + cache_read + cache_creation: i64::MAX three times saturates.
        let input = want.map(|n| n.saturating_mul(3));
        assert_eq!(usage_of(&facts), [input, *want, *want, *want, None], "{v}");
        assert_eq!(facts.model.as_deref(), Some("claude"), "{v}");
        let sse = format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"m\",\"model\":\"claude\",\"usage\":{{\"input_tokens\":1,\"cache_read_input_tokens\":{v},\"output_tokens\":1}}}}}}\n\n\
             event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":{v},\"cache_creation_input_tokens\":{v}}}}}\n\n\
             event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        );
        let facts = response(ApiShape::AnthropicMessages, "text/event-stream", &sse);
        // Refused counts replace nothing: the earlier event's stay. A number serde_json cannot
        // hold (`1e400`) drops the whole usage object it is in.
        let (input, output) = match *v {
            "1e400" => (None, None),
            _ => (
                Some(want.unwrap_or(0).saturating_mul(2).saturating_add(1)),
                want.or(Some(1)),
            ),
        };
        assert_eq!(usage_of(&facts)[..2], [input, output], "{v}");
        assert!(usage_of(&facts).iter().flatten().all(|n| *n >= 0), "{v}");
    }
}

#[test]
fn openai_chat_and_responses_counts_are_taken_or_refused() {
    for (v, want) in VALUES {
        let chat = format!(
            r#"{{"id":"c","model":"gpt","choices":[{{"index":{v},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{v},"completion_tokens":{v},"prompt_tokens_details":{{"cached_tokens":{v}}},"completion_tokens_details":{{"reasoning_tokens":{v}}}}}}}"#
        );
        let facts = response(ApiShape::OpenAiChat, "application/json", &chat);
        assert_eq!(
            usage_of(&facts),
            [*want, *want, *want, None, *want],
            "chat {v}"
        );
        assert_eq!(facts.finish_reasons, vec!["stop".to_string()], "chat {v}");
        let stream = format!(
            "data: {{\"id\":\"c\",\"model\":\"gpt\",\"choices\":[{{\"index\":{v},\"delta\":{{}},\"finish_reason\":\"length\"}}]}}\n\n\
             data: {{\"id\":\"c\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{v},\"completion_tokens\":{v}}}}}\n\ndata: [DONE]\n\n"
        );
        let facts = response(ApiShape::OpenAiChat, "text/event-stream", &stream);
        assert_eq!(usage_of(&facts)[..2], [*want, *want], "chat stream {v}");
        let resp = format!(
            r#"{{"id":"r","object":"response","model":"gpt-5","status":"completed","usage":{{"input_tokens":{v},"output_tokens":{v},"input_tokens_details":{{"cached_tokens":{v}}},"output_tokens_details":{{"reasoning_tokens":{v}}}}}}}"#
        );
        let facts = response(ApiShape::OpenAiResponses, "application/json", &resp);
        assert_eq!(
            usage_of(&facts),
            [*want, *want, *want, None, *want],
            "responses {v}"
        );
    }
}

#[test]
fn gemini_counts_are_taken_or_refused() {
    for (v, want) in VALUES {
        let body = format!(
            r#"{{"candidates":[{{"index":{v},"finishReason":"STOP"}}],"usageMetadata":{{"promptTokenCount":{v},"candidatesTokenCount":{v},"cachedContentTokenCount":{v},"thoughtsTokenCount":{v}}},"modelVersion":"gemini-2.5-pro"}}"#
        );
        let facts = response(ApiShape::GeminiGenerate, "application/json", &body);
        assert_eq!(usage_of(&facts), [*want, *want, *want, None, *want], "{v}");
        assert_eq!(facts.finish_reasons, vec!["STOP".to_string()], "{v}");
        let array = format!("[{body},{body}]");
        let facts = response(ApiShape::GeminiGenerate, "application/json", &array);
        assert_eq!(usage_of(&facts)[..2], [*want, *want], "array {v}");
    }
}

#[test]
fn request_limits_are_taken_or_refused() {
    for (v, want) in VALUES {
        let cases = [
            (
                ApiShape::AnthropicMessages,
                "/v1/messages",
                format!(r#"{{"model":"m","max_tokens":{v}}}"#),
            ),
            (
                ApiShape::OpenAiChat,
                "/v1/chat/completions",
                format!(r#"{{"model":"m","max_completion_tokens":{v}}}"#),
            ),
            (
                ApiShape::OpenAiResponses,
                "/v1/responses",
                format!(r#"{{"model":"m","max_output_tokens":{v}}}"#),
            ),
            (
                ApiShape::GeminiGenerate,
                "/v1beta/models/g:generateContent",
                format!(r#"{{"generationConfig":{{"maxOutputTokens":{v}}}}}"#),
            ),
        ];
        for (shape, path, body) in cases {
            assert_eq!(
                parse_request(shape, path, body.as_bytes()).max_tokens,
                *want,
                "{shape:?} {v}"
            );
        }
    }
}
