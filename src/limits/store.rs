//! The shared counters (`--limits-store redis://HOST:PORT[/DB]`): one Lua script per admission
//! and per charge, so every replica increments the same windows atomically. Connecting happens
//! in the background; traffic only ever uses a connection that is already there.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use redis::aio::MultiplexedConnection;

use super::{Charge, Counter, Counts, Window};

/// A connection attempt may take this long (in the background).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Between two connection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// Counters outlive their window by this much (clock skew between replicas).
const EXPIRY_SLACK_SECS: u64 = 120;
/// A charge above this is clamped: Redis integers are signed 64-bit.
const MAX_CHARGE: u64 = 1 << 50;

const ADMIT_SCRIPT: &str = r"
local r = redis.call('INCR', KEYS[1])
if r == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local function n(k) return tonumber(redis.call('GET', k) or '0') or 0 end
return {r, n(KEYS[2]), n(KEYS[3]), n(KEYS[4])}
";

const CHARGE_SCRIPT: &str = r"
for i = 1, 3 do
  local by = tonumber(ARGV[i])
  if by and by > 0 then
    redis.call('INCRBY', KEYS[i], by)
    if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[i + 3]) end
  end
end
return 1
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not connected to the limits store")]
    NotConnected,
    #[error("limits store: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A validated `--limits-store` value. Its `Debug` shows no password.
#[derive(Clone)]
pub struct StoreSpec {
    client: redis::Client,
    /// `redis://host:port/db`, without user or password.
    description: String,
}

impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreSpec({})", self.description)
    }
}

impl StoreSpec {
    pub fn parse(value: &str) -> Result<StoreSpec, String> {
        let value = value.trim();
        let uri: http::Uri = value
            .parse()
            .map_err(|_| "expected redis://HOST:PORT[/DB]".to_string())?;
        if uri.scheme_str() != Some("redis") {
            return Err("expected redis://HOST:PORT[/DB] (only redis:// is supported)".into());
        }
        let authority = uri
            .authority()
            .ok_or_else(|| "expected redis://HOST:PORT[/DB]: no host".to_string())?;
        if authority.host().is_empty() {
            return Err("expected redis://HOST:PORT[/DB]: no host".into());
        }
        let db = uri.path().trim_start_matches('/');
        if !db.is_empty() && db.parse::<u32>().is_err() {
            return Err("the database after the / must be a number".into());
        }
        if uri.query().is_some() {
            return Err("expected redis://HOST:PORT[/DB], without a query".into());
        }
        let port = authority.port_u16().unwrap_or(6379);
        let client = redis::Client::open(value).map_err(|e| {
            // The URL may carry a password: say what is wrong, not what it was.
            format!("not a Redis URL ({})", e.kind_name())
        })?;
        let db = if db.is_empty() { "0" } else { db };
        Ok(StoreSpec {
            client,
            description: format!("redis://{}:{port}/{db}", authority.host()),
        })
    }

    pub fn describe(&self) -> &str {
        &self.description
    }
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for redis::RedisError {
    fn kind_name(&self) -> String {
        format!("{:?}", self.kind())
    }
}

/// The Redis store.
pub struct LimitsStore {
    spec: StoreSpec,
    connection: Mutex<ConnState>,
    admit_script: redis::Script,
    charge_script: redis::Script,
}

#[derive(Default)]
struct ConnState {
    connection: Option<MultiplexedConnection>,
    connecting: bool,
    last_attempt: Option<Instant>,
}

impl LimitsStore {
    pub fn new(spec: StoreSpec) -> LimitsStore {
        LimitsStore {
            spec,
            connection: Mutex::new(ConnState::default()),
            admit_script: redis::Script::new(ADMIT_SCRIPT),
            charge_script: redis::Script::new(CHARGE_SCRIPT),
        }
    }

    pub fn describe(&self) -> String {
        self.spec.description.clone()
    }

    pub fn is_connected(&self) -> bool {
        self.state().connection.is_some()
    }

