//! What a call costs (`llmtap.cost.usd`): `prices.toml` rates applied to a call's `Usage`.
//!
//! A price is looked up by provider (`gen_ai.provider.name`, exact) and model (a `*` glob,
//! case-insensitive); where several patterns of the provider match, the most specific (most
//! literal characters) wins, ties going to the earlier entry. Rates are USD per million
//! tokens. Each kind of token is charged once:
//! - uncached input (`input − cache_read − cache_write`, never below 0) at `input`,
//! - cached reads at `cache_read` (absent: at `input`),
//! - cache writes at `cache_write` (absent: at `input`),
//! - visible output at `output`, reasoning at `reasoning` (absent: at `output`). Where the
//!   provider's output count already includes reasoning (`output_includes_reasoning`, true
//!   for every provider but `gcp.gemini` and `gcp.vertex_ai`), reasoning is taken out of the
//!   output count before both are charged, so nothing is counted twice.
//!
//! A `[[price.tier]]` replaces all rates of a call whose prompt (input, cached reads and cache
//! writes) is above its `above_input_tokens`; the highest such tier applies.
// Token counts come from upstreams: no arithmetic on them may overflow and no index may panic.
#![cfg_attr(
    not(test),
    deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)
)]

mod file;
mod pattern;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use file::{PriceFieldError, PricesError};
pub use pattern::ModelPattern;

use crate::providers::Usage;

/// The prices file shipped with llmtap, used when the config directory has none.
pub const BUILTIN_PRICES_TOML: &str = include_str!("../../addons-config/prices.toml");

/// Providers whose output count leaves reasoning out (Gemini's `candidatesTokenCount` does
/// not include `thoughtsTokenCount`): the default of `output_includes_reasoning` is false
/// for them, true for every other provider.
pub const REASONING_APART: [&str; 2] = ["gcp.gemini", "gcp.vertex_ai"];

/// Tokens per unit of the rates.
const PER: f64 = 1_000_000.0;

/// One set of rates, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub input: f64,
    /// `None`: cached reads cost the input rate.
    pub cache_read: Option<f64>,
    /// `None`: cache writes cost the input rate.
    pub cache_write: Option<f64>,
    pub output: f64,
    /// `None`: reasoning costs the output rate.
    pub reasoning: Option<f64>,
}

/// Rates for calls whose prompt is above a size.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    /// The tier applies when the prompt has more tokens than this.
    pub above_input_tokens: u64,
    pub rates: Rates,
}

/// One `[[price]]` entry for one provider and one model pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub provider: String,
    pub pattern: ModelPattern,
    pub rates: Rates,
    /// Ascending by `above_input_tokens`.
    pub tiers: Vec<Tier>,
    pub output_includes_reasoning: bool,
    /// Index of the `[[price]]` in the file.
    pub entry: usize,
}

/// A validated prices file (or the built-in one).
#[derive(Debug, Clone, Default)]
pub struct Prices {
    /// Provider → its prices, in file order.
    by_provider: BTreeMap<String, Vec<Price>>,
    as_of: Option<String>,
    sources: Vec<String>,
    /// The file it came from; `None` for the built-in table or inline text.
    source: Option<PathBuf>,
    builtin: bool,
}

impl Prices {
    /// Parses and validates a prices file's text; every bad field is reported.
    pub fn from_toml(text: &str) -> Result<Prices, PricesError> {
        file::parse(text, "(inline)")
    }

