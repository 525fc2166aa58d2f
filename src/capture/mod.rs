//! The capture point: body tee with a cap, the `Exchange` record and the hand-off to a sink.

pub mod body;
pub mod exchange;
pub mod record;
pub mod timeout;

pub use body::{CaptureBudget, CaptureBuf, RequestTap, ResponseTap, TapBody};
pub use exchange::{ExchangeInProgress, FinishFacts, InFlight, OnFinish};
pub use record::{CapturedBody, Exchange, Outcome, RequestSide};

/// Where finished exchanges go. `submit` must never block or await: it is called on the proxy path.
pub trait ExchangeSink: Send + Sync + 'static {
    fn submit(&self, exchange: Exchange);
    /// A connection audit record (`llmtap.egress`); same rules as `submit`.
    fn submit_egress(&self, record: crate::audit::EgressRecord);
    /// Counters for `/healthz` (queue, drops); `null` when the sink keeps none.
    fn stats(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}
