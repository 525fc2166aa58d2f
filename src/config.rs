//! Command line and environment (clap) plus `addons-config/` files, validated into one `Config`.

use clap::{Args, Parser, Subcommand};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use ipnet::IpNet;

use crate::audit::AuditLevel;
use crate::keys::KeySet;
use crate::limits::{FailMode, StoreSpec};
use crate::policy::{Pins, PolicySet};
use crate::prices::Prices;
use crate::redact::{RedactionConfig, Redactor};
use crate::route::{HostList, ProviderMap, RouteError};

/// Default listen address: loopback only, never all interfaces unless asked.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Debug, Parser)]
#[command(
    name = "llmtap",
    version,
    about = "MITM forward proxy that logs LLM API calls"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the root CA.
    Ca {
        #[command(subcommand)]
        action: CaAction,
    },
    /// Egress policy tools.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Exit 0 when the proxy at --addr answers GET /healthz with 200, 1 otherwise.
    Healthcheck {
        /// Address of the running proxy (defaults to PROXY_LISTEN, with 0.0.0.0 read as 127.0.0.1).
        #[arg(long)]
        addr: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaAction {
    /// Print the CA certificate PEM (what clients put in NODE_EXTRA_CA_CERTS), creating the CA if missing.
    Print,
    /// Move the current CA aside (`*.pem.<unix-time>.bak`) and create a new one.
    Rotate {
        /// Make the new CA name-constrained to --llm-hosts: it cannot sign for any other name
        /// (also when PROXY_CA_NAME_CONSTRAINTS is set).
        #[arg(long)]
        name_constrained: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Print the decision for HOST[:PORT] (default port 443) and its reason; exit 0 when
    /// allowed, 1 when denied, 2 on a bad policy file. Uses the run flags (--policy,
    /// --allow-private, --resolve, --connect-to, --llm-hosts).
    Check {
        /// The client asking (a `[[client]]` name); `default` when not given.
        #[arg(long)]
        client: Option<String>,
        /// Decide for an absolute-form plain-HTTP request instead of a CONNECT.
        #[arg(long)]
        http: bool,
        /// HOST[:PORT]; IPv6 literals in brackets.
        target: String,
    },
}

/// Flags of the proxy, each with an environment fallback.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Address to listen on.
    #[arg(long, env = "PROXY_LISTEN", default_value = DEFAULT_LISTEN, global = true)]
    pub listen: String,
    /// Directory holding ca.pem and ca-key.pem (created on first start).
    #[arg(long, env = "PROXY_CA_DIR", default_value = "./certs", global = true)]
    pub ca_dir: PathBuf,
    /// Hosts whose TLS is intercepted and logged (comma-separated; `*.example.com` wildcards).
    #[arg(
        long,
        env = "PROXY_LLM_HOSTS",
        default_value = "api.anthropic.com,api.openai.com",
        global = true
    )]
    pub llm_hosts: String,
    /// When llmtap creates its CA, make it name-constrained to --llm-hosts; refuse to start with
    /// a CA without name constraints (`1`/`true`).
    #[arg(
        long,
        env = "PROXY_CA_NAME_CONSTRAINTS",
        global = true,
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub ca_name_constraints: bool,
    /// Extra PEM file of roots trusted for upstream TLS (on top of the platform roots).
    #[arg(long, env = "PROXY_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// Pin HOST:PORT to ADDR, like curl's --resolve (repeatable).
    #[arg(long, env = "PROXY_RESOLVE", value_delimiter = ',', global = true)]
    pub resolve: Vec<String>,
    /// Send connections for HOST:PORT to HOST2:PORT2 (TLS still verifies HOST), like curl's
    /// --connect-to (repeatable).
    #[arg(long, env = "PROXY_CONNECT_TO", value_delimiter = ',', global = true)]
    pub connect_to: Vec<String>,
    /// Egress policy file (TOML). Without it every client may reach any public host.
    #[arg(long, env = "PROXY_POLICY", global = true)]
    pub policy: Option<PathBuf>,
    /// CIDRs every client may reach although they are private (comma-separated).
    #[arg(
        long,
        env = "PROXY_ALLOW_PRIVATE",
        value_delimiter = ',',
        global = true
    )]
    pub allow_private: Vec<String>,
    /// Which connection decisions get an audit record: all, deny, off.
    #[arg(long, env = "PROXY_AUDIT", default_value = "all", global = true)]
    pub audit: String,
    /// Bytes of each body (request and response) kept for the record.
    #[arg(long, env = "PROXY_MAX_BODY_SIZE", default_value = "1048576")]
    pub max_body_size: String,
    /// Upper bound of one exported log record in bytes; bodies are trimmed to fit.
    #[arg(long, env = "PROXY_MAX_RECORD_BYTES", default_value = "262144")]
    pub max_record_bytes: String,
    /// How long in-flight exchanges may run after SIGTERM/SIGINT (e.g. `10s`, `500ms`).
    #[arg(long, env = "PROXY_SHUTDOWN_GRACE", default_value = "10s")]
    pub shutdown_grace: String,
    /// Directory of pipeline config files (providers.toml, redaction.toml); built-in defaults when absent.
    #[arg(long, env = "PROXY_ADDONS_CONFIG", default_value = "./addons-config")]
    pub addons_config: PathBuf,
    /// Capacity of the export queue, in records; when full, records are dropped and counted.
    #[arg(long, env = "PROXY_EXPORT_QUEUE", default_value = "8192")]
    pub export_queue: String,
    /// Close a client connection with no request in progress after this long.
    #[arg(long, env = "PROXY_IDLE_TIMEOUT", default_value = "30s")]
    pub idle_timeout: String,
    /// From an intercepted CONNECT's 200 to a completed TLS handshake.
    #[arg(long, env = "PROXY_HANDSHAKE_TIMEOUT", default_value = "10s")]
    pub handshake_timeout: String,
    /// A request or response body that moves no byte for this long is cut.
    #[arg(long, env = "PROXY_BODY_TIMEOUT", default_value = "5m")]
    pub body_timeout: String,
    /// Most open client connections; beyond it new ones are closed at once (default: no cap).
    #[arg(long, env = "PROXY_MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Directory where records the endpoint does not take wait (and survive restarts).
    #[arg(long, env = "PROXY_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Bytes the spool may hold; beyond it the oldest records are dropped and counted.
    #[arg(long, env = "PROXY_SPOOL_MAX_BYTES", default_value = "256MiB")]
    pub spool_max_bytes: String,
    /// Keys file (TOML): the real provider keys, each bound to one host, swapped for the
    /// sentinel sandboxes hold.
    #[arg(long, env = "PROXY_KEYS", global = true)]
    pub keys: Option<PathBuf>,
    /// Address for plain-HTTP base-URL routes (`/anthropic/…`, `/openai/…`, `/gemini/…`);
    /// off when not given.
    #[arg(long, env = "PROXY_REVERSE_LISTEN")]
    pub reverse_listen: Option<String>,
    /// Where the limits' window counters live: `redis://HOST:PORT[/DB]`, shared by every
    /// llmtap process that names it; in memory when not given.
    #[arg(long, env = "PROXY_LIMITS_STORE")]
    pub limits_store: Option<String>,
    /// When the limits store does not answer within 50 ms: `open` (enforce from this
    /// process's own counters) or `closed` (refuse calls that have limits).
    #[arg(long, env = "PROXY_LIMITS_STORE_FAIL", default_value = "open")]
    pub limits_store_fail: String,
}

