//! Prometheus metrics for `GET /metrics`: calls, tokens, cost, limit refusals, egress decisions,
//! timings and the export counters, with every label value bounded in number and length.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::capture::Exchange;
use crate::providers::Usage;

/// Where the metrics are served on llmtap's own port (origin-form, like `/healthz`).
pub const METRICS_PATH: &str = "/metrics";
/// The Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Distinct `model` values kept across the process; later new ones are counted as `other`.
pub const MAX_MODELS: usize = 200;
/// Distinct `client` values kept (names come from the policy, but a bound costs nothing).
pub const MAX_CLIENTS: usize = 1000;
/// Distinct `provider` values kept.
pub const MAX_PROVIDERS: usize = 100;
/// Distinct values of llmtap's own names (`limit`, `decision`): a guard, not a real limit.
const MAX_NAMES: usize = 50;
/// Longest label value in bytes; a longer one is cut at a character boundary.
pub const MAX_LABEL_BYTES: usize = 128;
/// The value that stands for every new value past a label's bound.
pub const OTHER: &str = "other";
/// The value for a label the call did not say (no client name, no model, ...).
pub const UNKNOWN: &str = "unknown";

/// Upper bounds (seconds) of the duration and time-to-first-chunk buckets: LLM calls take
/// from tens of milliseconds (a refusal, a cached answer) to minutes (long generations).
pub const TIME_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 300.0,
];

/// One call's token count above this is counted as this, so a hostile upstream cannot wrap
/// a counter (2^40 tokens is far beyond any real call).
const MAX_TOKENS_PER_CALL: u64 = 1 << 40;
/// Likewise for one call's cost in USD.
const MAX_COST_PER_CALL: f64 = 1e6;

