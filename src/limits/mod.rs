//! Limits and budgets per client: requests a minute, calls at once, tokens an hour and
//! dollars a day, in fixed UTC windows, counted in memory or in Redis (shared by replicas).

pub mod answer;
mod local;
mod store;

pub use store::{LimitsStore, StoreError, StoreSpec};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use local::LocalCounters;

/// Traffic never waits on the store longer than this.
pub const STORE_DEADLINE: Duration = Duration::from_millis(50);

/// `[profile.NAME.limits]` of the policy file; a missing field is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallLimits {
    pub requests_per_minute: Option<u64>,
    pub concurrent_calls: Option<u64>,
    /// Includes cached input, as `gen_ai.usage.input_tokens` does.
    pub input_tokens_per_hour: Option<u64>,
    pub output_tokens_per_hour: Option<u64>,
    pub cost_usd_per_day: Option<f64>,
}

impl CallLimits {
    pub fn is_empty(&self) -> bool {
        *self == CallLimits::default()
    }

    /// The limits set to 0 (they refuse every call), for the start-up log.
    pub fn zeros(&self) -> Vec<&'static str> {
        let mut zeros = Vec::new();
        for kind in LimitKind::ALL {
            if self.value(kind) == Some(0.0) {
                zeros.push(kind.as_str());
            }
        }
        zeros
    }

    fn value(&self, kind: LimitKind) -> Option<f64> {
        let whole = |v: Option<u64>| v.map(|v| v as f64);
        match kind {
            LimitKind::RequestsPerMinute => whole(self.requests_per_minute),
            LimitKind::ConcurrentCalls => whole(self.concurrent_calls),
            LimitKind::InputTokensPerHour => whole(self.input_tokens_per_hour),
            LimitKind::OutputTokensPerHour => whole(self.output_tokens_per_hour),
            LimitKind::CostUsdPerDay => self.cost_usd_per_day,
        }
    }

    /// `requests_per_minute = 120, cost_usd_per_day = 25`.
    pub fn summary(&self) -> String {
        let set: Vec<String> = LimitKind::ALL
            .iter()
            .filter_map(|k| self.value(*k).map(|v| format!("{} = {v}", k.as_str())))
            .collect();
        set.join(", ")
    }
}

/// Which limit; `llmtap.limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    RequestsPerMinute,
    ConcurrentCalls,
    InputTokensPerHour,
    OutputTokensPerHour,
    CostUsdPerDay,
}

impl LimitKind {
    pub const ALL: [LimitKind; 5] = [
        LimitKind::RequestsPerMinute,
        LimitKind::ConcurrentCalls,
        LimitKind::InputTokensPerHour,
        LimitKind::OutputTokensPerHour,
        LimitKind::CostUsdPerDay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMinute => "requests_per_minute",
            LimitKind::ConcurrentCalls => "concurrent_calls",
            LimitKind::InputTokensPerHour => "input_tokens_per_hour",
            LimitKind::OutputTokensPerHour => "output_tokens_per_hour",
            LimitKind::CostUsdPerDay => "cost_usd_per_day",
        }
    }

    /// A budget is used up by calls already made; retrying soon cannot help.
    pub fn is_budget(self) -> bool {
        matches!(
            self,
            LimitKind::InputTokensPerHour
                | LimitKind::OutputTokensPerHour
                | LimitKind::CostUsdPerDay
        )
    }
}

/// A counted quantity and its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    Requests,
    InputTokens,
    OutputTokens,
    /// Millionths of a dollar.
    CostMicroUsd,
}

impl Counter {
    pub const ALL: [Counter; 4] = [
        Counter::Requests,
        Counter::InputTokens,
        Counter::OutputTokens,
        Counter::CostMicroUsd,
    ];

    fn window_secs(self) -> u64 {
        match self {
            Counter::Requests => 60,
            Counter::InputTokens | Counter::OutputTokens => 3600,
            Counter::CostMicroUsd => 86_400,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Requests => "requests",
            Counter::InputTokens => "input_tokens",
            Counter::OutputTokens => "output_tokens",
            Counter::CostMicroUsd => "cost_micro_usd",
        }
    }
}