/// One field that failed validation, with the value it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:?}: {}", self.field, self.value, self.reason)
    }
}

/// Every invalid field, not only the first.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
pub struct ConfigError(pub Vec<FieldError>);

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub ca_dir: PathBuf,
    pub llm_hosts: HostList,
    /// `--llm-hosts` as given, for the start-up summary.
    pub llm_hosts_text: String,
    /// `--ca-name-constraints`: the CA must be name-constrained to `llm_hosts`.
    pub ca_name_constraints: bool,
    pub upstream_ca: Option<PathBuf>,
    /// `--resolve` and `--connect-to`.
    pub pins: Pins,
    /// `--policy`; `None`: the built-in open policy.
    pub policy_path: Option<PathBuf>,
    pub policy: Arc<PolicySet>,
    /// `--allow-private`.
    pub allow_private: Vec<IpNet>,
    pub audit: AuditLevel,
    pub max_body_size: usize,
    pub max_record_bytes: usize,
    pub shutdown_grace: Duration,
    pub addons_config: PathBuf,
    pub providers: ProviderMap,
    /// Header allowlist and body patterns from `redaction.toml`, compiled once.
    pub redactor: Arc<Redactor>,
    pub export_queue: usize,
    pub limits: Limits,
    /// `--spool-dir`: records the endpoint does not take wait on disk.
    pub spool: Option<SpoolConfig>,
    /// `--keys`; `None`: no keys are held, requests keep their credentials.
    pub keys_path: Option<PathBuf>,
    pub keys: Arc<KeySet>,
    /// `--reverse-listen`: where the base-URL routes are served, if anywhere.
    pub reverse_listen: Option<SocketAddr>,
    /// `--limits-store`; `None`: counters in memory.
    pub limits_store: Option<StoreSpec>,
    pub limits_store_fail: FailMode,
    /// `prices.toml` of `--addons-config` (the built-in table when absent).
    pub prices: Prices,
}

