//! The policy file (`--policy`): TOML wire structs, validated whole into a `PolicySet`.
//!
//! ```toml
//! mode = "enforce"              # or "report"; default enforce
//! [[client]]
//! name = "code-sandbox"         # the Basic-auth user name; unique, no `:`
//! token_sha256 = "9f86d0…"      # optional: SHA-256 hex of the proxy password
//! sources = ["172.30.2.0/24"]   # optional: identifies the client when it sends no credentials
//! profile = "code"              # default: `default`
//! [profile.code]
//! allow = ["api.anthropic.com", "files.pythonhosted.org:443"]
//! deny = []
//! allow_private = ["10.0.0.2/32"]
//! ```
//! Every bad field is reported (name and value), not only the first. A file without
//! `[profile.default]` gets an implicit one that allows nothing: with a policy file, clients
//! that match no `[[client]]` are denied everything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;

use super::address::parse_cidr;
use super::pattern::HostRule;
use super::{ClientId, Target};
use crate::limits::CallLimits;

/// The name of the client (and profile) of connections that match no `[[client]]`.
pub const DEFAULT: &str = "default";

/// `mode`: `enforce` refuses; `report` lets policy denials through as `would_deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    Report,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Report => "report",
        }
    }
}

/// One bad field of a policy file, with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFieldError {
    /// e.g. `client[1].sources[0]` or `profile.code.allow[2]`; empty for a file-level error.
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for PolicyFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{} = {:?}: {}", self.field, self.value, self.reason)
        }
    }
}

/// Every bad field of a policy file, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy file {path}: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct PolicyFileError {
    pub path: String,
    pub errors: Vec<PolicyFieldError>,
}

/// One `[[client]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub name: Arc<str>,
    pub profile: Arc<str>,
    /// SHA-256 of the proxy password; `None`: identified by its name (or source) alone.
    token_sha256: Option<[u8; 32]>,
    /// Identify this client when it sends no credentials.
    pub sources: Vec<IpNet>,
}

impl Client {
    pub fn id(&self) -> ClientId {
        ClientId {
            name: self.name.clone(),
            profile: self.profile.clone(),
        }
    }

    /// The expected SHA-256 of the password, if the client requires one.
    pub fn token_sha256(&self) -> Option<&[u8; 32]> {
        self.token_sha256.as_ref()
    }
}

/// Which rule of a profile decides a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMatch<'a> {
    Allowed(&'a HostRule),
    Denied(&'a HostRule),
    NoRule,
}

/// One `[profile.NAME]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Profile {
    pub allow: Vec<HostRule>,
    pub deny: Vec<HostRule>,
    /// Private CIDRs this profile may reach.
    pub allow_private: Vec<IpNet>,
    /// `[profile.NAME.limits]`: requests, calls at once, tokens and cost per client.
    pub limits: CallLimits,
}

impl Profile {
    /// Deny rules win over allow rules; what nothing allows is not allowed.
    pub fn check(&self, target: &Target) -> RuleMatch<'_> {
        if let Some(rule) = self.deny.iter().find(|r| r.matches(target)) {
            return RuleMatch::Denied(rule);
        }
        match self.allow.iter().find(|r| r.matches(target)) {
            Some(rule) => RuleMatch::Allowed(rule),
            None => RuleMatch::NoRule,
        }
    }
}

/// A validated policy (a file, or the built-in open policy when there is no `--policy`).
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub mode: Mode,
    /// The file it came from; `None` for the built-in open policy.
    pub source: Option<PathBuf>,
    clients: Vec<Client>,
    profiles: BTreeMap<String, Profile>,
    builtin: bool,
}

impl PolicySet {
    /// No `--policy`: every client is `default`, which may reach any public host.
    pub fn open() -> PolicySet {
        let any = HostRule::parse("*").ok().into_iter().collect();
        let profile = Profile {
            allow: any,
            ..Profile::default()
        };
        PolicySet {
            mode: Mode::Enforce,
            source: None,
            clients: Vec::new(),
            profiles: BTreeMap::from([(DEFAULT.to_string(), profile)]),
            builtin: true,
        }
    }

