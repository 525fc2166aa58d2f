//! Table-driven tests of price lookup, cost arithmetic and file validation.

use super::*;

fn usage(input: i64, cache_read: i64, cache_write: i64, output: i64, reasoning: i64) -> Usage {
    let some = |n: i64| (n != 0).then_some(n);
    Usage {
        input_tokens: Some(input),
        output_tokens: Some(output),
        cache_read_input_tokens: some(cache_read),
        cache_creation_input_tokens: some(cache_write),
        reasoning_output_tokens: some(reasoning),
    }
}

fn close(got: Option<f64>, want: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() < 1e-9)
}

const M: i64 = 1_000_000;

/// A small file with one entry per behaviour under test.
const SAMPLE: &str = r#"
as_of = "2026-12-02"
sources = ["https://example.com/pricing"]

[provider.gemini_like]
output_includes_reasoning = false

[[price]]
provider = "anthropic"
model = "claude-sonnet-4-5*"
input = 3
cache_read = 0.30
cache_write = 3.75
output = 15
[[price.tier]]
above_input_tokens = 200000
input = 6
cache_read = 0.60
cache_write = 7.50
output = 22.50

[[price]]
provider = "openai"
model = ["gpt-5", "gpt-5-20*"]
input = 1.25
cache_read = 0.125
output = 10

[[price]]
provider = "openai"
model = "gpt-5*"
input = 100
output = 100

[[price]]
provider = "openai"
model = ["gpt-5-mini", "gpt-5-mini-20*"]
input = 0.25
cache_read = 0.025
output = 2

[[price]]
provider = "openai"
model = "o-priced-reasoning"
input = 1
output = 4
reasoning = 2

[[price]]
provider = ["gcp.gemini", "gemini_like"]
model = "gemini-2.5-flash"
input = 0.30
cache_read = 0.03
output = 2.50

[[price]]
provider = "tiered"
model = "m"
input = 1
output = 1
[[price.tier]]
above_input_tokens = 1000
input = 3
output = 3
[[price.tier]]
above_input_tokens = 10
input = 2
output = 2
"#;

fn sample() -> Prices {
    Prices::from_toml(SAMPLE).unwrap()
}

#[test]
fn anthropic_charges_each_kind_of_token_at_its_rate() {
    let p = sample();
    let sonnet = "claude-sonnet-4-5-20250929";
    // Prompts of at most 200k tokens (the long-context tier starts above).
    const K: i64 = 100_000;
    // (input incl. cache, cache read, cache write, output) → USD
    let cases = [
        ((K, 0, 0, K), 0.3 + 1.5),
        ((K, 0, 0, 0), 0.3),
        ((0, 0, 0, M), 15.0),
        // 200k input of which 120k cache reads and 40k cache writes: 40k uncached.
        ((2 * K, 120_000, 40_000, 0), 0.12 + 0.036 + 0.15),
        // Only cache reads: a tenth of the input rate.
        ((K, K, 0, 0), 0.03),
        // Only cache writes: dearer than plain input.
        ((K, 0, K, 0), 0.375),
        // A whole 1M prompt is a long-context call: $6 in, $22.50 out.
        ((M, 0, 0, M), 28.5),
    ];
    for ((input, read, write, output), want) in cases {
        let got = p.cost("anthropic", sonnet, &usage(input, read, write, output, 0));
        assert!(
            close(got, want),
            "{input}/{read}/{write}/{output}: {got:?} != {want}"
        );
    }
}

#[test]
fn long_prompts_pay_the_tier_on_the_whole_call() {
    let p = sample();
    let sonnet = "claude-sonnet-4-5";
    // Exactly 200k is not above the threshold.
    let at = p.cost("anthropic", sonnet, &usage(200_000, 0, 0, M, 0));
    assert!(close(at, 0.6 + 15.0), "{at:?}");
    // Over it, input, cache and output rates all change; cached tokens count for the size.
    let over = p.cost("anthropic", sonnet, &usage(300_000, 250_000, 0, M, 0));
    assert!(
        close(over, 50_000.0 * 6.0 / 1e6 + 0.25 * 0.60 + 22.50),
        "{over:?}"
    );
    // The highest tier the prompt is above applies, whatever the file order.
    let tiered = |input| p.cost("tiered", "m", &usage(input, 0, 0, 0, 0));
    assert!(close(tiered(10), 10.0 / 1e6));
    assert!(close(tiered(11), 22.0 / 1e6));
    assert!(close(tiered(1001), 3003.0 / 1e6));
}