/// A fixed window: its index since the epoch and the seconds until it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub index: u64,
    pub secs_left: u64,
}

impl Window {
    pub fn of(counter: Counter, now: SystemTime) -> Window {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let len = counter.window_secs();
        let index = secs / len;
        let end = index.saturating_add(1).saturating_mul(len);
        Window {
            index,
            secs_left: end.saturating_sub(secs).max(1),
        }
    }
}

/// What a call adds to its client's windows once its usage is known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micro_usd: u64,
}

impl Charge {
    /// Dollars to millionths, rounded up (a budget is never undercounted).
    pub fn micro_usd(cost: f64) -> u64 {
        if !cost.is_finite() || cost <= 0.0 {
            return 0;
        }
        let micro = (cost * 1e6).ceil();
        if micro >= u64::MAX as f64 {
            u64::MAX
        } else {
            micro as u64
        }
    }
}

/// The window values an admission decides on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests in this minute, this one included.
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micro_usd: u64,
}

/// A refusal: which limit, and when to come back.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitHit {
    pub kind: LimitKind,
    pub retry_after_secs: u64,
    pub message: String,
}

/// `--limits-store-fail`: what to do when the shared store cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Enforce from this process's own counters.
    #[default]
    Open,
    /// Refuse calls that have limits (`503`).
    Closed,
}

impl FailMode {
    pub fn parse(value: &str) -> Result<FailMode, String> {
        match value.trim() {
            "open" => Ok(FailMode::Open),
            "closed" => Ok(FailMode::Closed),
            _ => Err("must be open or closed".to_string()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }
}

/// The outcome of asking to start a call.
#[derive(Debug)]
pub enum Admission {
    Admitted(CallSlot),
    Refused(LimitHit),
    /// The shared store did not answer and `--limits-store-fail closed`.
    StoreUnavailable,
}

/// Counts calls in progress per client; a slot gives its place back when dropped.
#[derive(Debug, Default)]
struct Concurrency {
    open: Mutex<HashMap<Arc<str>, u64>>,
}

impl Concurrency {
    fn try_take(&self, client: &Arc<str>, limit: Option<u64>) -> bool {
        let mut open = match self.open.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = open.get(client).copied().unwrap_or(0);
        if limit.is_some_and(|limit| now >= limit) {
            return false;
        }
        open.insert(Arc::clone(client), now.saturating_add(1));
        true
    }

    fn give_back(&self, client: &Arc<str>) {
        let mut open = match self.open.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(n) = open.get_mut(client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(client);
            }
        }
    }

    fn current(&self, client: &str) -> u64 {
        match self.open.lock() {
            Ok(o) => o.get(client).copied().unwrap_or(0),
            Err(poisoned) => poisoned.into_inner().get(client).copied().unwrap_or(0),
        }
    }
}

/// A call in progress; dropping it frees its concurrency place.
pub struct CallSlot {
    concurrency: Arc<Concurrency>,
    client: Arc<str>,
}

impl fmt::Debug for CallSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallSlot({})", self.client)
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.concurrency.give_back(&self.client);
    }
}

/// Store health, for `/healthz` and `/metrics`.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Operations the store did not answer in time or failed.
    pub errors: AtomicU64,
    /// Calls refused because the store was unavailable (`--limits-store-fail closed`).
    pub refused_unavailable: AtomicU64,
    /// The last operation failed (a warning was logged; the next success logs recovery).
    down: AtomicBool,
}

/// Admits calls against their profile's limits and charges their usage.
pub struct Limiter {
    local: Arc<LocalCounters>,
    store: Option<Arc<LimitsStore>>,
    fail: FailMode,
    concurrency: Arc<Concurrency>,
    pub stats: Arc<StoreStats>,
    /// Told of every store error (the `/metrics` counter).
    on_store_error: StoreErrorHook,
}

/// Called once per failed or late store operation.
pub type StoreErrorHook = Arc<dyn Fn() + Send + Sync>;

