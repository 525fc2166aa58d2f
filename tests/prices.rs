//! The shipped price table (`addons-config/prices.toml`, issue 11): it parses, says when and
//! where its figures come from, gives every entry the rates its provider needs, prices real
//! model ids (and only those), and known calls cost what the pricing pages say.

use llmtap::prices::{BUILTIN_PRICES_TOML, Price, Prices, REASONING_APART};
use llmtap::providers::Usage;

const PRICES_FILE: &str = "addons-config/prices.toml";
const M: i64 = 1_000_000;

fn shipped() -> Prices {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PRICES_FILE);
    Prices::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn usage(input: i64, cache_read: i64, cache_write: i64, output: i64, reasoning: i64) -> Usage {
    Usage {
        input_tokens: Some(input),
        output_tokens: Some(output),
        cache_read_input_tokens: Some(cache_read),
        cache_creation_input_tokens: Some(cache_write),
        reasoning_output_tokens: Some(reasoning),
    }
}

#[test]
fn shipped_file_parses_and_says_when_and_where_from() {
    let prices = shipped();
    assert_eq!(
        prices.len(),
        Prices::builtin().len(),
        "builtin is the same file"
    );
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PRICES_FILE))
            .unwrap(),
        BUILTIN_PRICES_TOML
    );
    let as_of = prices
        .as_of()
        .expect("the file says the date of its figures");
    let header: String = BUILTIN_PRICES_TOML
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(header.contains(as_of), "the header names the date {as_of}");
    for host in [
        "platform.claude.com",
        "developers.openai.com",
        "ai.google.dev",
    ] {
        assert!(
            prices.sources().iter().any(|s| s.contains(host)),
            "`sources` has nothing from {host}"
        );
        assert!(header.contains(host), "the header cites {host}");
    }
    for provider in ["anthropic", "openai", "gcp.gemini", "gcp.vertex_ai"] {
        assert!(
            prices.providers().any(|p| p == provider),
            "no prices for {provider}"
        );
    }
    assert!(prices.summary().contains(as_of));
}

/// Anthropic bills cache writes and reads; OpenAI and Gemini bill cached reads at their own
/// rate: every entry (and tier) of theirs must say it rather than fall back to the input rate.
fn needed_rates(price: &Price) -> Vec<&'static str> {
    match price.provider.as_str() {
        "anthropic" => vec!["cache_read", "cache_write"],
        "openai" | "gcp.gemini" | "gcp.vertex_ai" => vec!["cache_read"],
        _ => Vec::new(),
    }
}

#[test]
fn every_entry_has_the_rates_its_provider_needs() {
    for price in shipped().iter() {
        let what = format!("{} {}", price.provider, price.pattern.as_str());
        let sets = std::iter::once(&price.rates).chain(price.tiers.iter().map(|t| &t.rates));
        for rates in sets {
            for needed in needed_rates(price) {
                let has = match needed {
                    "cache_read" => rates.cache_read.is_some(),
                    _ => rates.cache_write.is_some(),
                };
                assert!(has, "{what}: no {needed} rate");
            }
            assert!(
                rates.input > 0.0 && rates.output >= rates.input,
                "{what}: {rates:?}"
            );
            assert!(rates.cache_read.is_none_or(|r| r <= rates.input), "{what}");
            if price.provider == "anthropic" && price.pattern.as_str() != "claude-3-haiku*" {
                // 5-minute cache writes are 1.25x input (Haiku 3's page says $0.30, not $0.3125).
                let write = rates.cache_write.unwrap_or_default();
                assert!(
                    (write - rates.input * 1.25).abs() < 1e-9,
                    "{what}: write {write}"
                );
            }
        }
        let apart = REASONING_APART.contains(&price.provider.as_str());
        assert_eq!(price.output_includes_reasoning, !apart, "{what}");
    }
}

#[test]
fn no_entry_is_shadowed_by_another() {
    let prices = shipped();
    for price in prices.iter() {
        let sample = price.pattern.as_str().replace('*', "");
        let found = prices.price_for(&price.provider, &sample);
        assert_eq!(
            found.map(|p| p.pattern.as_str()),
            Some(price.pattern.as_str()),
            "{} {sample}",
            price.provider
        );
    }
}

