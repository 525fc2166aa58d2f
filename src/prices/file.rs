//! The prices file (`prices.toml`): read from TOML field by field, validated whole.
//!
//! ```toml
//! as_of = "2026-12-02"                   # the date the figures were taken (optional)
//! sources = ["https://…/pricing"]        # where they come from (optional)
//! [provider."gcp.gemini"]
//! output_includes_reasoning = false      # Gemini reports thoughts apart from the output
//! [[price]]
//! provider = "anthropic"                 # or a list of providers
//! model = "claude-sonnet-4-5*"           # or a list of patterns; `*` matches anything
//! input = 3.0                            # USD per million tokens
//! cache_read = 0.30                      # optional, default: input
//! cache_write = 3.75                     # optional, default: input
//! output = 15.0
//! reasoning = 15.0                       # optional, default: output
//! output_includes_reasoning = true       # optional, default: the provider's
//! [[price.tier]]                         # optional: rates for prompts above a size
//! above_input_tokens = 200000
//! input = 6.0
//! output = 22.5
//! ```
//! Every bad field is reported with its name and value (`price[3].output = -1: must be a
//! number >= 0`), not only the first; entries are numbered from 0.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::{ModelPattern, Price, Prices, REASONING_APART, Rates, Tier};

const RATE_KEYS: [&str; 5] = ["input", "cache_read", "cache_write", "output", "reasoning"];

/// One bad field of a prices file, with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceFieldError {
    /// e.g. `price[3].output` or `price[1].tier[0].above_input_tokens`; empty for a file-level
    /// error.
    pub field: String,
    /// The value as TOML writes it; `None` when the field is missing.
    pub value: Option<String>,
    pub reason: String,
}

impl PriceFieldError {
    pub(super) fn file(reason: String) -> PriceFieldError {
        PriceFieldError {
            field: String::new(),
            value: None,
            reason,
        }
    }
}

impl fmt::Display for PriceFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.field.is_empty(), &self.value) {
            (true, _) => f.write_str(&self.reason),
            (false, None) => write!(f, "{}: {}", self.field, self.reason),
            (false, Some(value)) => write!(f, "{} = {value}: {}", self.field, self.reason),
        }
    }
}

/// Every bad field of a prices file, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("prices file {path}: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct PricesError {
    pub path: String,
    pub errors: Vec<PriceFieldError>,
}

type Errors = Vec<PriceFieldError>;

fn bad(
    field: impl Into<String>,
    value: &toml::Value,
    reason: impl Into<String>,
) -> PriceFieldError {
    PriceFieldError {
        field: field.into(),
        value: Some(show(value)),
        reason: reason.into(),
    }
}

fn missing(field: String, reason: &str) -> PriceFieldError {
    PriceFieldError {
        field,
        value: None,
        reason: reason.to_string(),
    }
}

/// A short rendering of a TOML value for an error message.
fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => {
            let shown: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", shown.join(", "))
        }
        toml::Value::Table(t) => {
            let keys: Vec<&str> = t.keys().map(String::as_str).collect();
            format!("{{{}}}", keys.join(", "))
        }
    }
}

/// The file as read: top-level facts, provider settings, and the entries that read well.
#[derive(Debug, Default)]
struct Wire {
    as_of: Option<String>,
    sources: Vec<String>,
    /// Provider → `output_includes_reasoning`.
    reasoning: BTreeMap<String, bool>,
    entries: Vec<Entry>,
}

/// One `[[price]]` that read without error.
#[derive(Debug)]
struct Entry {
    index: usize,
    providers: Vec<String>,
    /// (field name, pattern): `price[2].model` or `price[2].model[1]`
    models: Vec<(String, ModelPattern)>,
    rates: Rates,
    tiers: Vec<Tier>,
    output_includes_reasoning: Option<bool>,
}

