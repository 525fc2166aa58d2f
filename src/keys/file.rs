//! The keys file: which real key goes to which exact host, for which clients, replacing which
//! sentinel. Validated whole; a key's value is never printed, only where it came from.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// The value sandboxes hold when an entry names no `sentinel`.
pub const DEFAULT_SENTINEL: &str = "llmtap-managed";
/// A key file larger than this is not a key.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("keys file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("keys file {source_name}: {reason}")]
    Toml { source_name: String, reason: String },
    #[error("keys file {source_name}: {}", .problems.join("; "))]
    Invalid {
        source_name: String,
        problems: Vec<String>,
    },
}

/// A real key. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Arc<str>);

impl SecretKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Where a key came from, for the start-up summary and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(String),
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env(name) => write!(f, "from_env {name}"),
            KeySource::File(path) => write!(f, "from_file {}", path.display()),
        }
    }
}

/// One `[[key]]`.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// `key[0] (api.anthropic.com)`: how errors and summaries name it.
    pub label: String,
    /// The exact host the key may ever be sent to (lower case).
    pub host: String,
    pub sentinel: String,
    pub require_sentinel: bool,
    /// `None`: every client; else only these `[[client]]` names.
    pub clients: Option<Vec<Arc<str>>>,
    pub source: KeySource,
    pub secret: SecretKey,
}

impl KeyEntry {
    pub fn is_for_client(&self, client: &str) -> bool {
        self.clients
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| &**n == client))
    }
}

/// Every key llmtap holds; replaced whole on reload.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    entries: Vec<KeyEntry>,
    /// The file it came from; `None` when no `--keys` was given.
    pub source: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    key: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    host: String,
    from_env: Option<String>,
    from_file: Option<PathBuf>,
    sentinel: Option<String>,
    #[serde(default)]
    require_sentinel: bool,
    clients: Option<Vec<String>>,
}