#[test]
fn openai_reasoning_is_inside_output_and_not_charged_twice() {
    let p = sample();
    // 1M prompt of which 400k cached; 1M completion of which 700k reasoning.
    let u = usage(M, 400_000, 0, M, 700_000);
    assert!(close(p.cost("openai", "gpt-5", &u), 0.75 + 0.05 + 10.0));
    // A separate reasoning rate splits the output count.
    let got = p.cost("openai", "o-priced-reasoning", &u);
    assert!(close(got, 0.6 + 0.4 + 0.3 * 4.0 + 0.7 * 2.0), "{got:?}");
    // More reasoning than output (hostile): never more than the output count is charged.
    let odd = usage(0, 0, 0, 100, 1_000);
    assert!(close(
        p.cost("openai", "o-priced-reasoning", &odd),
        200.0 / 1e6
    ));
}

#[test]
fn gemini_thoughts_are_added_to_output() {
    let p = sample();
    let u = usage(M, 500_000, 0, M, M);
    for provider in ["gcp.gemini", "gemini_like"] {
        let got = p.cost(provider, "gemini-2.5-flash", &u);
        assert!(close(got, 0.15 + 0.015 + 2.5 + 2.5), "{provider}: {got:?}");
    }
    let price = p.price_for("gcp.gemini", "gemini-2.5-flash").unwrap();
    assert!(!price.output_includes_reasoning);
    assert!(
        p.price_for("openai", "gpt-5")
            .unwrap()
            .output_includes_reasoning
    );
}

#[test]
fn missing_rates_fall_back_as_documented() {
    let p = Prices::from_toml(
        "[[price]]\nprovider = \"x\"\nmodel = \"m\"\ninput = 2\noutput = 8\n\
         [[price]]\nprovider = \"g\"\nmodel = \"m\"\ninput = 2\noutput = 8\n",
    )
    .unwrap();
    // cache reads and writes at the input rate, reasoning at the output rate.
    assert!(close(p.cost("x", "m", &usage(M, M, 0, 0, 0)), 2.0));
    assert!(close(p.cost("x", "m", &usage(M, 0, M, 0, 0)), 2.0));
    assert!(close(p.cost("x", "m", &usage(0, 0, 0, M, M)), 8.0));
    // A provider that counts reasoning apart: reasoning is extra output.
    let apart = Prices::from_toml(
        "[[price]]\nprovider = \"gcp.vertex_ai\"\nmodel = \"m\"\ninput = 2\noutput = 8\n",
    )
    .unwrap();
    assert!(close(
        apart.cost("gcp.vertex_ai", "m", &usage(0, 0, 0, M, M)),
        16.0
    ));
}

#[test]
fn no_price_or_no_counts_means_no_cost() {
    let p = sample();
    let u = usage(M, 0, 0, M, 0);
    assert_eq!(p.cost("anthropic", "claude-unknown-9", &u), None);
    assert_eq!(
        p.cost("mistral_ai", "gpt-5", &u),
        None,
        "prices are per provider"
    );
    assert_eq!(p.cost("openai", "", &u), None);
    assert_eq!(p.cost("openai", "gpt-5", &Usage::default()), None);
    let cache_only = Usage {
        cache_read_input_tokens: Some(M),
        ..Usage::default()
    };
    assert_eq!(p.cost("openai", "gpt-5", &cache_only), None);
    let output_only = Usage {
        output_tokens: Some(M),
        ..Usage::default()
    };
    assert!(close(p.cost("openai", "gpt-5", &output_only), 10.0));
    // A priced model with zero tokens costs 0: that is known, not unknown.
    assert!(close(p.cost("openai", "gpt-5", &usage(0, 0, 0, 0, 0)), 0.0));
    assert_eq!(Prices::default().cost("openai", "gpt-5", &u), None);
}

#[test]
fn dated_names_and_specific_patterns_find_the_right_price() {
    let p = sample();
    let cases = [
        ("openai", "gpt-5", "gpt-5"),
        ("openai", "GPT-5", "gpt-5"),
        ("openai", "gpt-5-2025-08-07", "gpt-5-20*"),
        ("openai", "gpt-5-mini", "gpt-5-mini"),
        ("openai", "gpt-5-mini-2025-08-07", "gpt-5-mini-20*"),
        // Only the broad pattern matches: it applies.
        ("openai", "gpt-5-nano", "gpt-5*"),
        (
            "anthropic",
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-5*",
        ),
        (
            "anthropic",
            "claude-sonnet-4-5@20250929",
            "claude-sonnet-4-5*",
        ),
    ];
    for (provider, model, want) in cases {
        let got = p.price_for(provider, model).map(|pr| pr.pattern.as_str());
        assert_eq!(got, Some(want), "{provider} {model}");
    }
}

