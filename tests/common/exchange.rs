//! The exchanges the export tests submit: the crate's `Exchange::sample()` (a finished 200 JSON
//! call to Anthropic's Messages API) with the fields a test is about changed.
#![allow(dead_code)]

use llmtap::capture::{CapturedBody, Exchange};

/// A body that went through whole.
pub fn body(text: &str) -> CapturedBody {
    CapturedBody::complete(text)
}

/// The sample call, `llmtap.exchange.id` = `id` (unique within a test).
pub fn call(id: u64) -> Exchange {
    Exchange {
        id,
        ..Exchange::sample()
    }
}

/// The sample call with `marker={id}` in its query (found again in `url.full`) and a response
/// body padded by `pad` bytes.
pub fn marked_call(id: u64, pad: usize) -> Exchange {
    let mut exchange = call(id);
    exchange.url = format!("{}?marker={id}", exchange.url);
    exchange.response_body = body(&format!(
        r#"{{"id":"msg_01","type":"message","pad":"{}"}}"#,
        "x".repeat(pad)
    ));
    exchange
}