    pub fn load(path: &Path) -> Result<PolicySet, PolicyFileError> {
        match std::fs::read_to_string(path) {
            Ok(text) => PolicySet::from_toml(&text, Some(path.to_path_buf())),
            Err(e) => Err(PolicyFileError {
                path: path.display().to_string(),
                errors: vec![file_error(format!("cannot read: {e}"))],
            }),
        }
    }

    /// Parses and validates a policy file's text; `source` is where it came from.
    pub fn from_toml(text: &str, source: Option<PathBuf>) -> Result<PolicySet, PolicyFileError> {
        let path = source
            .as_ref()
            .map_or_else(|| "(inline)".to_string(), |p| p.display().to_string());
        let mut errors = Vec::new();
        let wire = match toml::from_str::<toml::Table>(text) {
            Ok(table) => read_wire(table, &mut errors),
            Err(e) => {
                let reason = format!("not valid TOML{}: {}", at_line(text, &e), e.message());
                return Err(PolicyFileError {
                    path,
                    errors: vec![file_error(reason)],
                });
            }
        };
        let (clients, profiles) = validate(&wire, &mut errors);
        let mode = validate_mode(wire.mode.as_ref(), &mut errors);
        if !errors.is_empty() {
            return Err(PolicyFileError { path, errors });
        }
        Ok(PolicySet {
            mode,
            source,
            clients,
            profiles,
            builtin: false,
        })
    }

    /// Whether this is the built-in open policy (no `--policy`): credentials are ignored.
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// The `[[client]]` entries, in file order.
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// The profile of that name (`default` always exists).
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Client names in file order (for the start-up summary).
    pub fn client_names(&self) -> Vec<String> {
        self.clients.iter().map(|c| c.name.to_string()).collect()
    }

    /// The `[[client]]` of that name.
    pub fn client(&self, name: &str) -> Option<&Client> {
        self.clients.iter().find(|c| &*c.name == name)
    }

    /// The client of that name (for `llmtap policy check --client`), `None` if unknown.
    /// `default` always exists.
    pub fn client_named(&self, name: &str) -> Option<ClientId> {
        match self.client(name) {
            Some(client) => Some(client.id()),
            None if name == DEFAULT => Some(self.default_client()),
            None => None,
        }
    }

    /// The `default` client (no credentials, no matching source): profile `default`, or the
    /// profile of a `[[client]]` named `default`.
    pub fn default_client(&self) -> ClientId {
        match self.client(DEFAULT) {
            Some(client) => client.id(),
            None => ClientId {
                name: DEFAULT.into(),
                profile: DEFAULT.into(),
            },
        }
    }

    /// One line for the start-up banner and `/healthz`.
    pub fn summary(&self) -> String {
        if self.builtin {
            return "built-in: every client may reach any public host".into();
        }
        let path = self
            .source
            .as_ref()
            .map_or_else(|| "(inline)".to_string(), |p| p.display().to_string());
        let names = self.client_names();
        let clients = if names.is_empty() {
            "(none)".to_string()
        } else {
            names.join(", ")
        };
        let mut limited = Vec::new();
        for (name, profile) in &self.profiles {
            if profile.limits.is_empty() {
                continue;
            }
            let zeros = profile.limits.zeros();
            let warning = if zeros.is_empty() {
                String::new()
            } else {
                format!("; {} = 0 refuses every call", zeros.join(", "))
            };
            limited.push(format!("{name} ({}{warning})", profile.limits.summary()));
        }
        let limits = if limited.is_empty() {
            String::new()
        } else {
            format!(", limits {}", limited.join(", "))
        };
        format!(
            "file {path}, mode {}, clients {clients}{limits}",
            self.mode.as_str()
        )
    }
}

/// ` at line L, column C` of a syntax error, when it has a position.
fn at_line(text: &str, e: &toml::de::Error) -> String {
    let Some(start) = e.span().map(|s| s.start) else {
        return String::new();
    };
    let before = text.get(..start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" at line {line}, column {column}")
}