#[test]
fn the_first_priced_model_of_a_list_is_used() {
    let p = sample();
    let u = usage(M, 0, 0, 0, 0);
    let models = |list: &[&'static str]| list.to_vec();
    let first = |list| p.cost_of_first("openai", models(list), &u);
    assert!(close(first(&["gpt-5-2025-08-07", "gpt-5-mini"]), 1.25));
    assert!(close(first(&["my-deployment", "gpt-5-mini"]), 0.25));
    assert_eq!(first(&["my-deployment", "other"]), None);
    assert_eq!(first(&[]), None);
}

#[test]
fn ties_go_to_the_exact_pattern_then_to_the_earlier_entry() {
    let p = Prices::from_toml(
        "[[price]]\nprovider = \"p\"\nmodel = [\"a*\", \"*a\"]\ninput = 1\noutput = 1\n\
         [[price]]\nprovider = \"p\"\nmodel = \"ab*\"\ninput = 2\noutput = 2\n\
         [[price]]\nprovider = \"p\"\nmodel = \"*ab\"\ninput = 3\noutput = 3\n\
         [[price]]\nprovider = \"p\"\nmodel = \"ab\"\ninput = 4\noutput = 4\n",
    )
    .unwrap();
    assert_eq!(
        p.price_for("p", "aa").map(|x| x.pattern.as_str()),
        Some("a*")
    );
    assert_eq!(
        p.price_for("p", "abxab").map(|x| x.pattern.as_str()),
        Some("ab*")
    );
    assert_eq!(
        p.price_for("p", "ab").map(|x| x.pattern.as_str()),
        Some("ab")
    );
}

#[test]
fn hostile_counts_never_panic_and_stay_finite() {
    let p = sample();
    let max = usage(i64::MAX, i64::MAX, i64::MAX, i64::MAX, i64::MAX);
    let negative = usage(-5, -1, i64::MIN, -7, -9);
    let more_cache_than_input = usage(10, i64::MAX, i64::MAX, 0, 0);
    for (provider, model) in [
        ("anthropic", "claude-sonnet-4-5"),
        ("openai", "gpt-5"),
        ("openai", "o-priced-reasoning"),
        ("gcp.gemini", "gemini-2.5-flash"),
        ("tiered", "m"),
    ] {
        for u in [&max, &negative, &more_cache_than_input] {
            let got = p.cost(provider, model, u);
            assert!(
                got.is_some_and(|c| c.is_finite() && c >= 0.0),
                "{model} {u:?}: {got:?}"
            );
        }
        assert!(close(p.cost(provider, model, &negative), 0.0), "{model}");
    }
    // Cache counts above the input count: no negative uncached input.
    let got = p.cost("anthropic", "claude-sonnet-4-5", &usage(100, 80, 80, 0, 0));
    assert!(close(got, (80.0 * 0.30 + 80.0 * 3.75) / 1e6), "{got:?}");
}

#[test]
fn summary_names_the_origin_and_the_providers() {
    let s = sample().summary();
    assert!(
        s.contains("(inline)") && s.contains("anthropic, gcp.gemini"),
        "{s}"
    );
    assert!(s.contains("as of 2026-12-02"), "{s}");
    assert!(Prices::default().summary().contains("no prices"));
    assert!(Prices::builtin().summary().starts_with("built-in: "));
    assert_eq!(sample().as_of(), Some("2026-12-02"));
    assert_eq!(sample().sources(), ["https://example.com/pricing"]);
}

#[test]
fn the_builtin_table_parses() {
    let p = Prices::from_toml(BUILTIN_PRICES_TOML).unwrap_or_else(|e| panic!("{e}"));
    assert!(!p.is_empty());
    assert_eq!(p.len(), Prices::builtin().len());
}

/// (file text, the field the error must name, words of the reason)
const BAD_FILES: &[(&str, &str, &str)] = &[
    (
        "[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput = 1\noutput = -1\n",
        "price[0].output = -1",
        "must be a number >= 0",
    ),
    (
        "[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput = \"3\"\noutput = 1\n",
        "price[0].input = \"3\"",
        "must be a number",
    ),
    (
        "[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput = nan\noutput = 1\n",
        "price[0].input = NaN",
        ">= 0",
    ),
    (
        "[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput = 1\noutput = inf\n",
        "price[0].output = inf",
        ">= 0",
    ),
    (
        "[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput = 1\n",
        "price[0].output: missing",
        "input and output",
    ),
    (
        "[[price]]\nmodel = \"m\"\ninput = 1\noutput = 1\n",
        "price[0].provider: missing",
        "missing",
    ),
    (
        "[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput = 1\noutput = 1\noutptu = 2\n",
        "price[0].outptu = 2",
        "unknown key",
    ),
    (
        "[[price]]\nprovider = \"p\"\nmodel = [\"m\", \"a b\"]\ninput = 1\noutput = 1\n",
        "price[0].model[1] = \"a b\"",
        "spaces",
    ),
    (
        "[[price]]\nprovider = \"p\"\nmodel = []\ninput = 1\noutput = 1\n",
        "price[0].model = []",
        "must not be empty",
    ),
    (
        "[[price]]\nprovider = \"\"\nmodel = \"m\"\ninput = 1\noutput = 1\n",
        "price[0].provider = \"\"",
        "non-empty",
    ),
    (
        "[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput = 1\noutput = 1\n\
         [[price]]\nprovider = \"p\"\nmodel = \"M\"\ninput = 1\noutput = 1\n",
        "price[1].model = \"M\"",
        "duplicate: price[0]",
    ),
    (
        "[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput = 1\noutput = 1\n\
         [[price.tier]]\nabove_input_tokens = 0\ninput = 1\noutput = 1\n",
        "price[0].tier[0].above_input_tokens = 0",
        "> 0",
    ),
    (
        "[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput = 1\noutput = 1\n\
         [[price.tier]]\nabove_input_tokens = 5\ninput = 1\noutput = 1\n\
         [[price.tier]]\nabove_input_tokens = 5\ninput = 2\n",
        "price[0].tier[1].output: missing",
        "missing",
    ),
    (
        "[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput = 1\noutput = 1\n\
         [[price.tier]]\nabove_input_tokens = 5\ninput = 1\noutput = 1\n\
         [[price.tier]]\nabove_input_tokens = 5\ninput = 2\noutput = 2\n",
        "price[0].tier[1].above_input_tokens = 5",
        "duplicate",
    ),
    (
        "[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput = 1\noutput = 1\n\
         [[price.tier]]\ninput = 1\noutput = 1\n",
        "price[0].tier[0].above_input_tokens: missing",
        "missing",
    ),
    (
        "as_of = \"yesterday\"\n",
        "as_of = \"yesterday\"",
        "YYYY-MM-DD",
    ),
    ("as_of = 2026-13-01\n", "", "not valid TOML at line 1"),
    ("prices = []\n", "prices = []", "unknown key"),
    (
        "[provider.openai]\noutput_includes_reasoning = \"yes\"\n",
        "provider.openai.output_includes_reasoning = \"yes\"",
        "true or false",
    ),
    (
        "[provider.openai]\nreasoning = true\n",
        "provider.openai.reasoning = true",
        "unknown key",
    ),
    ("[[price]\n", "", "not valid TOML at line 1"),
    ("price = 3\n", "price = 3", "[[price]] tables"),
];

#[test]
fn bad_files_name_the_field_and_value() {
    for (text, field, reason) in BAD_FILES {
        let err = Prices::from_toml(text).expect_err(text).to_string();
        assert!(err.contains(field), "{text:?}: {err}");
        assert!(err.contains(reason), "{text:?}: {err}");
        assert!(err.starts_with("prices file (inline): "), "{err}");
    }
}

#[test]
fn every_bad_field_is_reported_not_only_the_first() {
    let text = "[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput = -1\noutput = -2\n\
                [[price]]\nprovider = \"q\"\nmodel = \"m\"\ninput = 1\n";
    let err = Prices::from_toml(text).unwrap_err();
    let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["price[0].input", "price[0].output", "price[1].output"]
    );
}

#[test]
fn dates_may_be_toml_dates_and_load_reads_files() {
    let p = Prices::from_toml("as_of = 2026-12-02\n").unwrap();
    assert_eq!(p.as_of(), Some("2026-12-02"));
    assert!(p.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prices.toml");
    std::fs::write(&path, SAMPLE).unwrap();
    let loaded = Prices::load(&path).unwrap();
    assert!(
        loaded
            .summary()
            .starts_with(&format!("file {}", path.display()))
    );
    std::fs::write(&path, "[[price]]\nprovider = 1\n").unwrap();
    let err = Prices::load(&path).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()) && err.contains("price[0].provider = 1"));
    let err = Prices::load(&dir.path().join("absent.toml")).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}
