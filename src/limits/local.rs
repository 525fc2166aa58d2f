//! This process's own window counters: the only ones without `--limits-store`, the fallback
//! when the store cannot answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{Charge, Counter, Counts, Window};

/// (client, counter) → (window index, value). Bounded by the policy's clients × 4.
type Values = HashMap<(Arc<str>, Counter), (u64, u64)>;

#[derive(Debug, Default)]
pub struct LocalCounters {
    values: Mutex<Values>,
}

impl LocalCounters {
    /// Counts one request and reads the budgets.
    pub fn admit(&self, client: &Arc<str>, now: SystemTime) -> Counts {
        let mut values = self.lock();
        let requests = add(&mut values, client, Counter::Requests, 1, now);
        let mut read = |counter| add(&mut values, client, counter, 0, now);
        Counts {
            requests,
            input_tokens: read(Counter::InputTokens),
            output_tokens: read(Counter::OutputTokens),
            cost_micro_usd: read(Counter::CostMicroUsd),
        }
    }

    pub fn charge(&self, client: &Arc<str>, charge: Charge, now: SystemTime) {
        let mut values = self.lock();
        add(
            &mut values,
            client,
            Counter::InputTokens,
            charge.input_tokens,
            now,
        );
        add(
            &mut values,
            client,
            Counter::OutputTokens,
            charge.output_tokens,
            now,
        );
        add(
            &mut values,
            client,
            Counter::CostMicroUsd,
            charge.cost_micro_usd,
            now,
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Values> {
        match self.values.lock() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Adds `n` to the counter's current window (a new window starts at 0); the new value.
fn add(values: &mut Values, client: &Arc<str>, counter: Counter, n: u64, now: SystemTime) -> u64 {
    let window = Window::of(counter, now).index;
    let entry = values
        .entry((Arc::clone(client), counter))
        .or_insert((window, 0));
    if entry.0 != window {
        *entry = (window, 0);
    }
    entry.1 = entry.1.saturating_add(n);
    entry.1
}
