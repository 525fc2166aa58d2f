//! Real provider keys held only by llmtap: the keys file (`--keys`), and the sentinel swap.

mod file;
pub mod swap;

pub use file::{DEFAULT_SENTINEL, KeyEntry, KeySet, KeysError, SecretKey};
pub use swap::{KeyRefusal, KeyUse, Transport, apply};

use std::sync::atomic::{AtomicU64, Ordering};

/// Swaps and alarms since start, for `/healthz` (and later `/metrics`).
#[derive(Debug, Default)]
pub struct KeyCounts {
    /// Requests whose sentinel was replaced with a real key.
    pub injected: AtomicU64,
    /// Requests that carried a credential looking like a real provider key.
    pub foreign: AtomicU64,
    /// Requests refused before anything went upstream (foreign key, key not granted, cleartext).
    pub refused: AtomicU64,
}

impl KeyCounts {
    pub fn count(&self, used: &KeyUse) {
        if used.injected {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        if used.foreign {
            self.foreign.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "injected": self.injected.load(Ordering::Relaxed),
            "foreign": self.foreign.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
        })
    }
}
