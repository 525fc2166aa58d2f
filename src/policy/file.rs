//! The policy file (`--policy`): TOML wire structs, validated whole into a `PolicySet`.
// SKELETON: to be implemented (helper A).

use std::path::{Path, PathBuf};

use super::ClientId;

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
    /// e.g. `client[1].sources[0]` or `profile.code.allow[2]`.
    pub field: String,
    pub value: String,
    pub reason: String,
}

/// Every bad field of a policy file, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy file {path}: {}", .errors.iter().map(|e| format!("{} = {:?}: {}", e.field, e.value, e.reason)).collect::<Vec<_>>().join("; "))]
pub struct PolicyFileError {
    pub path: String,
    pub errors: Vec<PolicyFieldError>,
}

/// A validated policy (a file, or the built-in open policy when there is no `--policy`).
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub mode: Mode,
    /// The file it came from; `None` for the built-in open policy.
    pub source: Option<PathBuf>,
}

impl PolicySet {
    /// No `--policy`: every client is `default`, which may reach any public host.
    pub fn open() -> PolicySet {
        PolicySet {
            mode: Mode::Enforce,
            source: None,
        }
    }

    pub fn load(path: &Path) -> Result<PolicySet, PolicyFileError> {
        let _ = path;
        Ok(PolicySet::open())
    }

    /// Client names in file order (for the start-up summary).
    pub fn client_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// The client of that name (for `llmtap policy check --client`), `None` if unknown.
    pub fn client_named(&self, name: &str) -> Option<ClientId> {
        let _ = name;
        None
    }

    /// The `default` client (no credentials, no matching source).
    pub fn default_client(&self) -> ClientId {
        ClientId {
            name: "default".into(),
            profile: "default".into(),
        }
    }
}