    /// Reads and validates a prices file.
    pub fn load(path: &Path) -> Result<Prices, PricesError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PricesError {
            path: label.clone(),
            errors: vec![PriceFieldError::file(format!("cannot read: {e}"))],
        })?;
        let mut prices = file::parse(&text, &label)?;
        prices.source = Some(path.to_path_buf());
        Ok(prices)
    }

    /// The table shipped with llmtap (`addons-config/prices.toml`).
    pub fn builtin() -> Prices {
        // The builtin file is tested; an error here can only come from editing it.
        let mut prices = Prices::from_toml(BUILTIN_PRICES_TOML).unwrap_or_default();
        prices.builtin = true;
        prices
    }

    pub(crate) fn new(
        by_provider: BTreeMap<String, Vec<Price>>,
        as_of: Option<String>,
        sources: Vec<String>,
    ) -> Prices {
        Prices {
            by_provider,
            as_of,
            sources,
            source: None,
            builtin: false,
        }
    }

    /// USD the usage costs, or `None` when no price matches or the usage has neither an
    /// input nor an output count (unknown is not free).
    pub fn cost(&self, provider: &str, model: &str, usage: &Usage) -> Option<f64> {
        if usage.input_tokens.is_none() && usage.output_tokens.is_none() {
            return None;
        }
        self.price_for(provider, model)?.cost(usage)
    }

    /// The cost by the first of `models` that has a price (say the response's model, then the
    /// request's): `None` when none has one, or as [`Prices::cost`].
    pub fn cost_of_first<'a>(
        &self,
        provider: &str,
        models: impl IntoIterator<Item = &'a str>,
        usage: &Usage,
    ) -> Option<f64> {
        models
            .into_iter()
            .find(|m| self.price_for(provider, m).is_some())
            .and_then(|m| self.cost(provider, m, usage))
    }

    /// The price that applies to a provider's model: the most specific matching pattern.
    pub fn price_for(&self, provider: &str, model: &str) -> Option<&Price> {
        let model = pattern::lower(model);
        let mut best: Option<&Price> = None;
        for price in self.by_provider.get(provider)? {
            if !price.pattern.matches(&model) {
                continue;
            }
            let better = best.is_none_or(|b| {
                let (new, old) = (&price.pattern, &b.pattern);
                new.specificity() > old.specificity()
                    || (new.specificity() == old.specificity() && new.is_exact() && !old.is_exact())
            });
            if better {
                best = Some(price);
            }
        }
        best
    }

    /// Number of (provider, pattern) prices.
    pub fn len(&self) -> usize {
        self.by_provider.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_provider.is_empty()
    }

    /// The providers that have prices.
    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.by_provider.keys().map(String::as_str)
    }

    /// Every price, by provider then file order.
    pub fn iter(&self) -> impl Iterator<Item = &Price> {
        self.by_provider.values().flatten()
    }

    /// The file's `as_of` (the date its figures were taken), if it says.
    pub fn as_of(&self) -> Option<&str> {
        self.as_of.as_deref()
    }

    /// The file's `sources` (where the figures come from).
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        let origin = match (&self.source, self.builtin) {
            (Some(path), _) => format!("file {}", path.display()),
            (None, true) => "built-in".to_string(),
            (None, false) => "(inline)".to_string(),
        };
        if self.is_empty() {
            return format!("{origin}: no prices, calls get no cost");
        }
        let providers: Vec<&str> = self.providers().collect();
        let as_of = self
            .as_of
            .as_deref()
            .map_or_else(String::new, |d| format!(", figures as of {d}"));
        format!(
            "{origin}: {} model prices for {}{as_of}",
            self.len(),
            providers.join(", ")
        )
    }
}

/// A usage's counts, negative or absent ones as 0.
#[derive(Debug, Clone, Copy)]
struct Tokens {
    input: u64,
    cache_read: u64,
    cache_write: u64,
    output: u64,
    reasoning: u64,
}

impl Tokens {
    fn of(usage: &Usage) -> Tokens {
        let count = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        Tokens {
            input: count(usage.input_tokens),
            cache_read: count(usage.cache_read_input_tokens),
            cache_write: count(usage.cache_creation_input_tokens),
            output: count(usage.output_tokens),
            reasoning: count(usage.reasoning_output_tokens),
        }
    }

    /// The prompt size that picks a tier: the input count (which includes cached tokens), or
    /// the cached counts if an upstream reported less input than that.
    fn prompt(&self) -> u64 {
        self.input
            .max(self.cache_read.saturating_add(self.cache_write))
    }
}

impl Price {
    /// USD the usage costs at this price (`None` only if the sum is not finite).
    pub fn cost(&self, usage: &Usage) -> Option<f64> {
        let tokens = Tokens::of(usage);
        let rates = self.rates_for(tokens.prompt());
        let usd = rates.charge(&tokens, self.output_includes_reasoning);
        usd.is_finite().then_some(usd)
    }

    /// The rates for a prompt of that many tokens: the highest tier it is above, else the base.
    pub fn rates_for(&self, prompt_tokens: u64) -> &Rates {
        self.tiers
            .iter()
            .rev()
            .find(|t| prompt_tokens > t.above_input_tokens)
            .map_or(&self.rates, |t| &t.rates)
    }
}

impl Rates {
    fn charge(&self, t: &Tokens, output_includes_reasoning: bool) -> f64 {
        let usd = |tokens: u64, rate: f64| tokens as f64 * rate / PER;
        let uncached = t
            .input
            .saturating_sub(t.cache_read)
            .saturating_sub(t.cache_write);
        let (visible, reasoning) = if output_includes_reasoning {
            let reasoning = t.reasoning.min(t.output);
            (t.output.saturating_sub(reasoning), reasoning)
        } else {
            (t.output, t.reasoning)
        };
        usd(uncached, self.input)
            + usd(t.cache_read, self.cache_read.unwrap_or(self.input))
            + usd(t.cache_write, self.cache_write.unwrap_or(self.input))
            + usd(visible, self.output)
            + usd(reasoning, self.reasoning.unwrap_or(self.output))
    }
}