impl Limiter {
    /// `store`: `--limits-store` (connected in the background); `None`: memory only.
    pub fn new(
        store: Option<StoreSpec>,
        fail: FailMode,
        on_store_error: StoreErrorHook,
    ) -> Limiter {
        Limiter {
            local: Arc::new(LocalCounters::default()),
            store: store.map(|spec| Arc::new(LimitsStore::new(spec))),
            fail,
            concurrency: Arc::new(Concurrency::default()),
            stats: Arc::new(StoreStats::default()),
            on_store_error,
        }
    }

    /// Starts connecting to the store (inside a runtime); traffic never waits for it.
    pub fn connect_in_background(&self) {
        if let Some(store) = self.store.as_ref() {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.connect().await });
        }
    }

    /// `memory` or `redis://host:port/db` (no password).
    pub fn store_name(&self) -> String {
        self.store
            .as_ref()
            .map_or_else(|| "memory".to_string(), |s| s.describe())
    }

    pub fn fail_mode(&self) -> FailMode {
        self.fail
    }

    /// May `client` start a call now? Counts the request when it may.
    pub async fn admit(&self, client: &Arc<str>, limits: &CallLimits) -> Admission {
        if limits.is_empty() {
            return Admission::Admitted(self.slot(client));
        }
        let now = SystemTime::now();
        if !self.concurrency.try_take(client, limits.concurrent_calls) {
            let limit = limits.concurrent_calls.unwrap_or(0);
            return Admission::Refused(hit(LimitKind::ConcurrentCalls, client, limit as f64, 1));
        }
        let slot = CallSlot {
            concurrency: Arc::clone(&self.concurrency),
            client: Arc::clone(client),
        };
        // This process's own counters always count: they decide when the store cannot.
        let local = self.local.admit(client, now);
        let counts = match &self.store {
            None => local,
            Some(store) => {
                match tokio::time::timeout(STORE_DEADLINE, store.admit(client, now)).await {
                    Ok(Ok(counts)) => {
                        self.store_ok();
                        counts
                    }
                    Ok(Err(e)) => {
                        self.store_failed(&e.to_string());
                        match self.fail {
                            FailMode::Open => local,
                            FailMode::Closed => return self.unavailable(),
                        }
                    }
                    Err(_) => {
                        self.store_failed("no answer within 50 ms");
                        match self.fail {
                            FailMode::Open => local,
                            FailMode::Closed => return self.unavailable(),
                        }
                    }
                }
            }
        };
        match check(client, limits, &counts, now) {
            Some(hit) => Admission::Refused(hit),
            None => Admission::Admitted(slot),
        }
    }

    fn slot(&self, client: &Arc<str>) -> CallSlot {
        // Counted even without a limit, so that a limit added by a reload sees the calls
        // already running.
        let _ = self.concurrency.try_take(client, None);
        CallSlot {
            concurrency: Arc::clone(&self.concurrency),
            client: Arc::clone(client),
        }
    }

    fn unavailable(&self) -> Admission {
        self.stats
            .refused_unavailable
            .fetch_add(1, Ordering::Relaxed);
        Admission::StoreUnavailable
    }

    /// Adds a finished call's usage to its client's windows: at once in memory, and in the
    /// store in the background (never waited on by traffic).
    pub fn charge(&self, client: &Arc<str>, charge: Charge) {
        if charge == Charge::default() {
            return;
        }
        let now = SystemTime::now();
        self.local.charge(client, charge, now);
        let Some(store) = self.store.as_ref() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::clone(store);
        let stats = Arc::clone(&self.stats);
        let on_error = Arc::clone(&self.on_store_error);
        let client = Arc::clone(client);
        runtime.spawn(async move {
            // Not on the traffic path: a little more time, still bounded.
            let deadline = STORE_DEADLINE.saturating_mul(5);
            let result = tokio::time::timeout(deadline, store.charge(&client, charge, now)).await;
            if !matches!(result, Ok(Ok(()))) {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                on_error();
                tracing::debug!(client = %client, "a charge did not reach the limits store; it is counted locally");
            }
        });
    }

    /// Calls of `client` in progress now.
    pub fn in_progress(&self, client: &str) -> u64 {
        self.concurrency.current(client)
    }

    fn store_ok(&self) {
        if self.stats.down.swap(false, Ordering::Relaxed) {
            tracing::info!(store = %self.store_name(), "the limits store answers again");
        }
    }

    fn store_failed(&self, why: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        (self.on_store_error)();
        if !self.stats.down.swap(true, Ordering::Relaxed) {
            let fallback = match self.fail {
                FailMode::Open => "limits are enforced from this process's own counters",
                FailMode::Closed => "calls with limits are refused (--limits-store-fail closed)",
            };
            tracing::warn!(store = %self.store_name(), error = why, "the limits store is unavailable; {fallback}");
        }
    }

    /// For `/healthz`.
    pub fn health(&self) -> serde_json::Value {
        serde_json::json!({
            "store": self.store_name(),
            "store_fail": self.fail.as_str(),
            "store_available": !self.stats.down.load(Ordering::Relaxed),
            "store_connected": self.store.as_ref().map(|s| s.is_connected()),
            "store_errors": self.stats.errors.load(Ordering::Relaxed),
            "refused_store_unavailable": self.stats.refused_unavailable.load(Ordering::Relaxed),
        })
    }
}