/// Timeouts and connection caps (`--idle-timeout`, `--handshake-timeout`, `--body-timeout`,
/// `--max-connections`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A client connection with no request in progress (before its first byte, between
    /// keep-alive requests).
    pub idle_timeout: Duration,
    /// From an intercepted CONNECT's `200` to a completed TLS handshake.
    pub handshake_timeout: Duration,
    /// A request or response body that moves no byte.
    pub body_timeout: Duration,
    /// Open client connections; beyond it new ones are closed at once. `None`: no cap.
    pub max_connections: Option<usize>,
}

/// `--spool-dir` and `--spool-max-bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Bytes the spool may hold; beyond it the oldest records are dropped and counted.
    pub max_bytes: usize,
}

impl Config {
    /// Validate the flags and load the addons files; reports every bad field at once.
    pub fn from_args(args: &RunArgs) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let e = &mut errors;
        let listen = collect(e, "--listen", &args.listen, parse_listen);
        let llm_hosts = collect(e, "--llm-hosts", &args.llm_hosts, |v| {
            HostList::parse(v).map_err(|e| e.to_string())
        });
        let resolve = parse_resolve_all(e, &args.resolve);
        let connect_to = parse_connect_to_all(e, &args.connect_to);
        let allow_private = parse_cidrs(e, &args.allow_private);
        let audit = collect(e, "--audit", &args.audit, AuditLevel::parse);
        let policy = load_policy(e, args.policy.as_deref());
        let max_body_size = collect(e, "--max-body-size", &args.max_body_size, |v| {
            parse_size(v, 0)
        });
        let max_record_bytes = collect(e, "--max-record-bytes", &args.max_record_bytes, |v| {
            parse_size(v, 4096)
        });
        let shutdown_grace = collect(e, "--shutdown-grace", &args.shutdown_grace, parse_duration);
        let export_queue = collect(e, "--export-queue", &args.export_queue, |v| {
            parse_size(v, 1)
        });
        let limits = parse_limits(e, args);
        let spool = parse_spool(e, args);
        let reverse_listen = match args.reverse_listen.as_deref() {
            None => Some(None),
            Some(v) => collect(e, "--reverse-listen", v, parse_listen).map(Some),
        };
        check_readable(e, "--upstream-ca", args.upstream_ca.as_deref());
        let providers = load_providers(e, &args.addons_config);
        let redactor = load_redactor(e, &args.addons_config);
        let keys = load_keys(e, args.keys.as_deref());
        let prices = load_prices(e, &args.addons_config);
        let limits_store = match args.limits_store.as_deref() {
            None => Some(None),
            Some(v) => collect(e, "--limits-store", &redact_url_password(v), |_| {
                StoreSpec::parse(v)
            })
            .map(Some),
        };
        let limits_store_fail = collect(
            e,
            "--limits-store-fail",
            &args.limits_store_fail,
            FailMode::parse,
        );
        let (
            Some(listen),
            Some(llm_hosts),
            Some(max_body_size),
            Some(max_record_bytes),
            Some(shutdown_grace),
            Some(export_queue),
            Some(providers),
            Some(redactor),
            Some(audit),
            Some(policy),
            Some(limits),
            Some(spool),
            Some(keys),
            Some(reverse_listen),
            Some(limits_store),
            Some(limits_store_fail),
            Some(prices),
        ) = (
            listen,
            llm_hosts,
            max_body_size,
            max_record_bytes,
            shutdown_grace,
            export_queue,
            providers,
            redactor,
            audit,
            policy,
            limits,
            spool,
            keys,
            reverse_listen,
            limits_store,
            limits_store_fail,
            prices,
        )
        else {
            return Err(ConfigError(errors));
        };
        check_keys(e, &keys, &policy, &llm_hosts, &providers);
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Ok(Config {
            listen,
            ca_dir: args.ca_dir.clone(),
            llm_hosts,
            llm_hosts_text: args.llm_hosts.clone(),
            ca_name_constraints: args.ca_name_constraints,
            upstream_ca: args.upstream_ca.clone(),
            pins: Pins {
                resolve,
                connect_to,
            },
            policy_path: args.policy.clone(),
            policy: Arc::new(policy),
            allow_private,
            audit,
            max_body_size,
            max_record_bytes,
            shutdown_grace,
            addons_config: args.addons_config.clone(),
            providers,
            redactor,
            export_queue,
            limits,
            spool,
            keys_path: args.keys.clone(),
            keys: Arc::new(keys),
            reverse_listen,
            limits_store,
            limits_store_fail,
            prices,
        })
    }
}

fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v.trim()).map_err(|e| e.to_string())
}

/// A duration that must be more than zero.
fn parse_timeout(v: &str) -> Result<Duration, String> {
    match parse_duration(v)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

fn check_readable(errors: &mut Vec<FieldError>, field: &'static str, path: Option<&Path>) {
    if let Some(path) = path
        && let Err(e) = std::fs::metadata(path)
    {
        errors.push(FieldError {
            field,
            value: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        });
    }
}

fn parse_limits(e: &mut Vec<FieldError>, args: &RunArgs) -> Option<Limits> {
    let idle = collect(e, "--idle-timeout", &args.idle_timeout, parse_timeout);
    let handshake = collect(
        e,
        "--handshake-timeout",
        &args.handshake_timeout,
        parse_timeout,
    );
    let body = collect(e, "--body-timeout", &args.body_timeout, parse_timeout);
    let max_connections = match args.max_connections.as_deref() {
        None => Some(None),
        Some(v) => collect(e, "--max-connections", v, |v| parse_size(v, 1)).map(Some),
    };
    Some(Limits {
        idle_timeout: idle?,
        handshake_timeout: handshake?,
        body_timeout: body?,
        max_connections: max_connections?,
    })
}

fn parse_spool(e: &mut Vec<FieldError>, args: &RunArgs) -> Option<Option<SpoolConfig>> {
    let max_bytes = collect(e, "--spool-max-bytes", &args.spool_max_bytes, |v| {
        parse_size(v, 64 * 1024)
    })?;
    Some(args.spool_dir.as_ref().map(|dir| SpoolConfig {
        dir: dir.clone(),
        max_bytes,
    }))
}

impl Config {
    /// The rules `policy::decide` applies, with llmtap's own listen addresses.
    pub fn egress_rules(&self, own_addrs: Vec<SocketAddr>) -> crate::policy::EgressRules {
        crate::policy::EgressRules {
            policy: Arc::clone(&self.policy),
            llm_hosts: self.llm_hosts.clone(),
            providers: self.providers.clone(),
            pins: self.pins.clone(),
            allow_private: self.allow_private.clone(),
            own_addrs,
        }
    }
}

fn collect<T>(
    errors: &mut Vec<FieldError>,
    field: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    match parse(value) {
        Ok(v) => Some(v),
        Err(reason) => {
            errors.push(FieldError {
                field,
                value: value.to_string(),
                reason,
            });
            None
        }
    }
}

fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value
        .trim()
        .parse::<SocketAddr>()
        .map_err(|e| format!("{e}; expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080"))
}