fn file_error(reason: String) -> PolicyFieldError {
    PolicyFieldError {
        field: String::new(),
        value: String::new(),
        reason,
    }
}

fn field_error(field: String, value: &str, reason: impl Into<String>) -> PolicyFieldError {
    PolicyFieldError {
        field,
        value: value.to_string(),
        reason: reason.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireClient {
    name: String,
    #[serde(default)]
    token_sha256: Option<String>,
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    profile: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireProfile {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    allow_private: Vec<String>,
    #[serde(default)]
    limits: Option<toml::Table>,
}

/// The file as read, each entry deserialised on its own so one bad entry hides no other.
#[derive(Debug, Default)]
struct Wire {
    mode: Option<String>,
    /// (index in the file, entry)
    clients: Vec<(usize, WireClient)>,
    profiles: Vec<(String, WireProfile)>,
    /// Every profile name the file declares, well-formed or not.
    profile_names: BTreeSet<String>,
}

fn read_wire(table: toml::Table, errors: &mut Vec<PolicyFieldError>) -> Wire {
    let mut wire = Wire::default();
    for (key, value) in table {
        match key.as_str() {
            "mode" => match value {
                toml::Value::String(s) => wire.mode = Some(s),
                other => errors.push(field_error(key, &show(&other), "must be a string")),
            },
            "client" => read_clients(value, &mut wire, errors),
            "profile" => read_profiles(value, &mut wire, errors),
            _ => errors.push(field_error(
                key.clone(),
                &show(&value),
                "unknown key (expected mode, [[client]], [profile.NAME])",
            )),
        }
    }
    wire
}

fn read_clients(value: toml::Value, wire: &mut Wire, errors: &mut Vec<PolicyFieldError>) {
    let toml::Value::Array(entries) = value else {
        errors.push(field_error(
            "client".into(),
            &show(&value),
            "must be [[client]] tables",
        ));
        return;
    };
    for (i, entry) in entries.into_iter().enumerate() {
        let shown = show(&entry);
        match WireClient::deserialize(entry) {
            Ok(client) => wire.clients.push((i, client)),
            Err(e) => errors.push(field_error(format!("client[{i}]"), &shown, e.message())),
        }
    }
}

fn read_profiles(value: toml::Value, wire: &mut Wire, errors: &mut Vec<PolicyFieldError>) {
    let toml::Value::Table(entries) = value else {
        errors.push(field_error(
            "profile".into(),
            &show(&value),
            "must be [profile.NAME] tables",
        ));
        return;
    };
    for (name, entry) in entries {
        wire.profile_names.insert(name.clone());
        let shown = show(&entry);
        match WireProfile::deserialize(entry) {
            Ok(profile) => wire.profiles.push((name, profile)),
            Err(e) => errors.push(field_error(format!("profile.{name}"), &shown, e.message())),
        }
    }
}

/// A short rendering of a TOML value for an error message.
fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
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

fn validate_mode(mode: Option<&String>, errors: &mut Vec<PolicyFieldError>) -> Mode {
    match mode.map(String::as_str) {
        None | Some("enforce") => Mode::Enforce,
        Some("report") => Mode::Report,
        Some(other) => {
            errors.push(field_error(
                "mode".into(),
                other,
                "must be \"enforce\" or \"report\"",
            ));
            Mode::Enforce
        }
    }
}

fn validate(
    wire: &Wire,
    errors: &mut Vec<PolicyFieldError>,
) -> (Vec<Client>, BTreeMap<String, Profile>) {
    let mut profiles = BTreeMap::new();
    for (name, profile) in &wire.profiles {
        if let Some(profile) = validate_profile(name, profile, errors) {
            profiles.insert(name.clone(), profile);
        }
    }
    // No `[profile.default]`: clients that match nothing may reach nothing.
    profiles.entry(DEFAULT.to_string()).or_default();
    let mut clients: Vec<Client> = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, wire_client) in &wire.clients {
        if let Some(&first) = seen.get(wire_client.name.as_str()) {
            errors.push(field_error(
                format!("client[{i}].name"),
                &wire_client.name,
                format!("duplicate: client[{first}] has that name"),
            ));
        }
        seen.entry(wire_client.name.as_str()).or_insert(*i);
        if let Some(client) = validate_client(*i, wire_client, &wire.profile_names, errors) {
            clients.push(client);
        }
    }
    (clients, profiles)
}

fn validate_client(
    i: usize,
    wire: &WireClient,
    profile_names: &BTreeSet<String>,
    errors: &mut Vec<PolicyFieldError>,
) -> Option<Client> {
    let before = errors.len();
    if let Err(reason) = check_client_name(&wire.name) {
        errors.push(field_error(format!("client[{i}].name"), &wire.name, reason));
    }
    let profile = wire.profile.as_deref().unwrap_or(DEFAULT);
    if profile != DEFAULT && !profile_names.contains(profile) {
        errors.push(field_error(
            format!("client[{i}].profile"),
            profile,
            format!("no [profile.{profile}] in the file"),
        ));
    }
    let token_sha256 = wire.token_sha256.as_deref().and_then(|hex| {
        let parsed = parse_sha256_hex(hex);
        if parsed.is_none() {
            errors.push(field_error(
                format!("client[{i}].token_sha256"),
                &format!("<hidden, {} characters>", hex.chars().count()),
                "must be 64 hex digits: the SHA-256 of the password (`printf %s PASSWORD | sha256sum`)",
            ));
        }
        parsed
    });
    let sources = cidr_list(&format!("client[{i}].sources"), &wire.sources, errors);
    (errors.len() == before).then(|| Client {
        name: wire.name.as_str().into(),
        profile: profile.into(),
        token_sha256,
        sources,
    })
}

fn check_client_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.contains(':') {
        return Err("must not contain `:` (it is the proxy user name)");
    }
    if name.trim() != name || name.chars().any(char::is_control) {
        return Err("must not contain control characters or surrounding spaces");
    }
    Ok(())
}

fn validate_profile(
    name: &str,
    wire: &WireProfile,
    errors: &mut Vec<PolicyFieldError>,
) -> Option<Profile> {
    let before = errors.len();
    if name.is_empty() {
        errors.push(field_error(
            "profile".into(),
            name,
            "a profile needs a name",
        ));
    }
    let profile = Profile {
        allow: rule_list(&format!("profile.{name}.allow"), &wire.allow, errors),
        deny: rule_list(&format!("profile.{name}.deny"), &wire.deny, errors),
        allow_private: cidr_list(
            &format!("profile.{name}.allow_private"),
            &wire.allow_private,
            errors,
        ),
        limits: wire
            .limits
            .as_ref()
            .map(|t| limits(&format!("profile.{name}.limits"), t, errors))
            .unwrap_or_default(),
    };
    (errors.len() == before).then_some(profile)
}

/// `[profile.NAME.limits]`: whole numbers >= 0, and dollars as a number >= 0.
fn limits(field: &str, table: &toml::Table, errors: &mut Vec<PolicyFieldError>) -> CallLimits {
    let mut limits = CallLimits::default();
    for (key, value) in table {
        let name = format!("{field}.{key}");
        let whole = |errors: &mut Vec<PolicyFieldError>| match value {
            toml::Value::Integer(n) if *n >= 0 => u64::try_from(*n).ok(),
            other => {
                errors.push(field_error(
                    name.clone(),
                    &show(other),
                    "must be a whole number >= 0 (0 refuses every call)",
                ));
                None
            }
        };
        match key.as_str() {
            "requests_per_minute" => limits.requests_per_minute = whole(errors),
            "concurrent_calls" => limits.concurrent_calls = whole(errors),
            "input_tokens_per_hour" => limits.input_tokens_per_hour = whole(errors),
            "output_tokens_per_hour" => limits.output_tokens_per_hour = whole(errors),
            "cost_usd_per_day" => {
                let dollars = match value {
                    toml::Value::Float(f) => Some(*f),
                    toml::Value::Integer(n) => Some(*n as f64),
                    _ => None,
                };
                match dollars {
                    Some(d) if d.is_finite() && d >= 0.0 => limits.cost_usd_per_day = Some(d),
                    _ => errors.push(field_error(
                        name,
                        &show(value),
                        "must be a number of dollars >= 0 (0 refuses every call)",
                    )),
                }
            }
            _ => errors.push(field_error(
                name,
                &show(value),
                "unknown limit (expected requests_per_minute, concurrent_calls, input_tokens_per_hour, output_tokens_per_hour, cost_usd_per_day)",
            )),
        }
    }
    limits
}

fn rule_list(field: &str, raw: &[String], errors: &mut Vec<PolicyFieldError>) -> Vec<HostRule> {
    let mut rules = Vec::with_capacity(raw.len());
    for (j, pattern) in raw.iter().enumerate() {
        match HostRule::parse(pattern) {
            Ok(rule) => rules.push(rule),
            Err(reason) => errors.push(field_error(format!("{field}[{j}]"), pattern, reason)),
        }
    }
    rules
}

fn cidr_list(field: &str, raw: &[String], errors: &mut Vec<PolicyFieldError>) -> Vec<IpNet> {
    let mut nets = Vec::with_capacity(raw.len());
    for (j, cidr) in raw.iter().enumerate() {
        match parse_cidr(cidr) {
            Ok(net) => nets.push(net),
            Err(reason) => errors.push(field_error(format!("{field}[{j}]"), cidr, reason)),
        }
    }
    nets
}

/// 64 hex digits (any case) → 32 bytes.
fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *byte = (hex_digit(*hi)? << 4) | hex_digit(*lo)?;
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sha256("test")
    pub(crate) const TEST_SHA: &str =
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    const EXAMPLE: &str = r#"
mode = "report"
[[client]]
name = "browser-sandbox"
token_sha256 = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
sources = ["172.30.1.0/24"]
profile = "browse"
[[client]]
name = "code-sandbox"
profile = "code"
[profile.browse]
allow = ["*"]
deny = ["*.internal"]
[profile.code]
allow = ["api.anthropic.com", "files.pythonhosted.org:443"]
allow_private = ["10.0.0.2/32"]
"#;

    #[test]
    fn example_file_loads() {
        let set = PolicySet::from_toml(EXAMPLE, Some("/x/policy.toml".into())).unwrap();
        assert_eq!(set.mode, Mode::Report);
        assert_eq!(set.client_names(), ["browser-sandbox", "code-sandbox"]);
        let browser = set.client("browser-sandbox").unwrap();
        assert_eq!(browser.token_sha256().map(|t| t[0]), Some(0x9f));
        assert_eq!(browser.sources[0].to_string(), "172.30.1.0/24");
        assert_eq!(&*set.client_named("code-sandbox").unwrap().profile, "code");
        assert_eq!(set.client_named("nobody"), None);
        assert_eq!(set.client_named("default"), Some(set.default_client()));
        assert_eq!(&*set.default_client().profile, "default");
        // No [profile.default]: the implicit one allows nothing.
        assert_eq!(set.profile("default"), Some(&Profile::default()));
        assert_eq!(
            set.summary(),
            "file /x/policy.toml, mode report, clients browser-sandbox, code-sandbox"
        );
        assert!(!set.is_builtin());
    }

    #[test]
    fn open_policy_allows_any_public_host_for_default() {
        let set = PolicySet::open();
        assert!(set.is_builtin());
        assert_eq!(set.mode, Mode::Enforce);
        assert_eq!(set.source, None);
        assert!(set.client_names().is_empty());
        let profile = set.profile("default").unwrap();
        assert!(matches!(
            profile.check(&Target::new("example.com", 443)),
            RuleMatch::Allowed(_)
        ));
        assert_eq!(
            set.summary(),
            "built-in: every client may reach any public host"
        );
    }

    #[test]
    fn client_named_default_overrides_the_default_profile() {
        let text =
            "[[client]]\nname = \"default\"\nprofile = \"p\"\n[profile.p]\nallow = [\"*\"]\n";
        let set = PolicySet::from_toml(text, None).unwrap();
        assert_eq!(&*set.default_client().profile, "p");
        assert_eq!(
            set.summary(),
            "file (inline), mode enforce, clients default"
        );
        let empty = PolicySet::from_toml("", None).unwrap();
        assert_eq!(
            empty.summary(),
            "file (inline), mode enforce, clients (none)"
        );
        assert_eq!(&*empty.default_client().name, "default");
    }

    #[test]
    fn every_bad_field_is_named_with_its_value() {
        let text = r#"
mode = "strict"
colour = "blue"
[[client]]
name = "a"
profile = "code"
[[client]]
name = "b:c"
token_sha256 = "hunter2"
sources = ["172.30.1.0/24", "10.0.0.0/33"]
profile = "nope"
[[client]]
name = "a"
profile = "code"
[[client]]
name = "d"
tokn = "x"
[[client]]
name = ""
[profile.code]
allow = ["api.anthropic.com", "ok.com", "a.*.com", "x.com:0"]
deny = ["*."]
allow_private = ["10.0.0.1/8"]
[profile.weird]
alow = ["x"]
"#;
        let err = PolicySet::from_toml(text, Some("/p.toml".into())).unwrap_err();
        let got: Vec<(String, String)> = err
            .errors
            .iter()
            .map(|e| (e.field.clone(), e.value.clone()))
            .collect();
        let want = [
            ("colour", "blue"),
            ("client[3]", "{name, tokn}"),
            ("profile.weird", "{alow}"),
            ("profile.code.allow[2]", "a.*.com"),
            ("profile.code.allow[3]", "x.com:0"),
            ("profile.code.deny[0]", "*."),
            ("profile.code.allow_private[0]", "10.0.0.1/8"),
            ("client[1].name", "b:c"),
            ("client[1].profile", "nope"),
            ("client[1].token_sha256", "<hidden, 7 characters>"),
            ("client[1].sources[1]", "10.0.0.0/33"),
            ("client[2].name", "a"),
            ("client[4].name", ""),
            ("mode", "strict"),
        ];
        for (field, value) in want {
            assert!(
                got.contains(&(field.to_string(), value.to_string())),
                "missing {field} = {value:?} in {got:#?}"
            );
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
        let text = err.to_string();
        assert!(text.starts_with("policy file /p.toml: "), "{text}");
        assert!(
            text.contains(r#"client[1].sources[1] = "10.0.0.0/33": not a CIDR"#),
            "{text}"
        );
        assert!(text.contains("tokn"), "{text}");
        assert!(
            text.contains("duplicate: client[0] has that name"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn wrong_shapes_and_syntax_are_reported() {
        let cases = [
            ("mode = 1", "mode = \"1\": must be a string"),
            (
                "client = \"x\"",
                "client = \"x\": must be [[client]] tables",
            ),
            (
                "profile = [1]",
                "profile = \"[1]\": must be [profile.NAME] tables",
            ),
            ("[[client]]\nprofile = \"default\"", "missing field `name`"),
            ("[profile.p]\nallow = \"*\"", "profile.p = \"{allow}\""),
            ("mode = ", "not valid TOML"),
        ];
        for (text, want) in cases {
            let err = PolicySet::from_toml(text, None).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        let err = PolicySet::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn sha256_hex_parses_any_case() {
        assert!(parse_sha256_hex(TEST_SHA).is_some());
        assert_eq!(
            parse_sha256_hex(&TEST_SHA.to_uppercase()),
            parse_sha256_hex(TEST_SHA)
        );
        assert!(parse_sha256_hex(&TEST_SHA[1..]).is_none());
        assert!(parse_sha256_hex(&format!("{}g", &TEST_SHA[1..])).is_none());
    }
}