#[test]
fn real_model_ids_are_priced_and_lookalikes_are_not() {
    let prices = shipped();
    let priced = [
        ("anthropic", "claude-sonnet-4-5-20250929"),
        ("anthropic", "claude-sonnet-4-5"),
        ("anthropic", "claude-sonnet-4-20250514"),
        ("anthropic", "claude-sonnet-4-6"),
        ("anthropic", "claude-opus-4-1-20250805"),
        ("anthropic", "claude-opus-4-20250514"),
        ("anthropic", "claude-opus-4-5-20251101"),
        ("anthropic", "claude-haiku-4-5-20251001"),
        ("anthropic", "claude-3-5-haiku-20241022"),
        ("anthropic", "claude-3-haiku-20240307"),
        ("anthropic", "claude-3-7-sonnet-20250219"),
        ("anthropic", "claude-opus-5"),
        ("anthropic", "claude-opus-5-5"),
        ("anthropic", "claude-sonnet-5-5"),
        ("anthropic", "claude-haiku-5-5"),
        ("openai", "gpt-5-2025-08-07"),
        ("openai", "gpt-5-mini-2025-08-07"),
        ("openai", "gpt-5-nano-2025-08-07"),
        ("openai", "gpt-5.1-codex"),
        ("openai", "gpt-5.4-2026-03-05"),
        ("openai", "gpt-5.5"),
        ("openai", "gpt-4.1-2025-04-14"),
        ("openai", "gpt-4.1-mini-2025-04-14"),
        ("openai", "gpt-4o-2024-08-06"),
        ("openai", "gpt-4o-mini-2024-07-18"),
        ("openai", "o3-2025-04-16"),
        ("openai", "o4-mini-2025-04-16"),
        ("openai", "o3-mini-2025-01-31"),
        ("gcp.gemini", "gemini-2.5-pro"),
        ("gcp.gemini", "gemini-2.5-flash"),
        ("gcp.gemini", "gemini-2.5-flash-lite"),
        ("gcp.vertex_ai", "gemini-2.5-flash"),
        ("gcp.gemini", "gemini-3.1-pro-preview"),
    ];
    for (provider, model) in priced {
        assert!(
            prices.price_for(provider, model).is_some(),
            "{provider} {model} has no price"
        );
    }
    // Variants with other prices (audio, realtime, image, search, embeddings, early previews)
    // and models that do not exist yet get no cost rather than a neighbour's.
    let unpriced = [
        ("openai", "gpt-4o-audio-preview"),
        ("openai", "gpt-4o-realtime-preview-2024-12-17"),
        ("openai", "gpt-4o-mini-transcribe"),
        ("openai", "gpt-5-image"),
        ("openai", "o3-deep-research"),
        ("openai", "o4-mini-deep-research-2025-06-26"),
        ("openai", "text-embedding-3-small"),
        ("openai", "gpt-5.9"),
        ("anthropic", "claude-opus-4-9"),
        ("anthropic", "claude-sonnet-4-7"),
        ("anthropic", "claude-2.1"),
        ("gcp.gemini", "gemini-2.5-flash-preview-05-20"),
        ("gcp.gemini", "gemini-2.5-flash-image"),
        ("gcp.vertex_ai", "gemini-3.1-pro-preview"),
        ("azure.ai.openai", "gpt-4o-2024-08-06"),
        ("aws.bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ];
    for (provider, model) in unpriced {
        let found = prices
            .price_for(provider, model)
            .map(|p| p.pattern.as_str());
        assert_eq!(found, None, "{provider} {model}");
    }
}

#[test]
fn known_calls_cost_what_the_pricing_pages_say() {
    let prices = shipped();
    // (provider, model, usage, USD)
    let cases = [
        // Sonnet 4.6: $3 in, $15 out, flat.
        ("anthropic", "claude-sonnet-4-6", usage(M, 0, 0, M, 0), 18.0),
        // Sonnet 4.5 under 200K: 100k + 100k = $0.30 + $1.50.
        (
            "anthropic",
            "claude-sonnet-4-5-20250929",
            usage(100_000, 0, 0, 100_000, 0),
            1.8,
        ),
        // Sonnet 4.5 over 200K: the whole call at $6 / $22.50.
        (
            "anthropic",
            "claude-sonnet-4-5-20250929",
            usage(M, 0, 0, M, 0),
            28.5,
        ),
        // 100k prompt, 90k of it read from cache ($0.30), 10k fresh ($3).
        (
            "anthropic",
            "claude-sonnet-4-5",
            usage(100_000, 90_000, 0, 0, 0),
            0.057,
        ),
        // 100k prompt written to cache ($3.75).
        (
            "anthropic",
            "claude-sonnet-4-5",
            usage(100_000, 0, 100_000, 0, 0),
            0.375,
        ),
        (
            "anthropic",
            "claude-haiku-4-5-20251001",
            usage(M, 0, 0, M, 0),
            6.0,
        ),
        (
            "anthropic",
            "claude-opus-4-1-20250805",
            usage(M, 0, 0, M, 0),
            90.0,
        ),
        (
            "anthropic",
            "claude-opus-4-5-20251101",
            usage(M, 0, 0, M, 0),
            30.0,
        ),
        // GPT-5: 1M prompt of which 500k cached, 1M completion of which 800k reasoning
        // (inside the completion count): $0.625 + $0.0625 + $10.
        (
            "openai",
            "gpt-5-2025-08-07",
            usage(M, 500_000, 0, M, 800_000),
            10.6875,
        ),
        (
            "openai",
            "gpt-5-mini-2025-08-07",
            usage(M, 0, 0, M, 0),
            2.25,
        ),
        ("openai", "gpt-4.1-2025-04-14", usage(M, M, 0, 0, 0), 0.5),
        (
            "openai",
            "gpt-4o-mini-2024-07-18",
            usage(M, 0, 0, M, 0),
            0.75,
        ),
        ("openai", "o4-mini-2025-04-16", usage(M, 0, 0, M, 0), 5.5),
        // GPT-5.4 over 272K: $5 / $22.50.
        (
            "openai",
            "gpt-5.4",
            usage(300_000, 0, 0, 100_000, 0),
            1.5 + 2.25,
        ),
        // Gemini 2.5 Flash: 1M prompt, 1M answer + 1M thoughts (apart): $0.30 + $2.50 + $2.50.
        ("gcp.gemini", "gemini-2.5-flash", usage(M, 0, 0, M, M), 5.3),
        (
            "gcp.vertex_ai",
            "gemini-2.5-flash",
            usage(M, 0, 0, M, M),
            5.3,
        ),
        // Gemini 2.5 Pro under and over 200K.
        (
            "gcp.gemini",
            "gemini-2.5-pro",
            usage(100_000, 0, 0, 10_000, 5_000),
            0.275,
        ),
        (
            "gcp.gemini",
            "gemini-2.5-pro",
            usage(300_000, 100_000, 0, 0, 0),
            0.525,
        ),
    ];
    for (provider, model, u, want) in cases {
        let got = prices.cost(provider, model, &u);
        assert!(
            got.is_some_and(|g| (g - want).abs() < 1e-9),
            "{provider} {model} {u:?}: {got:?}, want {want}"
        );
    }
    let unknown = prices.cost("openai", "gpt-4o-audio-preview", &usage(M, 0, 0, M, 0));
    assert_eq!(unknown, None, "no price: no cost, never 0");
}

#[test]
fn a_broken_copy_of_the_shipped_file_names_the_field() {
    let broken = BUILTIN_PRICES_TOML.replacen("output = 50.0", "output = -50.0", 1);
    let err = Prices::from_toml(&broken).unwrap_err().to_string();
    assert!(
        err.contains("price[0].output = -50: must be a number >= 0"),
        "{err}"
    );
    let typo = BUILTIN_PRICES_TOML.replacen("cache_read = 1.0", "cache_reed = 1.0", 1);
    let err = Prices::from_toml(&typo).unwrap_err().to_string();
    assert!(
        err.contains("price[1].cache_reed = 1: unknown key"),
        "{err}"
    );
}