/// Parses a byte count: plain digits, or with a KiB/MiB/GiB (or K/M/G) suffix.
pub fn parse_size(value: &str, min: usize) -> Result<usize, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| "expected a number of bytes such as 1048576 or 1MiB".to_string())?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        other => return Err(format!("unknown unit {other:?}; use KiB, MiB or GiB")),
    };
    let size = n
        .checked_mul(mult)
        .ok_or_else(|| "value too large".to_string())?;
    if size < min {
        return Err(format!("must be at least {min}"));
    }
    Ok(size)
}

fn parse_resolve_all(
    errors: &mut Vec<FieldError>,
    entries: &[String],
) -> HashMap<(String, u16), IpAddr> {
    let mut pins = HashMap::new();
    for entry in entries.iter().filter(|e| !e.trim().is_empty()) {
        match parse_resolve(entry) {
            Ok((key, addr)) => {
                pins.insert(key, addr);
            }
            Err(reason) => errors.push(FieldError {
                field: "--resolve",
                value: entry.clone(),
                reason,
            }),
        }
    }
    pins
}

/// Parses `HOST:PORT:ADDR` (ADDR may be a bracketed IPv6 address).
pub fn parse_resolve(entry: &str) -> Result<((String, u16), IpAddr), String> {
    let usage = "expected HOST:PORT:ADDR such as api.anthropic.com:443:127.0.0.1";
    let mut parts = entry.trim().splitn(3, ':');
    let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(usage.to_string());
    };
    if crate::route::normalize_host(host).is_empty() {
        return Err(format!("empty host; {usage}"));
    }
    let port =
        crate::route::parse_port(port).ok_or_else(|| format!("bad port {port:?}; {usage}"))?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("bad address {addr:?}; {usage}"))?;
    Ok(((crate::route::normalize_host(host), port), addr))
}

/// (host, port): a normalised host and a port.
type HostPort = (String, u16);
type ConnectToPins = HashMap<HostPort, HostPort>;

fn parse_connect_to_all(errors: &mut Vec<FieldError>, entries: &[String]) -> ConnectToPins {
    let mut pins = ConnectToPins::new();
    for entry in entries.iter().filter(|e| !e.trim().is_empty()) {
        match parse_connect_to(entry) {
            Ok((from, to)) => {
                pins.insert(from, to);
            }
            Err(reason) => errors.push(FieldError {
                field: "--connect-to",
                value: entry.clone(),
                reason,
            }),
        }
    }
    pins
}

/// Parses `HOST:PORT:HOST2:PORT2`; either host may be a bracketed IPv6 literal.
pub fn parse_connect_to(entry: &str) -> Result<(HostPort, HostPort), String> {
    let usage = "expected HOST:PORT:HOST2:PORT2 such as api.anthropic.com:443:127.0.0.1:8443";
    let (from, rest) = split_host_port(entry.trim()).ok_or_else(|| usage.to_string())?;
    let rest = rest.strip_prefix(':').ok_or_else(|| usage.to_string())?;
    let (to, tail) = split_host_port(rest).ok_or_else(|| usage.to_string())?;
    if !tail.is_empty() {
        return Err(usage.to_string());
    }
    Ok((from, to))
}

/// Takes `HOST:PORT` off the front of `s` (HOST may be `[v6]`); returns it and the rest.
fn split_host_port(s: &str) -> Option<(HostPort, &str)> {
    let (host, after_host) = if let Some(v6) = s.strip_prefix('[') {
        let end = v6.find(']')?;
        (v6.get(..end)?, v6.get(end + 1..)?)
    } else {
        let end = s.find(':')?;
        (s.get(..end)?, s.get(end..)?)
    };
    let after_colon = after_host.strip_prefix(':')?;
    let digits = after_colon
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after_colon.len());
    let port = crate::route::parse_port(after_colon.get(..digits)?)?;
    if crate::route::normalize_host(host).is_empty() {
        return None;
    }
    Some((
        (crate::route::normalize_host(host), port),
        after_colon.get(digits..)?,
    ))
}

fn parse_cidrs(errors: &mut Vec<FieldError>, entries: &[String]) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for entry in entries.iter().filter(|e| !e.trim().is_empty()) {
        match crate::policy::address::parse_cidr(entry) {
            Ok(net) => nets.push(net),
            Err(reason) => errors.push(FieldError {
                field: "--allow-private",
                value: entry.clone(),
                reason,
            }),
        }
    }
    nets
}