type Value = Arc<str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    client: Value,
    provider: Value,
    model: Value,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    client: Value,
    model: Value,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabel {
    client: Value,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: Value,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    client: Value,
    limit: Value,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    client: Value,
    decision: Value,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

type Timings = Family<ProviderLabel, Histogram, fn() -> Histogram>;

fn time_histogram() -> Histogram {
    Histogram::new(TIME_BUCKETS)
}

/// Every metric llmtap keeps, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ClientLabel, Counter<f64, AtomicU64>>,
    duration: Timings,
    first_chunk: Timings,
    limit_refusals: Family<LimitLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    store_errors: Counter,
    clients: Bounded,
    providers: Bounded,
    models: Bounded,
    names: Bounded,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Registry::default(),
            calls: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            duration: Family::new_with_constructor(time_histogram),
            first_chunk: Family::new_with_constructor(time_histogram),
            limit_refusals: Family::default(),
            decisions: Family::default(),
            store_errors: Counter::default(),
            clients: Bounded::new(MAX_CLIENTS),
            providers: Bounded::new(MAX_PROVIDERS),
            models: Bounded::new(MAX_MODELS),
            names: Bounded::new(MAX_NAMES),
        };
        metrics.registered()
    }

    /// The registry with every family in it (the families are shared handles).
    fn registered(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "llmtap_calls",
            "Intercepted LLM calls by client, provider, model and status class",
            self.calls.clone(),
        );
        r.register(
            "llmtap_tokens",
            "Tokens by client, model and kind (input, output, cache_read, cache_creation, reasoning)",
            self.tokens.clone(),
        );
        r.register(
            "llmtap_cost_usd",
            "Cost of the calls in USD by client, from the price table",
            self.cost.clone(),
        );
        r.register(
            "llmtap_call_duration_seconds",
            "Time from the request to the end of the exchange, by provider",
            self.duration.clone(),
        );
        r.register(
            "llmtap_time_to_first_chunk_seconds",
            "Time from the request to the first response body data, by provider",
            self.first_chunk.clone(),
        );
        r.register(
            "llmtap_limit_refusals",
            "Calls refused by a limit, by client and limit",
            self.limit_refusals.clone(),
        );
        r.register(
            "llmtap_egress_decisions",
            "Egress decisions by client and decision (allow, deny, would_deny)",
            self.decisions.clone(),
        );
        r.register(
            "llmtap_limits_store_errors",
            "Times the shared limits store (Redis) could not be reached or answered wrongly",
            self.store_errors.clone(),
        );
        self
    }

    /// One finished call record: its count, tokens, cost and timings.
    pub fn observe_call(&self, exchange: &Exchange) {
        let client = self.clients.admit(exchange.client_name.as_deref());
        let provider = self.providers.admit(exchange.provider.as_deref());
        let model = self.models.admit(call_model(exchange));
        if let Some(facts) = &exchange.response_facts {
            self.count_tokens(&client, &model, &facts.usage);
        }
        if let Some(cost) = exchange.cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
            let labels = ClientLabel {
                client: Arc::clone(&client),
            };
            self.cost
                .get_or_create(&labels)
                .inc_by(cost.min(MAX_COST_PER_CALL));
        }
        let by_provider = ProviderLabel {
            provider: Arc::clone(&provider),
        };
        self.duration
            .get_or_create(&by_provider)
            .observe(exchange.duration.as_secs_f64());
        if let Some(first) = exchange.time_to_first_chunk {
            self.first_chunk
                .get_or_create(&by_provider)
                .observe(first.as_secs_f64());
        }
        let labels = CallLabels {
            client,
            provider,
            model,
            status_class: status_class(exchange.status),
        };
        self.calls.get_or_create(&labels).inc();
    }

    /// The known, non-negative token counts of one call.
    fn count_tokens(&self, client: &Value, model: &Value, usage: &Usage) {
        let kinds = [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_creation", usage.cache_creation_input_tokens),
            ("reasoning", usage.reasoning_output_tokens),
        ];
        for (kind, count) in kinds {
            let Some(count) = count.and_then(|n| u64::try_from(n).ok()) else {
                continue;
            };
            let labels = TokenLabels {
                client: Arc::clone(client),
                model: Arc::clone(model),
                kind,
            };
            self.tokens
                .get_or_create(&labels)
                .inc_by(count.min(MAX_TOKENS_PER_CALL));
        }
    }

    /// A call refused by `limit` (`requests_per_minute`, ...).
    pub fn observe_limit_refusal(&self, client: &str, limit: &str) {
        let labels = LimitLabels {
            client: self.clients.admit(Some(client)),
            limit: self.names.admit(Some(limit)),
        };
        self.limit_refusals.get_or_create(&labels).inc();
    }

    /// One egress decision (`allow`, `deny`, `would_deny`); `None`: the client is unknown.
    pub fn observe_decision(&self, client: Option<&str>, decision: &str) {
        let labels = DecisionLabels {
            client: self.clients.admit(client),
            decision: self.names.admit(Some(decision)),
        };
        self.decisions.get_or_create(&labels).inc();
    }

    /// The limits store could not be reached (or answered nonsense).
    pub fn count_limits_store_error(&self) {
        self.store_errors.inc();
    }

    /// Limits store errors so far, for `/healthz`.
    pub fn limits_store_errors(&self) -> u64 {
        self.store_errors.get()
    }

    /// The exposition: every metric, then the export counters read from `export` (the
    /// sink's `stats()`; `null` adds none).
    pub fn render(&self, export: &serde_json::Value) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let encoded = prometheus_text::encode(&mut out, &self.registry)
            .and_then(|()| prometheus_text::encode(&mut out, &export_registry(export)));
        if let Err(e) = encoded {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

/// The model a call is counted under: what the response says, else what the request asked.
fn call_model(exchange: &Exchange) -> Option<&str> {
    let from_response = exchange
        .response_facts
        .as_ref()
        .and_then(|f| f.model.as_deref());
    let from_request = exchange
        .request_facts
        .as_ref()
        .and_then(|f| f.model.as_deref());
    from_response
        .filter(|m| !m.is_empty())
        .or(from_request)
        .filter(|m| !m.is_empty())
}

/// `2xx`, `4xx`, ... of a response status; `error` when no response came.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        None => "error",
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => OTHER,
    }
}

