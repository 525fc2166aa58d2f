//! Provider formats: what model, tokens and finish reasons a request/response carries (JSON,
//! SSE and AWS event stream). One file per provider implements `shape::Provider`; the
//! registry below lists them, and nothing else needs to know a provider exists.
// Every number and length here comes from a client or an upstream: no arithmetic may overflow
// and no index may panic (saturating or checked arithmetic, `get` instead of `[]`). Test code,
// which builds its own inputs, is exempt.
#![cfg_attr(
    not(test),
    deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)
)]

/// The methods both body parsers (request and response) have over their `inflow`.
macro_rules! inflow_methods {
    () => {
        /// Offered bytes are still waiting for `work`.
        pub fn has_work(&self) -> bool {
            self.inflow.has_work()
        }

        /// Decoded bytes parsed so far.
        pub fn decoded_len(&self) -> u64 {
            self.inflow.decoded_len()
        }

        /// Why parsing stopped before the end, if it did.
        pub fn stopped(&self) -> Option<ParseStop> {
            self.inflow.stop()
        }

        /// Bytes the decoder holds now (see `StreamDecoder::memory`); 0 for identity bodies.
        pub fn memory(&self) -> usize {
            self.inflow.memory()
        }

        /// Stop parsing for `reason`; the decoder's memory goes at once, the facts so far stay.
        pub fn give_up(&mut self, reason: ParseStop) {
            self.inflow.give_up(reason);
        }

        /// The body ended (or was dropped): free the decoder now, keep the facts for `finish`.
        pub fn end_input(&mut self) {
            self.inflow.end_input();
        }
    };
}

mod acc;
#[cfg(test)]
pub(crate) mod bomb_tests;
pub mod decode;
mod eventstream;
mod facts;
#[cfg(test)]
mod hostile_tests;
mod inflow;
mod request;
mod response;
mod shape;
mod skim;
mod sse;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

pub use facts::{ParseStop, RequestFacts, ResponseFacts, Usage, UsageSource};
pub use inflow::{FREE_DECODED, MAX_DECODER_MEMORY, MAX_RATIO, WORK_SLICE};
pub use request::{RequestParser, parse_request};
pub use response::ResponseParser;
pub use shape::{ApiShape, ErrorShape};

use shape::Provider;

/// Declares the provider modules and lists their APIs in [`REGISTRY`].
macro_rules! registry {
    ($($module:ident: [$($api:ident),+ $(,)?]),+ $(,)?) => {
        $(mod $module;)+
        /// Every API llmtap reads. `ApiShape::from_path` asks each in turn; no two recognise
        /// the same path, so the order does not matter.
        static REGISTRY: &[&dyn Provider] = &[$($(&$module::$api),+),+];
    };
}

// One line per provider file: the module and the APIs it defines.
registry! {
    anthropic: [MESSAGES],
    openai_chat: [CHAT, COMPLETIONS, EMBEDDINGS],
    openai_responses: [RESPONSES],
    gemini: [GENERATE],
    bedrock: [CONVERSE],
}

/// The path without its query or fragment.
fn strip_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}