impl KeySet {
    /// Reads `path` and every key source it names (environment and files).
    pub fn load(path: &Path) -> Result<KeySet, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let env = |name: &str| std::env::var(name).ok();
        let mut set = KeySet::from_toml(&text, &path.display().to_string(), &env)?;
        set.source = Some(path.to_path_buf());
        Ok(set)
    }

    /// Parses and validates a keys file; `env` looks up `from_env` names.
    pub fn from_toml(
        text: &str,
        source_name: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<KeySet, KeysError> {
        let file: KeysFile = toml::from_str(text).map_err(|e| KeysError::Toml {
            source_name: source_name.to_string(),
            reason: e.to_string(),
        })?;
        let mut problems = Vec::new();
        let mut entries = Vec::with_capacity(file.key.len());
        for (index, raw) in file.key.into_iter().enumerate() {
            match entry(index, raw, env) {
                Ok(entry) => entries.push(entry),
                Err(mut why) => problems.append(&mut why),
            }
        }
        problems.extend(overlaps(&entries));
        if !problems.is_empty() {
            return Err(KeysError::Invalid {
                source_name: source_name.to_string(),
                problems,
            });
        }
        Ok(KeySet {
            entries,
            source: None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    /// Entries for exactly this host.
    pub fn for_host<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a KeyEntry> + 'a {
        self.entries.iter().filter(move |e| e.host == host)
    }

    /// The entry that serves `client` on `host`: one naming the client, else one for every client.
    pub fn granted(&self, host: &str, client: &str) -> Option<&KeyEntry> {
        let for_host = || self.entries.iter().filter(|e| e.host == host);
        let named = for_host().find(|e| {
            e.clients
                .as_ref()
                .is_some_and(|names| names.iter().any(|n| &**n == client))
        });
        named.or_else(|| for_host().find(|e| e.clients.is_none()))
    }

    /// True when `value` is the sentinel of some entry (of any host).
    pub fn is_any_sentinel(&self, value: &str) -> bool {
        self.entries.iter().any(|e| e.sentinel == value)
    }

    /// Names every `clients` entry the policy does not know.
    pub fn unknown_clients(&self, known: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut unknown = Vec::new();
        for entry in &self.entries {
            for name in entry.clients.iter().flatten() {
                if !known(name) {
                    unknown.push(format!(
                        "{}: clients names {name:?}, which is no [[client]] of the policy",
                        entry.label
                    ));
                }
            }
        }
        unknown
    }

    /// One line for logs: hosts, clients and sources, never a value.
    pub fn summary(&self) -> String {
        if self.entries.is_empty() {
            return "no keys".to_string();
        }
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|e| {
                let clients = e
                    .clients
                    .as_ref()
                    .map_or_else(|| "every client".to_string(), |c| c.join(","));
                let required = if e.require_sentinel {
                    ", sentinel required"
                } else {
                    ""
                };
                format!("{} for {clients} ({}{required})", e.host, e.source)
            })
            .collect();
        format!("{} key(s): {}", self.entries.len(), parts.join("; "))
    }
}

fn entry(
    index: usize,
    raw: RawKey,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<KeyEntry, Vec<String>> {
    let host = raw.host.trim().to_ascii_lowercase();
    let label = format!("key[{index}] ({host})");
    let mut problems = Vec::new();
    if let Err(why) = check_host(&host) {
        problems.push(format!("key[{index}].host = {:?}: {why}", raw.host));
    }
    let sentinel = raw.sentinel.unwrap_or_else(|| DEFAULT_SENTINEL.to_string());
    if let Err(why) = check_token(&sentinel) {
        problems.push(format!("{label}.sentinel = {sentinel:?}: {why}"));
    }
    let clients = match raw.clients {
        None => None,
        Some(names) if names.is_empty() => {
            problems.push(format!(
                "{label}.clients is empty: leave it out for every client"
            ));
            None
        }
        Some(names) => Some(names.iter().map(|n| Arc::from(n.trim())).collect()),
    };
    let source = match (raw.from_env, raw.from_file) {
        (Some(name), None) => Some(KeySource::Env(name)),
        (None, Some(path)) => Some(KeySource::File(path)),
        (Some(_), Some(_)) => {
            problems.push(format!("{label}: give from_env or from_file, not both"));
            None
        }
        (None, None) => {
            problems.push(format!(
                "{label}: needs from_env or from_file (a key is never written in the keys file)"
            ));
            None
        }
    };
    let secret = source
        .as_ref()
        .and_then(|source| match read_secret(source, env) {
            Ok(secret) => Some(secret),
            Err(why) => {
                problems.push(format!("{label}: {source}: {why}"));
                None
            }
        });
    let secret = secret.and_then(|secret| {
        if secret.expose() == sentinel {
            problems.push(format!("{label}: the key's value is its own sentinel"));
            None
        } else {
            Some(secret)
        }
    });
    match (source, secret) {
        (Some(source), Some(secret)) if problems.is_empty() => Ok(KeyEntry {
            label,
            host,
            sentinel,
            require_sentinel: raw.require_sentinel,
            clients,
            source,
            secret,
        }),
        _ => Err(problems),
    }
}

fn read_secret(
    source: &KeySource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretKey, String> {
    let value = match source {
        KeySource::Env(name) => env(name).ok_or_else(|| "is not set".to_string())?,
        KeySource::File(path) => read_key_file(path)?,
    };
    let value = value.trim();
    if value.is_empty() {
        return Err("is empty".to_string());
    }
    check_token(value)?;
    Ok(SecretKey(Arc::from(value)))
}

fn read_key_file(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!("is larger than {MAX_KEY_FILE_BYTES} bytes"));
    }
    Ok(text)
}

/// A credential must fit a header value and a query parameter unchanged: visible ASCII only.
fn check_token(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".to_string());
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "may hold only visible ASCII characters (no spaces or line breaks)".to_string(),
        );
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("is empty");
    }
    if host.contains('*') {
        return Err("must be one exact host, not a pattern");
    }
    if host.contains("://") || host.contains('/') {
        return Err("must be a host name, not a URL");
    }
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err("must not name a port");
    }
    let valid = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
    if !valid || host.starts_with('.') || host.ends_with('.') {
        return Err("is not a valid host name");
    }
    Ok(())
}

