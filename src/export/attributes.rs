//! Attribute keys and event names written on log records: the single source of truth for names.

// OTLP `LogRecord.event_name`s.
/// One LLM call: the GenAI semantic conventions' inference event.
pub const EVENT_INFERENCE_DETAILS: &str = "gen_ai.client.inference.operation.details";
/// One connection decision (the egress audit).
pub const EVENT_EGRESS: &str = "llmtap.egress";

// OTel HTTP / network semantic conventions.
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
pub const URL_FULL: &str = "url.full";
pub const URL_PATH: &str = "url.path";
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const CLIENT_ADDRESS: &str = "client.address";
pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
pub const ERROR_TYPE: &str = "error.type";
pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
/// The IP address llmtap connected to for the client (egress records).
pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
pub const NETWORK_PEER_PORT: &str = "network.peer.port";

// OTel GenAI semantic conventions.
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
pub const GEN_AI_REQUEST_STREAM: &str = "gen_ai.request.stream";
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
pub const GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: &str =
    "gen_ai.usage.cache_creation.input_tokens";
pub const GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";

// llmtap's own, all under `llmtap.`.
/// Whole exchange, seconds (double).
pub const LLMTAP_DURATION: &str = "llmtap.duration";
/// Request start to response head, seconds (double).
pub const LLMTAP_TIME_TO_FIRST_BYTE: &str = "llmtap.time_to_first_byte";
/// True number of request body bytes forwarded.
pub const LLMTAP_REQUEST_BODY_SIZE: &str = "llmtap.request.body.size";
/// True number of response body bytes forwarded.
pub const LLMTAP_RESPONSE_BODY_SIZE: &str = "llmtap.response.body.size";
/// The logged request body is shorter than the forwarded one.
pub const LLMTAP_REQUEST_BODY_TRUNCATED: &str = "llmtap.request.body.truncated";
/// The logged response body is shorter than the forwarded one.
pub const LLMTAP_RESPONSE_BODY_TRUNCATED: &str = "llmtap.response.body.truncated";
/// `complete`, `client_aborted` or `upstream_error`.
pub const LLMTAP_OUTCOME: &str = "llmtap.outcome";
/// `response`, `stream`, `absent` or `stream_cut_short`.
pub const LLMTAP_USAGE_SOURCE: &str = "llmtap.usage.source";
/// Provider error message from an error JSON body.
pub const LLMTAP_ERROR_MESSAGE: &str = "llmtap.error.message";
/// The record's bodies were trimmed further to fit `--max-record-bytes`.
pub const LLMTAP_RECORD_TRIMMED: &str = "llmtap.record.trimmed";
/// Redacted request headers, as a JSON object string.
pub const LLMTAP_REQUEST_HEADERS: &str = "llmtap.request.headers";
/// Redacted response headers, as a JSON object string.
pub const LLMTAP_RESPONSE_HEADERS: &str = "llmtap.response.headers";
/// Process-unique exchange id.
pub const LLMTAP_EXCHANGE_ID: &str = "llmtap.exchange.id";
/// Why the request body's parser stopped early (`ratio_limit`, `corrupt_encoding`,
/// `unsupported_encoding`, `memory_limit`); absent when it read the whole body.
pub const LLMTAP_REQUEST_BODY_PARSE_STOPPED: &str = "llmtap.request.body.parse_stopped";
/// The `[[client]]` the connection was identified as (call and egress records).
pub const LLMTAP_CLIENT_NAME: &str = "llmtap.client.name";
/// That client's policy profile.
pub const LLMTAP_CLIENT_PROFILE: &str = "llmtap.client.profile";
/// `true` when llmtap swapped the request's sentinel for the real key (absent otherwise).
pub const LLMTAP_KEY_INJECTED: &str = "llmtap.key.injected";
/// `true` when the request carried what looks like a real provider key where a sentinel
/// belongs (absent otherwise); such records are WARN.
pub const LLMTAP_KEY_FOREIGN: &str = "llmtap.key.foreign";
/// USD the call's usage costs by `prices.toml` (double); absent when the model has no price.
pub const LLMTAP_COST_USD: &str = "llmtap.cost.usd";
/// `true` when the usage was estimated from the bytes (the response carried none).
pub const LLMTAP_USAGE_ESTIMATED: &str = "llmtap.usage.estimated";
/// The limit that refused the call (`requests_per_minute`, `concurrent_calls`,
/// `input_tokens_per_hour`, `output_tokens_per_hour`, `cost_usd_per_day`).
pub const LLMTAP_LIMIT: &str = "llmtap.limit";
/// `allow`, `deny` or `would_deny` (report mode); present on every egress record.
pub const LLMTAP_EGRESS_DECISION: &str = "llmtap.egress.decision";
/// The rule that allowed the connection, or why it was (or would be) refused.
pub const LLMTAP_EGRESS_REASON: &str = "llmtap.egress.reason";
/// `tunnel`, `intercept`, `http` or `reverse` (a base-URL route).
pub const LLMTAP_EGRESS_ROUTE: &str = "llmtap.egress.route";
/// Bytes the client sent through the connection.
pub const LLMTAP_EGRESS_BYTES_SENT: &str = "llmtap.egress.bytes_sent";
/// Bytes the client received through the connection.
pub const LLMTAP_EGRESS_BYTES_RECEIVED: &str = "llmtap.egress.bytes_received";

/// Every attribute key llmtap may emit, for tests that check dashboards and docs against it.
pub const ALL: &[&str] = &[
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    URL_FULL,
    URL_PATH,
    SERVER_ADDRESS,
    SERVER_PORT,
    CLIENT_ADDRESS,
    USER_AGENT_ORIGINAL,
    ERROR_TYPE,
    NETWORK_PROTOCOL_VERSION,
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_OPERATION_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_REQUEST_STREAM,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
    LLMTAP_DURATION,
    LLMTAP_TIME_TO_FIRST_BYTE,
    LLMTAP_REQUEST_BODY_SIZE,
    LLMTAP_RESPONSE_BODY_SIZE,
    LLMTAP_REQUEST_BODY_TRUNCATED,
    LLMTAP_RESPONSE_BODY_TRUNCATED,
    LLMTAP_OUTCOME,
    LLMTAP_USAGE_SOURCE,
    LLMTAP_ERROR_MESSAGE,
    LLMTAP_RECORD_TRIMMED,
    LLMTAP_REQUEST_HEADERS,
    LLMTAP_RESPONSE_HEADERS,
    LLMTAP_EXCHANGE_ID,
    LLMTAP_REQUEST_BODY_PARSE_STOPPED,
    LLMTAP_CLIENT_NAME,
    LLMTAP_CLIENT_PROFILE,
    LLMTAP_KEY_INJECTED,
    LLMTAP_KEY_FOREIGN,
    LLMTAP_COST_USD,
    LLMTAP_USAGE_ESTIMATED,
    LLMTAP_LIMIT,
    LLMTAP_EGRESS_DECISION,
    LLMTAP_EGRESS_REASON,
    LLMTAP_EGRESS_ROUTE,
    LLMTAP_EGRESS_BYTES_SENT,
    LLMTAP_EGRESS_BYTES_RECEIVED,
];

/// Every `event_name` llmtap may emit.
pub const EVENTS: &[&str] = &[EVENT_INFERENCE_DETAILS, EVENT_EGRESS];

/// The name Loki gives an attribute in structured metadata (dots become underscores).
pub fn loki_name(key: &str) -> String {
    key.replace('.', "_")
}