/// `redis://user:secret@host` → `redis://user:[REDACTED]@host`, for error messages.
fn redact_url_password(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:[REDACTED]@{host}")
        }
        None => value.to_string(),
    }
}

/// `prices.toml` of the addons directory; the built-in table when there is none.
pub fn load_prices(errors: &mut Vec<FieldError>, dir: &Path) -> Option<Prices> {
    let path = dir.join("prices.toml");
    if !path.exists() {
        return Some(Prices::builtin());
    }
    match Prices::load(&path) {
        Ok(prices) => Some(prices),
        Err(e) => {
            errors.push(FieldError {
                field: "addons-config/prices.toml",
                value: path.display().to_string(),
                reason: e.to_string(),
            });
            None
        }
    }
}

fn load_keys(errors: &mut Vec<FieldError>, path: Option<&Path>) -> Option<KeySet> {
    let Some(path) = path else {
        return Some(KeySet::default());
    };
    match KeySet::load(path) {
        Ok(keys) => Some(keys),
        Err(e) => {
            errors.push(FieldError {
                field: "--keys",
                value: path.display().to_string(),
                reason: e.to_string(),
            });
            None
        }
    }
}

/// What the keys file can only get wrong together with the other files: a client the policy
/// does not know, a host llmtap never decrypts (its key could never be used).
pub fn check_keys(
    errors: &mut Vec<FieldError>,
    keys: &KeySet,
    policy: &PolicySet,
    llm_hosts: &HostList,
    providers: &ProviderMap,
) {
    let value = || {
        keys.source
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string())
    };
    let known = |name: &str| policy.client_named(name).is_some();
    for reason in keys.unknown_clients(&known) {
        errors.push(FieldError {
            field: "--keys",
            value: value(),
            reason,
        });
    }
    for entry in keys.entries() {
        let routed = providers
            .routes
            .routes()
            .iter()
            .any(|r| r.host == entry.host);
        if !llm_hosts.matches(&entry.host) && !routed {
            errors.push(FieldError {
                field: "--keys",
                value: value(),
                reason: format!(
                    "{}: {} is neither intercepted (--llm-hosts) nor a base-URL route, so its key could never be used",
                    entry.label, entry.host
                ),
            });
        }
    }
}

fn load_policy(errors: &mut Vec<FieldError>, path: Option<&Path>) -> Option<PolicySet> {
    let Some(path) = path else {
        return Some(PolicySet::open());
    };
    match PolicySet::load(path) {
        Ok(policy) => Some(policy),
        Err(e) => {
            errors.push(FieldError {
                field: "--policy",
                value: path.display().to_string(),
                reason: e.to_string(),
            });
            None
        }
    }
}

fn load_providers(errors: &mut Vec<FieldError>, dir: &Path) -> Option<ProviderMap> {
    let path = dir.join("providers.toml");
    let result = match std::fs::read_to_string(&path) {
        Ok(text) => ProviderMap::from_toml(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProviderMap::builtin()),
        Err(e) => Err(RouteError::Io(e.to_string())),
    };
    match result {
        Ok(map) => Some(map),
        Err(e) => {
            errors.push(FieldError {
                field: "addons-config/providers.toml",
                value: path.display().to_string(),
                reason: e.to_string(),
            });
            None
        }
    }
}

