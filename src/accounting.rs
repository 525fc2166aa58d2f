//! The accounting of a finished call: what its usage cost, what it charges to its client's
//! budgets (an estimate when the response carried no usage), and its metrics.

use std::sync::{Arc, RwLock};

use crate::capture::{Exchange, FinishFacts, Outcome};
use crate::limits::{Charge, Limiter};
use crate::metrics::Metrics;
use crate::prices::Prices;
use crate::providers::{Usage, UsageSource};

/// Bytes per token when a response carried no usage: about 4 for English text, and the
/// response's own framing (JSON, SSE) makes the estimate err high, never low.
const BYTES_PER_TOKEN: u64 = 4;

pub struct Accounting {
    prices: RwLock<Arc<Prices>>,
    pub limiter: Arc<Limiter>,
    pub metrics: Arc<Metrics>,
}

impl Accounting {
    pub fn new(prices: Prices, limiter: Arc<Limiter>, metrics: Arc<Metrics>) -> Accounting {
        Accounting {
            prices: RwLock::new(Arc::new(prices)),
            limiter,
            metrics,
        }
    }

    pub fn prices(&self) -> Arc<Prices> {
        match self.prices.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// A reload's prices apply to calls that finish from now on.
    pub fn replace_prices(&self, prices: Prices) {
        let prices = Arc::new(prices);
        match self.prices.write() {
            Ok(mut p) => *p = prices,
            Err(poisoned) => *poisoned.into_inner() = prices,
        }
    }

    /// Fills the record's cost (and the estimate flag), charges the client, counts metrics.
    pub fn account(&self, record: &mut Exchange, facts: FinishFacts) {
        let (usage, estimated) = match billable_usage(record) {
            Some(usage) => (usage, false),
            None if needs_estimate(record) => (estimate(record, facts), true),
            None => (Usage::default(), false),
        };
        record.usage_estimated = estimated;
        // The answer's model names the exact version billed; the request's is the fallback.
        let models = [
            record
                .response_facts
                .as_ref()
                .and_then(|f| f.model.as_deref()),
            record
                .request_facts
                .as_ref()
                .and_then(|f| f.model.as_deref()),
        ];
        if let Some(provider) = record.provider.as_deref()
            && has_counts(&usage)
        {
            let prices = self.prices();
            let cost = prices.cost_of_first(provider, models.into_iter().flatten(), &usage);
            record.cost_usd = cost;
        }
        if let Some(client) = record.client_name.as_deref() {
            let client: Arc<str> = Arc::from(client);
            let count = |n: Option<i64>| n.map_or(0, |n| u64::try_from(n).unwrap_or(0));
            self.limiter.charge(
                &client,
                Charge {
                    input_tokens: count(usage.input_tokens),
                    output_tokens: count(usage.output_tokens)
                        .saturating_add(uncounted_reasoning(record, &usage)),
                    cost_micro_usd: record.cost_usd.map_or(0, Charge::micro_usd),
                },
            );
            if let Some(limit) = record.limit {
                self.metrics.observe_limit_refusal(&client, limit);
            }
        }
        self.metrics.observe_call(record);
    }
}

/// The usage the response reported, if it reported any count.
fn billable_usage(record: &Exchange) -> Option<Usage> {
    let facts = record.response_facts.as_ref()?;
    has_counts(&facts.usage).then(|| facts.usage.clone())
}

fn has_counts(usage: &Usage) -> bool {
    usage.input_tokens.is_some() || usage.output_tokens.is_some()
}

/// Gemini's `output_tokens` leaves the thoughts out; a budget of output tokens counts them.
fn uncounted_reasoning(record: &Exchange, usage: &Usage) -> u64 {
    let gemini = record
        .provider
        .as_deref()
        .is_some_and(|p| p.starts_with("gcp."));
    match (gemini, usage.reasoning_output_tokens) {
        (true, Some(n)) => u64::try_from(n).unwrap_or(0),
        _ => 0,
    }
}

/// A call that went upstream, was answered with success, and said nothing about its usage
/// (an OpenAI stream without `include_usage`, a stream cut short): leaving usage out must be
/// no way around a budget.
fn needs_estimate(record: &Exchange) -> bool {
    if matches!(record.outcome, Outcome::Refused { .. }) {
        return false;
    }
    let Some(facts) = record.response_facts.as_ref() else {
        return false;
    };
    let success = record.status.is_some_and(|s| (200..300).contains(&s));
    success
        && matches!(
            facts.usage_source,
            UsageSource::Absent | UsageSource::StreamCutShort
        )
}

fn estimate(record: &Exchange, facts: FinishFacts) -> Usage {
    let tokens = |bytes: u64| {
        let n = bytes.div_ceil(BYTES_PER_TOKEN);
        Some(i64::try_from(n).unwrap_or(i64::MAX))
    };
    let response = facts
        .response_decoded_len
        .unwrap_or(0)
        .max(record.response_body.total_len);
    Usage {
        input_tokens: tokens(record.request_body.total_len),
        output_tokens: tokens(response),
        ..Usage::default()
    }
}
