//! Property tests (proptest, stable Rust) of every parser that sees untrusted bytes, through the
//! crate's public API. Issue 9, item 9.
//!
//! Invariants, each checked on random bytes and on structured near-valid inputs (real provider
//! fixtures, generated SSE/JSON streams, valid gzip/deflate/br/zstd bodies, valid policy
//! files), both as they are and mutated (bytes flipped, inserted, deleted, cut):
//!
//! 1. **Never panics.** No input, however chunked, makes any of them panic (a debug build also
//!    checks integer overflow, so this covers the arithmetic on upstream numbers).
//! 2. **Never allocates past its bound.**
//!    - `decode_body(enc, bytes, limit)`: the output is at most `limit` bytes, its buffer at most
//!      `max(2 × limit, 8)`; `truncated` is set exactly when the decoded body is longer.
//!    - `ResponseParser` / `RequestParser`: the memory they keep between `feed` calls does not
//!      grow with the body (measured with a counting allocator over multi-megabyte streams):
//!      at most [`parsers::HELD_BOUND`] whatever the body's length.
//!    - `ResponseFacts`: at most 64 finish reasons; model, id and error strings at most 64 KiB.
//!    - `Redactor`: the output is at most `2 × input + 10` bytes.
//! 3. **Split-invariance.** Feeding the same bytes in any chunking (random split points, 1-byte
//!    chunks, empty chunks in between) gives the same result: the same `ResponseFacts` (SSE
//!    framer, JSON skimmer, every provider format, every content-encoding), the same
//!    `RequestFacts`, the same decoded bytes from a `StreamDecoder`, also for a compressed body
//!    cut anywhere (a stream still running or dropped). A valid compressed body gives the facts
//!    of the identity body. A *corrupt* compressed body is only required not to panic, to stay
//!    within bounds, and to fail alike in any chunking, whole and split outputs agreeing as far
//!    as both go (a decoder that fails may lose what it decoded in that call).
//! 4. **Correctness on generated valid inputs** (oracle): a generated Anthropic or OpenAI stream
//!    yields exactly the model, id, finish reasons and usage it was generated with; a generated
//!    request body yields its model, stream flag and token limit wherever they sit; a compressed
//!    body decodes to its bytes, and a prefix of it to a prefix of them.
//! 5. **Redaction.** A real-shaped secret of every kind the rules know, embedded anywhere in
//!    random text, never survives `redact_text` (nor `redact_url` in a query value); redaction
//!    is idempotent (`r(r(x)) == r(x)`); headers not on the allowlist are `[REDACTED]`.
//! 6. **Strict targets.** `authority_target` (CONNECT) and `policy_check::parse_target` accept
//!    exactly `host:port` with a non-empty host and a port of 1–65535 written in digits, and what
//!    they accept prints (`Target::authority`) to a string they parse back to the same target.
//! 7. **Config.** `parse_size`, `parse_resolve`, `parse_connect_to`, `HostRule::parse` and
//!    `PolicySet::from_toml` agree with what was generated, never accept an empty host or a
//!    port 0, reject rather than panic on arbitrary text, and re-parse what they print.
//! 8. **Address classes.** `special_range` agrees with an independent reference implementation
//!    (and with `std`'s `Ipv4Addr`/`Ipv6Addr` predicates) for every IPv4 address, and an IPv6
//!    address carrying an IPv4 one (mapped, translated, compatible, NAT64, 6to4) is classified
//!    exactly as that IPv4 address.
//!
//! Bounds: each property runs 10–256 cases (its own default; `PROPTEST_CASES` overrides them
//! all) on inputs of a few KiB (up to ~150 KiB for the cut compressed streams, a few MiB for
//! the memory bound), so the whole suite takes well under a minute in a debug build.
//! A failure prints the minimal input; regressions found are kept as plain `#[test]`s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "properties/address.rs"]
mod address;
#[path = "properties/config.rs"]
mod config;
#[path = "properties/decoders.rs"]
mod decoders;
#[path = "properties/gens.rs"]
mod gens;
#[path = "properties/parsers.rs"]
mod parsers;
#[path = "properties/redaction.rs"]
mod redaction;
#[path = "properties/regressions.rs"]
mod regressions;
#[path = "properties/targets.rs"]
mod targets;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use proptest::test_runner::Config as ProptestConfig;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// Counts allocations, so the memory-bound properties can measure what a parser keeps.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Every test of this binary holds it for its whole run (input generation included); one that
/// measures memory holds it alone, so that under `cargo test` (threads) no other test
/// allocates meanwhile (nextest runs one test per process anyway).
static ALLOC_LOCK: RwLock<()> = RwLock::new(());

/// Held by every test that does not measure memory.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    ALLOC_LOCK.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by a test that measures memory.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    ALLOC_LOCK.write().unwrap_or_else(|e| e.into_inner())
}

/// Net bytes allocated (allocated − freed) by the whole process while `f` runs.
pub fn net_allocated<T>(f: impl FnOnce() -> T) -> (T, isize) {
    let region = Region::new(GLOBAL);
    let out = f();
    let change = region.change();
    // `bytes_allocated`/`bytes_deallocated` include what reallocations added or gave back.
    let net = change.bytes_allocated as isize - change.bytes_deallocated as isize;
    (out, net)
}

/// The case count of one property: its own default, or `PROPTEST_CASES` when set.
pub fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // Shrinking stays bounded too (a failure still prints a small input).
        max_shrink_iters: 1024,
        max_shrink_time: 5_000,
        // Found regressions are kept as plain tests in the source, not in a side file.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