pub(super) fn parse(text: &str, path: &str) -> Result<Prices, PricesError> {
    let fail = |errors: Errors| PricesError {
        path: path.to_string(),
        errors,
    };
    let table = toml::from_str::<toml::Table>(text).map_err(|e| {
        let reason = format!("not valid TOML{}: {}", at_line(text, &e), e.message());
        fail(vec![PriceFieldError::file(reason)])
    })?;
    let mut errors = Errors::new();
    let mut wire = Wire::default();
    for (key, value) in &table {
        match key.as_str() {
            "as_of" => wire.as_of = read_date(value, &mut errors),
            "sources" => wire.sources = read_strings("sources", value, &mut errors),
            "provider" => wire.reasoning = read_providers(value, &mut errors),
            "price" => wire.entries = read_entries(value, &mut errors),
            _ => errors.push(bad(
                key.as_str(),
                value,
                "unknown key (expected as_of, sources, [provider.NAME], [[price]])",
            )),
        }
    }
    let by_provider = compile(wire.entries, &wire.reasoning, &mut errors);
    if errors.is_empty() {
        Ok(Prices::new(by_provider, wire.as_of, wire.sources))
    } else {
        Err(fail(errors))
    }
}

/// ` at line L, column C` of a syntax error, when it has a position.
fn at_line(text: &str, e: &toml::de::Error) -> String {
    let Some(start) = e.span().map(|s| s.start) else {
        return String::new();
    };
    let before = text.get(..start).unwrap_or(text);
    let line = before.matches('\n').count().saturating_add(1);
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |l| l.chars().count())
        .saturating_add(1);
    format!(" at line {line}, column {column}")
}

/// `as_of`: a `YYYY-MM-DD` string or a TOML date.
fn read_date(value: &toml::Value, errors: &mut Errors) -> Option<String> {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) if d.time.is_none() && d.offset.is_none() => d.to_string(),
        other => {
            errors.push(bad("as_of", other, "must be a date, YYYY-MM-DD"));
            return None;
        }
    };
    if is_date(&text) {
        Some(text)
    } else {
        errors.push(bad("as_of", value, "must be a date, YYYY-MM-DD"));
        None
    }
}

fn is_date(text: &str) -> bool {
    let mut parts = text.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let number = |s: &str, len: usize| {
        if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u32>().ok()
        } else {
            None
        }
    };
    matches!(
        (number(y, 4), number(m, 2), number(d, 2)),
        (Some(_), Some(1..=12), Some(1..=31))
    )
}

/// A string or a list of non-empty strings without spaces (providers, sources).
fn read_strings(field: &str, value: &toml::Value, errors: &mut Errors) -> Vec<String> {
    let items = match value {
        toml::Value::String(_) => std::slice::from_ref(value),
        toml::Value::Array(items) => items.as_slice(),
        other => {
            errors.push(bad(field, other, "must be a string or a list of strings"));
            return Vec::new();
        }
    };
    if items.is_empty() {
        errors.push(bad(field, value, "must not be empty"));
    }
    let mut out = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let name = if value.is_array() {
            format!("{field}[{j}]")
        } else {
            field.to_string()
        };
        match item {
            toml::Value::String(s) if !s.is_empty() && !s.chars().any(char::is_whitespace) => {
                out.push(s.clone());
            }
            other => errors.push(bad(
                name,
                other,
                "must be a non-empty string without spaces",
            )),
        }
    }
    out
}

/// `[provider.NAME]` tables: `output_includes_reasoning` per provider.
fn read_providers(value: &toml::Value, errors: &mut Errors) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    let toml::Value::Table(providers) = value else {
        errors.push(bad("provider", value, "must be [provider.NAME] tables"));
        return out;
    };
    for (name, settings) in providers {
        let field = format!("provider.{name}");
        let toml::Value::Table(settings) = settings else {
            errors.push(bad(field, settings, "must be a table"));
            continue;
        };
        for (key, v) in settings {
            match (key.as_str(), v) {
                ("output_includes_reasoning", toml::Value::Boolean(b)) => {
                    out.insert(name.clone(), *b);
                }
                ("output_includes_reasoning", other) => {
                    errors.push(bad(
                        format!("{field}.{key}"),
                        other,
                        "must be true or false",
                    ));
                }
                _ => errors.push(bad(
                    format!("{field}.{key}"),
                    v,
                    "unknown key (expected output_includes_reasoning)",
                )),
            }
        }
    }
    out
}