fn load_redactor(errors: &mut Vec<FieldError>, dir: &Path) -> Option<Arc<Redactor>> {
    let path = dir.join("redaction.toml");
    let config = if path.exists() {
        RedactionConfig::load(&path)
    } else {
        Ok(RedactionConfig::default())
    };
    match config.and_then(|c| Redactor::new(&c)) {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            errors.push(FieldError {
                field: "addons-config/redaction.toml",
                value: path.display().to_string(),
                reason: e.to_string(),
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        Cli::parse_from(["llmtap", "--addons-config", "/nonexistent-llmtap-dir"]).run
    }

    #[test]
    fn defaults_are_valid_and_loopback() {
        let cfg = Config::from_args(&args()).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cfg.max_body_size, 1024 * 1024);
        assert_eq!(cfg.max_record_bytes, 256 * 1024);
        assert_eq!(cfg.shutdown_grace, Duration::from_secs(10));
        assert!(cfg.llm_hosts.matches("api.anthropic.com"));
        assert!(!cfg.llm_hosts.matches("example.com"));
    }

    #[test]
    fn every_bad_field_is_reported_with_its_value() {
        let mut a = args();
        a.listen = "nope".into();
        a.max_body_size = "12XB".into();
        a.shutdown_grace = "forever".into();
        a.resolve = vec!["api.x.com:443".into(), "h:99999:1.2.3.4".into()];
        let err = Config::from_args(&a).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| (e.field, e.value.as_str())).collect();
        assert!(fields.contains(&("--listen", "nope")));
        assert!(fields.contains(&("--max-body-size", "12XB")));
        assert!(fields.contains(&("--shutdown-grace", "forever")));
        assert!(fields.contains(&("--resolve", "api.x.com:443")));
        assert!(fields.contains(&("--resolve", "h:99999:1.2.3.4")));
        assert_eq!(err.0.len(), 5, "{err}");
        assert!(err.to_string().contains("--listen = \"nope\""));
    }

    #[test]
    fn sizes_and_pins_parse() {
        let cases = [
            ("1048576", 1048576),
            ("1MiB", 1048576),
            ("64k", 65536),
            ("0", 0),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input, 0).unwrap(), want, "{input}");
        }
        let ((host, port), addr) = parse_resolve("API.Anthropic.com:443:[::1]").unwrap();
        assert_eq!((host.as_str(), port), ("api.anthropic.com", 443));
        assert_eq!(addr, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn connect_to_and_cidrs_parse() {
        let (from, to) = parse_connect_to("API.Anthropic.com:443:127.0.0.1:8443").unwrap();
        assert_eq!(from, ("api.anthropic.com".to_string(), 443));
        assert_eq!(to, ("127.0.0.1".to_string(), 8443));
        let (from, to) = parse_connect_to("[::1]:443:[::1]:9").unwrap();
        assert_eq!(from, ("::1".to_string(), 443));
        assert_eq!(to, ("::1".to_string(), 9));
        for bad in [
            "a:443:b",
            "a:443:b:0",
            "a:99999:b:1",
            ":1:b:2",
            "a:1:b:2:3",
            "a:1:b:2x",
        ] {
            assert!(parse_connect_to(bad).is_err(), "{bad}");
        }
        let cidrs = parse_cidrs(&mut Vec::new(), &["127.0.0.1".into(), "10.0.0.0/8".into()]);
        assert_eq!(
            cidrs,
            vec![
                "127.0.0.1/32".parse::<IpNet>().unwrap(),
                "10.0.0.0/8".parse::<IpNet>().unwrap()
            ]
        );
        let mut a = args();
        a.allow_private = vec!["nope".into()];
        a.connect_to = vec!["x".into()];
        a.audit = "loud".into();
        a.policy = Some("/nonexistent/llmtap-policy.toml".into());
        let err = Config::from_args(&a).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field).collect();
        for f in ["--allow-private", "--connect-to", "--audit", "--policy"] {
            assert!(fields.contains(&f), "{f} missing from {err}");
        }
    }

    #[test]
    fn env_list_of_pins_splits_on_commas() {
        let cli = Cli::parse_from([
            "llmtap",
            "--resolve",
            "a.com:443:127.0.0.1,b.com:80:127.0.0.2",
        ]);
        assert_eq!(cli.run.resolve.len(), 2);
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn bad_addons_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("providers.toml"), "[[host]]\npattern = 1\n").unwrap();
        std::fs::write(
            dir.path().join("redaction.toml"),
            "safe_headers = []\nredacted_headers = []\nredacted_query_params = []\n[[body_patterns]]\nname = \"bad\"\nregex = \"(\"\n",
        )
        .unwrap();
        let mut args = Cli::parse_from(["llmtap"]).run;
        args.addons_config = dir.path().to_path_buf();
        let err = Config::from_args(&args).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field).collect();
        assert!(fields.contains(&"addons-config/providers.toml"), "{err}");
        assert!(fields.contains(&"addons-config/redaction.toml"), "{err}");
    }
}