/// A fresh registry holding the export counters as they are now (read at each scrape).
fn export_registry(stats: &serde_json::Value) -> Registry {
    let mut r = Registry::default();
    let Some(stats) = stats.as_object() else {
        return r;
    };
    let number = |key: &str| stats.get(key).and_then(serde_json::Value::as_u64);
    let gauges = [
        (
            "llmtap_export_queue_length",
            "queue_len",
            "Records waiting in the export queue",
        ),
        (
            "llmtap_export_queue_capacity",
            "queue_capacity",
            "Records the export queue holds",
        ),
        (
            "llmtap_export_spool_pending",
            "spool_pending",
            "Records in the spool not yet delivered",
        ),
    ];
    for (name, key, help) in gauges {
        if let Some(n) = number(key) {
            let gauge = Gauge::<i64>::default();
            gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
            r.register(name, help, gauge);
        }
    }
    let counters = [
        (
            "llmtap_export_records_submitted",
            "submitted",
            "Records handed to the exporter",
        ),
        (
            "llmtap_export_records_exported",
            "exported",
            "Records the destination accepted",
        ),
    ];
    for (name, key, help) in counters {
        if let Some(n) = number(key) {
            let counter = Counter::<u64>::default();
            counter.inc_by(n);
            r.register(name, help, counter);
        }
    }
    let dropped = Family::<ReasonLabel, Counter>::default();
    let mut any_dropped = false;
    for (key, value) in stats {
        if let (Some(reason), Some(n)) = (key.strip_prefix("dropped_"), value.as_u64()) {
            let labels = ReasonLabel {
                reason: reason.to_string(),
            };
            dropped.get_or_create(&labels).inc_by(n);
            any_dropped = true;
        }
    }
    if any_dropped {
        r.register(
            "llmtap_export_records_dropped",
            "Records dropped by reason (queue_full, export_failed, shutdown, spool_full, ...)",
            dropped,
        );
    }
    r
}

/// The values one label may take: the first `max` distinct ones seen, then `other`.
#[derive(Debug)]
struct Bounded {
    max: usize,
    seen: Mutex<HashSet<Value>>,
    other: Value,
    unknown: Value,
}

impl Bounded {
    fn new(max: usize) -> Bounded {
        Bounded {
            max,
            seen: Mutex::new(HashSet::new()),
            other: Arc::from(OTHER),
            unknown: Arc::from(UNKNOWN),
        }
    }