/// Two entries that could both serve one client on one host make the swap ambiguous.
fn overlaps(entries: &[KeyEntry]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen_all: BTreeSet<&str> = BTreeSet::new();
    let mut seen_named: BTreeSet<(&str, &str)> = BTreeSet::new();
    for entry in entries {
        match &entry.clients {
            None => {
                if !seen_all.insert(&entry.host) {
                    problems.push(format!(
                        "{}: a second key for every client of {}; give one of them `clients`",
                        entry.label, entry.host
                    ));
                }
            }
            Some(names) => {
                for name in names {
                    if !seen_named.insert((&entry.host, name)) {
                        problems.push(format!(
                            "{}: client {name:?} already has a key for {}",
                            entry.label, entry.host
                        ));
                    }
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn write_key(dir: &Path, name: &str, value: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, value).unwrap();
        path
    }

    #[test]
    fn entries_load_from_files_with_defaults_and_never_show_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_key(dir.path(), "a", "sk-ant-real-value-123\n");
        let o = write_key(dir.path(), "o", "  sk-proj-real-value-456  ");
        let text = format!(
            r#"
            [[key]]
            host = "API.Anthropic.com"
            from_file = "{}"
            require_sentinel = true
            clients = ["code-sandbox"]
            [[key]]
            host = "api.openai.com"
            from_file = "{}"
            sentinel = "openai-sentinel"
            "#,
            a.display(),
            o.display()
        );
        let set = KeySet::from_toml(&text, "keys.toml", &no_env).unwrap();
        let first = &set.entries()[0];
        assert_eq!(first.host, "api.anthropic.com");
        assert_eq!(first.secret.expose(), "sk-ant-real-value-123");
        assert_eq!(first.sentinel, DEFAULT_SENTINEL);
        assert!(first.require_sentinel);
        assert_eq!(set.entries()[1].secret.expose(), "sk-proj-real-value-456");
        assert_eq!(set.entries()[1].sentinel, "openai-sentinel");
        let shown = format!("{set:?} {}", set.summary());
        assert!(!shown.contains("real-value"), "{shown}");
        assert!(
            shown.contains("api.anthropic.com for code-sandbox"),
            "{shown}"
        );
        assert!(set.granted("api.anthropic.com", "code-sandbox").is_some());
        assert!(set.granted("api.anthropic.com", "browser").is_none());
        assert!(set.granted("api.openai.com", "anyone").is_some());
        assert!(set.granted("x.api.openai.com", "anyone").is_none());
    }

    #[test]
    fn a_client_named_entry_wins_over_the_one_for_everybody() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_key(dir.path(), "a", "key-for-all");
        let b = write_key(dir.path(), "b", "key-for-code");
        let text = format!(
            "[[key]]\nhost = \"h.com\"\nfrom_file = \"{}\"\n[[key]]\nhost = \"h.com\"\nfrom_file = \"{}\"\nclients = [\"code\"]\n",
            a.display(),
            b.display()
        );
        let set = KeySet::from_toml(&text, "k", &no_env).unwrap();
        let code = set.granted("h.com", "code").unwrap();
        assert_eq!(code.secret.expose(), "key-for-code");
        let other = set.granted("h.com", "browser").unwrap();
        assert_eq!(other.secret.expose(), "key-for-all");
    }

    #[test]
    fn every_bad_entry_is_named_without_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write_key(dir.path(), "empty", "\n");
        let spaced = write_key(dir.path(), "spaced", "sk-secret with-space");
        let good = write_key(dir.path(), "good", "sk-good-secret");
        let text = format!(
            r#"
            [[key]]
            host = "*.openai.com"
            from_file = "{good}"
            [[key]]
            host = "a.com"
            from_env = "LLMTAP_TEST_SURELY_UNSET_VAR"
            [[key]]
            host = "b.com"
            from_file = "{empty}"
            [[key]]
            host = "c.com"
            from_file = "{spaced}"
            [[key]]
            host = "d.com"
            [[key]]
            host = "e.com:443"
            from_file = "{good}"
            from_env = "X"
            [[key]]
            host = "f.com"
            from_file = "{missing}"
            [[key]]
            host = "g.com"
            from_file = "{good}"
            [[key]]
            host = "g.com"
            from_file = "{good}"
            "#,
            good = good.display(),
            empty = empty.display(),
            spaced = spaced.display(),
            missing = dir.path().join("nope").display(),
        );
        let err = KeySet::from_toml(&text, "keys.toml", &no_env)
            .unwrap_err()
            .to_string();
        for needle in [
            "key[0].host = \"*.openai.com\"",
            "key[1] (a.com): from_env LLMTAP_TEST_SURELY_UNSET_VAR: is not set",
            "key[2] (b.com)",
            "is empty",
            "key[3] (c.com)",
            "visible ASCII",
            "key[4] (d.com): needs from_env or from_file",
            "key[5].host = \"e.com:443\"",
            "not both",
            "key[6] (f.com)",
            "cannot open",
            "key[8] (g.com): a second key for every client",
        ] {
            assert!(err.contains(needle), "{needle:?} missing in {err}");
        }
        assert!(
            !err.contains("sk-secret") && !err.contains("sk-good"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_and_inline_keys_are_refused() {
        let err = KeySet::from_toml(
            "[[key]]\nhost = \"a.com\"\nkey = \"sk-inline\"\n",
            "k",
            &no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
}