    /// Counts one request of `client` and reads its budgets, in one round trip.
    pub async fn admit(
        self: &std::sync::Arc<Self>,
        client: &str,
        now: SystemTime,
    ) -> Result<Counts, StoreError> {
        let mut connection = self.connection()?;
        let requests = Window::of(Counter::Requests, now);
        let mut script = self.admit_script.prepare_invoke();
        for counter in Counter::ALL {
            script.key(key(client, counter, now));
        }
        script.arg(requests.secs_left.saturating_add(EXPIRY_SLACK_SECS));
        let result: Result<Vec<i64>, redis::RedisError> =
            script.invoke_async(&mut connection).await;
        let values = self.checked(result)?;
        let get = |i: usize| values.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(Counts {
            requests: get(0),
            input_tokens: get(1),
            output_tokens: get(2),
            cost_micro_usd: get(3),
        })
    }

    /// Adds a finished call's usage.
    pub async fn charge(
        self: &std::sync::Arc<Self>,
        client: &str,
        charge: Charge,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        let counters = [
            Counter::InputTokens,
            Counter::OutputTokens,
            Counter::CostMicroUsd,
        ];
        let amounts = [
            charge.input_tokens,
            charge.output_tokens,
            charge.cost_micro_usd,
        ];
        let mut script = self.charge_script.prepare_invoke();
        for counter in counters {
            script.key(key(client, counter, now));
        }
        for amount in amounts {
            script.arg(amount.min(MAX_CHARGE));
        }
        for counter in counters {
            let ttl = Window::of(counter, now).secs_left;
            script.arg(ttl.saturating_add(EXPIRY_SLACK_SECS));
        }
        let result: Result<i64, redis::RedisError> = script.invoke_async(&mut connection).await;
        self.checked(result).map(|_| ())
    }

    /// A connection to use now, or `NotConnected` (and a connection attempt in the background).
    fn connection(self: &std::sync::Arc<Self>) -> Result<MultiplexedConnection, StoreError> {
        let mut state = self.state();
        if let Some(connection) = state.connection.as_ref() {
            return Ok(connection.clone());
        }
        let due = state
            .last_attempt
            .is_none_or(|at| at.elapsed() >= RECONNECT_PAUSE);
        if !state.connecting && due {
            state.connecting = true;
            state.last_attempt = Some(Instant::now());
            let store = std::sync::Arc::clone(self);
            tokio::spawn(async move { store.connect().await });
        }
        Err(StoreError::NotConnected)
    }

    /// Connects (bounded by `CONNECT_TIMEOUT`); called at start and after a failure.
    pub async fn connect(&self) {
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.spec.client.get_multiplexed_async_connection(),
        )
        .await;
        let mut state = self.state();
        state.connecting = false;
        state.last_attempt = Some(Instant::now());
        match attempt {
            Ok(Ok(connection)) => state.connection = Some(connection),
            Ok(Err(e)) => {
                tracing::debug!(store = %self.spec.description, error = %e, "cannot connect to the limits store")
            }
            Err(_) => {
                tracing::debug!(store = %self.spec.description, "connecting to the limits store timed out")
            }
        }
    }

    /// A failed operation drops the connection, so the next use reconnects.
    fn checked<T>(&self, result: Result<T, redis::RedisError>) -> Result<T, StoreError> {
        result.map_err(|e| {
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                self.state().connection = None;
            }
            StoreError::Redis(e)
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ConnState> {
        match self.connection.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// `llmtap:limits:{client}:{counter}:{window index}`; client names hold no `:`.
fn key(client: &str, counter: Counter, now: SystemTime) -> String {
    let window = Window::of(counter, now).index;
    format!("llmtap:limits:{client}:{}:{window}", counter.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_are_checked_and_never_shown_with_their_password() {
        let spec = StoreSpec::parse("redis://:s3cret@127.0.0.1:6380/2").unwrap();
        assert_eq!(spec.describe(), "redis://127.0.0.1:6380/2");
        assert_eq!(
            StoreSpec::parse("redis://localhost").unwrap().describe(),
            "redis://localhost:6379/0"
        );
        for bad in [
            "http://x:1",
            "redis://",
            "redis://h:1/x",
            "h:6379",
            "redis://h:1/?a=b",
        ] {
            let err = StoreSpec::parse(bad).unwrap_err();
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