    /// The label value for `raw`: cleaned, and `other` once `max` distinct values were seen.
    fn admit(&self, raw: Option<&str>) -> Value {
        let Some(clean) = raw.map(clean_label).filter(|v| !v.is_empty()) else {
            return Arc::clone(&self.unknown);
        };
        match clean.as_ref() {
            UNKNOWN => return Arc::clone(&self.unknown),
            OTHER => return Arc::clone(&self.other),
            _ => {}
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = seen.get(clean.as_ref()) {
            return Arc::clone(known);
        }
        if seen.len() >= self.max {
            return Arc::clone(&self.other);
        }
        let value: Value = Arc::from(clean.as_ref());
        seen.insert(Arc::clone(&value));
        value
    }
}

/// At most `MAX_LABEL_BYTES` bytes (cut at a character boundary), control characters as `_`.
/// Quotes and backslashes stay: the encoder escapes them.
fn clean_label(raw: &str) -> Cow<'_, str> {
    let mut end = raw.len().min(MAX_LABEL_BYTES);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &raw[..end];
    if cut.chars().any(char::is_control) {
        Cow::Owned(
            cut.chars()
                .map(|c| if c.is_control() { '_' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CapturedBody;
    use crate::providers::{RequestFacts, ResponseFacts, UsageSource};
    use std::time::{Duration, SystemTime};

    fn exchange(client: Option<&str>, model: Option<&str>, status: Option<u16>) -> Exchange {
        let facts = ResponseFacts {
            model: model.map(str::to_string),
            id: None,
            finish_reasons: Vec::new(),
            usage: Usage {
                input_tokens: Some(120),
                output_tokens: Some(30),
                cache_read_input_tokens: Some(100),
                cache_creation_input_tokens: None,
                reasoning_output_tokens: Some(-5),
            },
            usage_source: UsageSource::Response,
            error_type: None,
            error_message: None,
            is_stream: false,
        };
        let mut exchange = Exchange::sample();
        exchange.started_at = SystemTime::UNIX_EPOCH;
        exchange.client_addr = "127.0.0.1:5555".parse().unwrap();
        exchange.request_headers = vec![("x-api-key".into(), "sk-ant-secret".into())];
        exchange.response_headers = Vec::new();
        exchange.status = status;
        exchange.request_body = CapturedBody::default();
        exchange.response_body = CapturedBody::default();
        exchange.time_to_first_byte = Some(Duration::from_millis(60));
        exchange.time_to_first_chunk = Some(Duration::from_millis(70));
        exchange.duration = Duration::from_millis(1500);
        exchange.response_facts = Some(facts);
        exchange.client_name = client.map(str::to_string);
        exchange.cost_usd = Some(0.25);
        exchange
    }

    /// The sample lines (not comments) of an exposition.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn a_call_counts_calls_tokens_cost_and_timings() {
        let m = Metrics::new();
        let ex = exchange(Some("sandbox"), Some("claude-sonnet-4-5"), Some(200));
        m.observe_call(&ex);
        m.observe_call(&ex);
        let text = m.render(&serde_json::Value::Null);
        let labels = r#"client="sandbox",provider="anthropic",model="claude-sonnet-4-5""#;
        assert!(
            has(
                &text,
                &format!(r#"llmtap_calls_total{{{labels},status_class="2xx"}} 2"#)
            ),
            "{text}"
        );
        let tokens = r#"llmtap_tokens_total{client="sandbox",model="claude-sonnet-4-5""#;
        for (kind, n) in [("input", 240), ("output", 60), ("cache_read", 200)] {
            assert!(
                has(&text, &format!(r#"{tokens},kind="{kind}"}} {n}"#)),
                "{kind}: {text}"
            );
        }
        // Unknown (None) and negative counts are not counts.
        assert!(!text.contains(r#"kind="cache_creation""#), "{text}");
        assert!(!text.contains(r#"kind="reasoning""#), "{text}");
        assert!(
            has(&text, r#"llmtap_cost_usd_total{client="sandbox"} 0.5"#),
            "{text}"
        );
        assert!(has(
            &text,
            r#"llmtap_call_duration_seconds_count{provider="anthropic"} 2"#
        ));
        assert!(has(
            &text,
            r#"llmtap_call_duration_seconds_sum{provider="anthropic"} 3.0"#
        ));
        assert!(has(
            &text,
            r#"llmtap_time_to_first_chunk_seconds_count{provider="anthropic"} 2"#
        ));
        assert!(text.contains("# TYPE llmtap_calls_total counter"), "{text}");
        assert!(text.contains("# TYPE llmtap_call_duration_seconds histogram"));
        assert!(!text.contains("sk-ant-secret"));
    }

    #[test]
    fn missing_labels_are_unknown_and_the_request_model_stands_in() {
        let m = Metrics::new();
        let mut ex = exchange(None, None, None);
        ex.provider = None;
        ex.time_to_first_chunk = None;
        m.observe_call(&ex);
        ex.request_facts = Some(RequestFacts {
            model: Some("gpt-4o".into()),
            ..Default::default()
        });
        m.observe_call(&ex);
        let text = m.render(&serde_json::Value::Null);
        let base = r#"llmtap_calls_total{client="unknown",provider="unknown""#;
        assert!(has(
            &text,
            &format!(r#"{base},model="unknown",status_class="error"}} 1"#)
        ));
        assert!(has(
            &text,
            &format!(r#"{base},model="gpt-4o",status_class="error"}} 1"#)
        ));
        assert!(
            !text.contains("llmtap_time_to_first_chunk_seconds_count"),
            "{text}"
        );
    }

    #[test]
    fn status_classes() {
        let table = [
            (None, "error"),
            (Some(101), "1xx"),
            (Some(200), "2xx"),
            (Some(299), "2xx"),
            (Some(304), "3xx"),
            (Some(429), "4xx"),
            (Some(503), "5xx"),
            (Some(99), "other"),
            (Some(600), "other"),
        ];
        for (status, want) in table {
            assert_eq!(status_class(status), want, "{status:?}");
        }
    }

    #[test]
    fn models_past_the_bound_are_other() {
        let m = Metrics::new();
        for i in 0..MAX_MODELS + 50 {
            let ex = exchange(Some("c"), Some(&format!("model-{i}")), Some(200));
            m.observe_call(&ex);
        }
        // A model seen before the bound keeps its own value.
        m.observe_call(&exchange(Some("c"), Some("model-0"), Some(200)));
        let text = m.render(&serde_json::Value::Null);
        let calls: Vec<&str> = samples(&text)
            .into_iter()
            .filter(|l| l.starts_with("llmtap_calls_total"))
            .collect();
        assert_eq!(calls.len(), MAX_MODELS + 1, "{calls:?}");
        assert!(
            calls
                .iter()
                .any(|l| l.contains(r#"model="other""#) && l.ends_with(" 50"))
        );
        assert!(
            calls
                .iter()
                .any(|l| l.contains(r#"model="model-0""#) && l.ends_with(" 2"))
        );
        assert!(!text.contains(&format!("model-{MAX_MODELS}\"")));
    }

    #[test]
    fn clients_and_providers_are_bounded_too() {
        let clients = Bounded::new(MAX_CLIENTS);
        let providers = Bounded::new(MAX_PROVIDERS);
        for i in 0..MAX_CLIENTS {
            assert_eq!(&*clients.admit(Some(&format!("c{i}"))), format!("c{i}"));
        }
        assert_eq!(&*clients.admit(Some("one-more")), OTHER);
        for i in 0..MAX_PROVIDERS {
            providers.admit(Some(&format!("p{i}")));
        }
        assert_eq!(&*providers.admit(Some("one-more")), OTHER);
        assert_eq!(&*providers.admit(Some("p3")), "p3");
        // The stand-in values never take a place.
        let b = Bounded::new(1);
        assert_eq!(&*b.admit(None), UNKNOWN);
        assert_eq!(&*b.admit(Some("")), UNKNOWN);
        assert_eq!(&*b.admit(Some(OTHER)), OTHER);
        assert_eq!(&*b.admit(Some("first")), "first");
        assert_eq!(&*b.admit(Some("second")), OTHER);
    }

    #[test]
    fn label_values_are_cut_and_cleaned() {
        let long = "é".repeat(100); // 200 bytes
        let cut = clean_label(&long);
        assert!(cut.len() <= MAX_LABEL_BYTES && cut.len() >= MAX_LABEL_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(clean_label("a\r\nb\0\u{7f}c\td"), "a__b__c_d");
        assert!(matches!(clean_label("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn hostile_label_values_cannot_break_the_format() {
        let m = Metrics::new();
        let model = "evil\"} 1\nllmtap_calls_total{x=\"y\\";
        m.observe_call(&exchange(Some("a\"b\\c"), Some(model), Some(200)));
        m.observe_decision(Some("x\ny"), "deny");
        let text = m.render(&serde_json::Value::Null);
        let line = samples(&text)
            .into_iter()
            .find(|l| l.starts_with("llmtap_calls_total"))
            .unwrap();
        assert_eq!(
            line,
            r#"llmtap_calls_total{client="a\"b\\c",provider="anthropic",model="evil\"} 1_llmtap_calls_total{x=\"y\\",status_class="2xx"} 1"#
        );
        assert!(has(
            &text,
            r#"llmtap_egress_decisions_total{client="x_y",decision="deny"} 1"#
        ));
        // Every sample line has one name, one label set and one value.
        for line in samples(&text) {
            assert!(
                line.split(' ').next_back().unwrap().parse::<f64>().is_ok(),
                "{line}"
            );
        }
    }

    #[test]
    fn the_encoder_escapes_what_reaches_it() {
        let family = Family::<ClientLabel, Counter>::default();
        let mut registry = Registry::default();
        registry.register("t", "t", family.clone());
        let labels = ClientLabel {
            client: Arc::from("q\"b\\n\nx"),
        };
        family.get_or_create(&labels).inc();
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).unwrap();
        assert!(has(&out, r#"t_total{client="q\"b\\n\nx"} 1"#), "{out}");
    }

    #[test]
    fn duration_buckets_span_fifty_milliseconds_to_five_minutes() {
        assert_eq!(TIME_BUCKETS.first(), Some(&0.05));
        assert_eq!(TIME_BUCKETS.last(), Some(&300.0));
        assert!(TIME_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        let m = Metrics::new();
        let mut ex = exchange(Some("c"), Some("m"), Some(200));
        for secs in [0.07, 0.2, 45.0, 400.0] {
            ex.duration = Duration::from_secs_f64(secs);
            m.observe_call(&ex);
        }
        let text = m.render(&serde_json::Value::Null);
        let bucket = |le: &str, n: u64| {
            format!(r#"llmtap_call_duration_seconds_bucket{{provider="anthropic",le="{le}"}} {n}"#)
        };
        for (le, n) in [
            ("0.05", 0),
            ("0.1", 1),
            ("0.25", 2),
            ("30", 2),
            ("60", 3),
            ("300", 3),
            ("+Inf", 4),
        ] {
            assert!(has(&text, &bucket(le, n)), "le={le}: {text}");
        }
    }

    #[test]
    fn cost_is_a_float_counter_of_known_costs() {
        let m = Metrics::new();
        let mut ex = exchange(Some("c"), Some("m"), Some(200));
        ex.cost_usd = Some(0.125);
        m.observe_call(&ex);
        for bad in [None, Some(-1.0), Some(f64::NAN), Some(f64::INFINITY)] {
            ex.cost_usd = bad;
            m.observe_call(&ex);
        }
        let text = m.render(&serde_json::Value::Null);
        assert!(
            has(&text, r#"llmtap_cost_usd_total{client="c"} 0.125"#),
            "{text}"
        );
    }

    #[test]
    fn hostile_token_counts_cannot_wrap_a_counter() {
        let m = Metrics::new();
        let mut ex = exchange(Some("c"), Some("m"), Some(200));
        if let Some(f) = ex.response_facts.as_mut() {
            f.usage.input_tokens = Some(i64::MAX);
        }
        for _ in 0..3 {
            m.observe_call(&ex);
        }
        let text = m.render(&serde_json::Value::Null);
        let want = 3 * MAX_TOKENS_PER_CALL;
        assert!(has(
            &text,
            &format!(r#"llmtap_tokens_total{{client="c",model="m",kind="input"}} {want}"#)
        ));
    }

    #[test]
    fn refusals_decisions_and_store_errors() {
        let m = Metrics::new();
        m.observe_limit_refusal("sandbox", "requests_per_minute");
        m.observe_limit_refusal("sandbox", "requests_per_minute");
        m.observe_decision(Some("sandbox"), "allow");
        m.observe_decision(None, "deny");
        m.observe_decision(Some("sandbox"), "would_deny");
        m.count_limits_store_error();
        assert_eq!(m.limits_store_errors(), 1);
        let text = m.render(&serde_json::Value::Null);
        for line in [
            r#"llmtap_limit_refusals_total{client="sandbox",limit="requests_per_minute"} 2"#,
            r#"llmtap_egress_decisions_total{client="sandbox",decision="allow"} 1"#,
            r#"llmtap_egress_decisions_total{client="unknown",decision="deny"} 1"#,
            r#"llmtap_egress_decisions_total{client="sandbox",decision="would_deny"} 1"#,
            "llmtap_limits_store_errors_total 1",
        ] {
            assert!(has(&text, line), "{line}: {text}");
        }
    }

    #[test]
    fn export_counters_are_read_at_render_time() {
        let m = Metrics::new();
        assert!(!m.render(&serde_json::Value::Null).contains("llmtap_export"));
        let stats = crate::export::ExportStats {
            submitted: 10,
            exported: 7,
            dropped_queue_full: 2,
            dropped_export_failed: 1,
            queue_capacity: 4096,
            queue_len: 3,
            ..Default::default()
        };
        let text = m.render(&serde_json::to_value(stats).unwrap());
        for line in [
            "llmtap_export_queue_length 3",
            "llmtap_export_queue_capacity 4096",
            "llmtap_export_records_submitted_total 10",
            "llmtap_export_records_exported_total 7",
            r#"llmtap_export_records_dropped_total{reason="queue_full"} 2"#,
            r#"llmtap_export_records_dropped_total{reason="export_failed"} 1"#,
            r#"llmtap_export_records_dropped_total{reason="shutdown"} 0"#,
            r#"llmtap_export_records_dropped_total{reason="spool_full"} 0"#,
        ] {
            assert!(has(&text, line), "{line}: {text}");
        }
        assert!(text.contains("# TYPE llmtap_export_queue_length gauge"));
        assert!(text.contains("# TYPE llmtap_export_records_dropped_total counter"));
        // A second scrape reads the numbers again, it does not add them up.
        let again = m.render(&serde_json::to_value(stats).unwrap());
        assert!(has(&again, "llmtap_export_records_exported_total 7"));
    }
}