/// The first limit the counts break, if any.
fn check(client: &str, limits: &CallLimits, counts: &Counts, now: SystemTime) -> Option<LimitHit> {
    let over_budget = |limit: Option<u64>, used: u64| limit.is_some_and(|l| used >= l);
    let secs = |counter: Counter| Window::of(counter, now).secs_left;
    if let Some(limit) = limits.cost_usd_per_day {
        let used = counts.cost_micro_usd as f64 / 1e6;
        if used >= limit {
            return Some(hit(
                LimitKind::CostUsdPerDay,
                client,
                limit,
                secs(Counter::CostMicroUsd),
            ));
        }
    }
    if over_budget(limits.input_tokens_per_hour, counts.input_tokens) {
        let limit = limits.input_tokens_per_hour.unwrap_or(0) as f64;
        return Some(hit(
            LimitKind::InputTokensPerHour,
            client,
            limit,
            secs(Counter::InputTokens),
        ));
    }
    if over_budget(limits.output_tokens_per_hour, counts.output_tokens) {
        let limit = limits.output_tokens_per_hour.unwrap_or(0) as f64;
        return Some(hit(
            LimitKind::OutputTokensPerHour,
            client,
            limit,
            secs(Counter::OutputTokens),
        ));
    }
    if let Some(limit) = limits.requests_per_minute
        && counts.requests > limit
    {
        return Some(hit(
            LimitKind::RequestsPerMinute,
            client,
            limit as f64,
            secs(Counter::Requests),
        ));
    }
    None
}

