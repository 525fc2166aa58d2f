//! llmtap: a MITM forward proxy that records LLM API calls as OpenTelemetry log records.

pub mod accounting;
pub mod audit;
pub mod base_routes;
pub mod ca;
pub mod capture;
pub mod config;
pub mod export;
pub mod health;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod policy_check;
pub mod prices;
pub mod providers;
pub mod proxy;
pub mod redact;
pub mod route;

pub use config::Config;
pub use proxy::{ProxyError, RunningProxy, ShutdownReport, start};