/// `[[price]]` entries; each is read on its own, so one bad entry hides no other.
fn read_entries(value: &toml::Value, errors: &mut Errors) -> Vec<Entry> {
    let toml::Value::Array(items) = value else {
        errors.push(bad("price", value, "must be [[price]] tables"));
        return Vec::new();
    };
    let mut entries = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("price[{i}]");
        match item {
            toml::Value::Table(table) => {
                if let Some(entry) = read_entry(i, &field, table, errors) {
                    entries.push(entry);
                }
            }
            other => errors.push(bad(field, other, "must be a table")),
        }
    }
    entries
}

fn read_entry(i: usize, field: &str, table: &toml::Table, errors: &mut Errors) -> Option<Entry> {
    let before = errors.len();
    let mut providers = Vec::new();
    let mut models = Vec::new();
    let mut tiers = Vec::new();
    let mut output_includes_reasoning = None;
    for (key, value) in table {
        let name = format!("{field}.{key}");
        match key.as_str() {
            k if RATE_KEYS.contains(&k) => {}
            "provider" => providers = read_strings(&name, value, errors),
            "model" => models = read_models(&name, value, errors),
            "tier" => tiers = read_tiers(&name, value, errors),
            "output_includes_reasoning" => match value {
                toml::Value::Boolean(b) => output_includes_reasoning = Some(*b),
                other => errors.push(bad(name, other, "must be true or false")),
            },
            _ => errors.push(bad(
                name,
                value,
                "unknown key (expected provider, model, input, cache_read, cache_write, output, \
                 reasoning, output_includes_reasoning, [[price.tier]])",
            )),
        }
    }
    for required in ["provider", "model"] {
        if !table.contains_key(required) {
            errors.push(missing(format!("{field}.{required}"), "missing"));
        }
    }
    let rates = read_rates(field, table, errors);
    (errors.len() == before).then_some(Entry {
        index: i,
        providers,
        models,
        rates: rates?,
        tiers,
        output_includes_reasoning,
    })
}

fn read_models(
    field: &str,
    value: &toml::Value,
    errors: &mut Errors,
) -> Vec<(String, ModelPattern)> {
    let raw = read_strings(field, value, errors);
    let mut out = Vec::with_capacity(raw.len());
    for (j, pattern) in raw.iter().enumerate() {
        let name = if value.is_array() {
            format!("{field}[{j}]")
        } else {
            field.to_string()
        };
        match ModelPattern::parse(pattern) {
            Ok(p) => out.push((name, p)),
            Err(reason) => errors.push(bad(name, &toml::Value::String(pattern.clone()), reason)),
        }
    }
    out
}

/// The five rates of an entry or a tier; `input` and `output` are required.
fn read_rates(field: &str, table: &toml::Table, errors: &mut Errors) -> Option<Rates> {
    let mut get = |key: &str| {
        table
            .get(key)
            .and_then(|v| read_rate(format!("{field}.{key}"), v, errors))
    };
    let (input, cache_read, cache_write, output, reasoning) = (
        get("input"),
        get("cache_read"),
        get("cache_write"),
        get("output"),
        get("reasoning"),
    );
    for required in ["input", "output"] {
        if !table.contains_key(required) {
            errors.push(missing(
                format!("{field}.{required}"),
                "missing: every price needs input and output rates",
            ));
        }
    }
    Some(Rates {
        input: input?,
        cache_read,
        cache_write,
        output: output?,
        reasoning,
    })
}