fn hit(kind: LimitKind, client: &str, limit: f64, retry_after_secs: u64) -> LimitHit {
    let message = if limit == 0.0 {
        format!(
            "llmtap: {} = 0 for client {client}: this limit refuses every call",
            kind.as_str()
        )
    } else if kind.is_budget() {
        format!(
            "llmtap: client {client} has used its budget {} = {limit}; it renews in {retry_after_secs} s",
            kind.as_str()
        )
    } else {
        format!(
            "llmtap: client {client} is at its limit {} = {limit}; retry in {retry_after_secs} s",
            kind.as_str()
        )
    };
    LimitHit {
        kind,
        retry_after_secs,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CallLimits {
        CallLimits {
            requests_per_minute: Some(2),
            concurrent_calls: Some(1),
            input_tokens_per_hour: Some(100),
            output_tokens_per_hour: Some(10),
            cost_usd_per_day: Some(0.5),
        }
    }

    #[test]
    fn windows_are_fixed_utc_windows() {
        let at = UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3600 * 5 + 61);
        assert_eq!(Window::of(Counter::Requests, at).secs_left, 59);
        assert_eq!(Window::of(Counter::InputTokens, at).secs_left, 3600 - 61);
        let day = Window::of(Counter::CostMicroUsd, at);
        assert_eq!(day.index, 3);
        assert_eq!(day.secs_left, 86_400 - 3600 * 5 - 61);
    }

    #[test]
    fn the_first_broken_limit_is_named_with_its_window() {
        let now = SystemTime::now();
        let l = limits();
        let ok = Counts {
            requests: 2,
            input_tokens: 99,
            output_tokens: 9,
            cost_micro_usd: 499_999,
        };
        assert_eq!(check("c", &l, &ok, now), None);
        let cases = [
            (Counts { requests: 3, ..ok }, LimitKind::RequestsPerMinute),
            (
                Counts {
                    input_tokens: 100,
                    ..ok
                },
                LimitKind::InputTokensPerHour,
            ),
            (
                Counts {
                    output_tokens: 10,
                    ..ok
                },
                LimitKind::OutputTokensPerHour,
            ),
            (
                Counts {
                    cost_micro_usd: 500_000,
                    ..ok
                },
                LimitKind::CostUsdPerDay,
            ),
        ];
        for (counts, kind) in cases {
            let hit = check("code", &l, &counts, now).unwrap();
            assert_eq!(hit.kind, kind);
            assert!(hit.message.contains("code") && hit.message.contains(kind.as_str()));
            assert!(hit.retry_after_secs >= 1);
        }
    }

    #[test]
    fn a_zero_limit_refuses_everything_and_says_so() {
        let l = CallLimits {
            output_tokens_per_hour: Some(0),
            ..CallLimits::default()
        };
        let hit = check("c", &l, &Counts::default(), SystemTime::now()).unwrap();
        assert!(
            hit.message.contains("refuses every call"),
            "{}",
            hit.message
        );
        assert_eq!(l.zeros(), ["output_tokens_per_hour"]);
    }

    #[tokio::test]
    async fn concurrency_places_come_back_when_slots_drop() {
        let limiter = Limiter::new(None, FailMode::Open, Arc::new(|| {}));
        let client: Arc<str> = "c".into();
        let l = CallLimits {
            concurrent_calls: Some(1),
            ..CallLimits::default()
        };
        let Admission::Admitted(slot) = limiter.admit(&client, &l).await else {
            panic!("the first call is admitted");
        };
        let Admission::Refused(hit) = limiter.admit(&client, &l).await else {
            panic!("the second waits");
        };
        assert_eq!(hit.kind, LimitKind::ConcurrentCalls);
        drop(slot);
        assert_eq!(limiter.in_progress("c"), 0);
        assert!(matches!(
            limiter.admit(&client, &l).await,
            Admission::Admitted(_)
        ));
    }

    #[tokio::test]
    async fn charges_use_up_budgets_in_memory() {
        let limiter = Limiter::new(None, FailMode::Open, Arc::new(|| {}));
        let client: Arc<str> = "c".into();
        let l = CallLimits {
            output_tokens_per_hour: Some(10),
            requests_per_minute: Some(1000),
            ..CallLimits::default()
        };
        assert!(matches!(
            limiter.admit(&client, &l).await,
            Admission::Admitted(_)
        ));
        limiter.charge(
            &client,
            Charge {
                output_tokens: 10,
                ..Charge::default()
            },
        );
        let Admission::Refused(hit) = limiter.admit(&client, &l).await else {
            panic!("the budget is used up");
        };
        assert_eq!(hit.kind, LimitKind::OutputTokensPerHour);
        // Another client has its own windows.
        let other: Arc<str> = "d".into();
        assert!(matches!(
            limiter.admit(&other, &l).await,
            Admission::Admitted(_)
        ));
    }

    #[test]
    fn costs_round_up_to_millionths() {
        assert_eq!(Charge::micro_usd(0.0000001), 1);
        assert_eq!(Charge::micro_usd(1.5), 1_500_000);
        assert_eq!(Charge::micro_usd(f64::NAN), 0);
        assert_eq!(Charge::micro_usd(-1.0), 0);
        assert_eq!(Charge::micro_usd(f64::INFINITY), 0);
        assert_eq!(Charge::micro_usd(1e300), u64::MAX);
    }
}