fn read_rate(field: String, value: &toml::Value, errors: &mut Errors) -> Option<f64> {
    let n = match value {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        other => {
            errors.push(bad(
                field,
                other,
                "must be a number (USD per million tokens)",
            ));
            return None;
        }
    };
    if n.is_finite() && n >= 0.0 {
        Some(n)
    } else {
        errors.push(bad(field, value, "must be a number >= 0"));
        None
    }
}

fn read_tiers(field: &str, value: &toml::Value, errors: &mut Errors) -> Vec<Tier> {
    let toml::Value::Array(items) = value else {
        errors.push(bad(field, value, "must be [[price.tier]] tables"));
        return Vec::new();
    };
    let mut tiers: Vec<Tier> = Vec::with_capacity(items.len());
    for (k, item) in items.iter().enumerate() {
        let name = format!("{field}[{k}]");
        let toml::Value::Table(table) = item else {
            errors.push(bad(name, item, "must be a table"));
            continue;
        };
        if let Some(tier) = read_tier(&name, table, errors) {
            if tiers
                .iter()
                .any(|t| t.above_input_tokens == tier.above_input_tokens)
            {
                let shown =
                    toml::Value::Integer(i64::try_from(tier.above_input_tokens).unwrap_or(0));
                errors.push(bad(
                    format!("{name}.above_input_tokens"),
                    &shown,
                    "duplicate: another tier of this price starts there",
                ));
            }
            tiers.push(tier);
        }
    }
    tiers.sort_by_key(|t| t.above_input_tokens);
    tiers
}

fn read_tier(field: &str, table: &toml::Table, errors: &mut Errors) -> Option<Tier> {
    let before = errors.len();
    let mut above = None;
    for (key, value) in table {
        let name = format!("{field}.{key}");
        match (key.as_str(), value) {
            (k, _) if RATE_KEYS.contains(&k) => {}
            ("above_input_tokens", toml::Value::Integer(n)) if *n > 0 => {
                above = u64::try_from(*n).ok();
            }
            ("above_input_tokens", other) => {
                errors.push(bad(name, other, "must be a whole number of tokens > 0"));
            }
            _ => errors.push(bad(
                name,
                value,
                "unknown key (expected above_input_tokens, input, cache_read, cache_write, \
                 output, reasoning)",
            )),
        }
    }
    if !table.contains_key("above_input_tokens") {
        errors.push(missing(format!("{field}.above_input_tokens"), "missing"));
    }
    let rates = read_rates(field, table, errors);
    (errors.len() == before).then_some(Tier {
        above_input_tokens: above?,
        rates: rates?,
    })
}

/// One `Price` per (provider, pattern) of the entries; a (provider, pattern) priced twice is
/// an error.
fn compile(
    entries: Vec<Entry>,
    reasoning: &BTreeMap<String, bool>,
    errors: &mut Errors,
) -> BTreeMap<String, Vec<Price>> {
    let mut by_provider: BTreeMap<String, Vec<Price>> = BTreeMap::new();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for entry in entries {
        let unique: BTreeSet<&String> = entry.providers.iter().collect();
        for provider in unique {
            let includes = entry
                .output_includes_reasoning
                .or_else(|| reasoning.get(provider).copied())
                .unwrap_or_else(|| !REASONING_APART.contains(&provider.as_str()));
            for (field, pattern) in &entry.models {
                let key = (provider.clone(), pattern.as_str().to_ascii_lowercase());
                if let Some(first) = seen.get(&key) {
                    errors.push(bad(
                        field.clone(),
                        &toml::Value::String(pattern.as_str().to_string()),
                        format!("duplicate: price[{first}] already prices it for {provider}"),
                    ));
                    continue;
                }
                seen.insert(key, entry.index);
                by_provider
                    .entry(provider.clone())
                    .or_default()
                    .push(Price {
                        provider: provider.clone(),
                        pattern: pattern.clone(),
                        rates: entry.rates,
                        tiers: entry.tiers.clone(),
                        output_includes_reasoning: includes,
                        entry: entry.index,
                    });
            }
        }
    }
    by_provider
}
