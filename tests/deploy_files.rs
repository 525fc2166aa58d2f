//! The deployment files (Dockerfile, compose stack, Loki config, Grafana dashboard, Node bootstrap
//! package, egress policy files) keep the properties issues 4 and 8 ask for. No Docker engine is
//! needed: the files are parsed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use llmtap::export::attributes::{ALL, loki_name};
use regex::Regex;
use serde_yaml_ng::Value;

const COMPOSE: &str = "compose/compose.yaml";
const LOKI_CONFIG: &str = "compose/loki/loki-config.yaml";
const GRAFANA_DATASOURCE: &str = "compose/grafana/provisioning/datasources/loki.yaml";
const GRAFANA_PROVIDERS: &str = "compose/grafana/provisioning/dashboards/dashboards.yaml";
const DASHBOARD: &str = "compose/grafana/provisioning/dashboards/llmtap.json";
const BOOTSTRAP_IN_GATEWAY: &str = "/opt/llmtap/proxy-bootstrap.cjs";
const POLICY_EXAMPLE: &str = "addons-config/policy.example.toml";
/// What the gateway and the sandboxes hold instead of a provider key (issue 10): llmtap swaps it
/// for the real key, which llmtap alone holds.
const SENTINEL: &str = "llmtap-managed";
/// Where the real keys live on the host (Docker secrets' files), git-ignored.
const SECRETS_DIR: &str = "compose/secrets";
/// The seed's two sandboxes (issue 8): each its own client, network and credentials.
const SANDBOXES: [&str; 2] = ["browser-sandbox", "code-sandbox"];
/// What the code sandbox may reach: the LLM APIs and the package registries, nothing else.
const CODE_PROFILE_HOSTS: [&str; 5] = [
    "api.anthropic.com",
    "api.openai.com",
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
];
/// Loki's defaults (DESIGN.md §3) that a large llmtap record would exceed.
const LOKI_DEFAULT_MAX_STRUCTURED_METADATA: u64 = 64 * 1000;
/// llmtap's default `--max-record-bytes`.
const LLMTAP_DEFAULT_MAX_RECORD_BYTES: u64 = 262_144;

// ---------- reading files ----------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(rel: &str) -> Value {
    serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid JSON: {e}"))
}

fn compose() -> Value {
    yaml(COMPOSE)
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let svc = &compose["services"][name];
    assert!(svc.is_mapping(), "{COMPOSE} has no service {name:?}");
    svc
}

fn services(compose: &Value) -> Vec<(String, &Value)> {
    let map = compose["services"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{COMPOSE} has no services"));
    map.iter()
        .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v))
        .collect()
}

/// A YAML scalar as text (compose allows numbers and booleans where it means strings).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(seq) => seq.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// A service's environment, from either the map or the `KEY=value` list form.
fn env(svc: &Value, key: &str) -> Option<String> {
    match &svc["environment"] {
        Value::Mapping(map) => map.get(key).and_then(scalar),
        Value::Sequence(seq) => seq.iter().filter_map(scalar).find_map(|item| {
            let (k, v) = item.split_once('=')?;
            (k == key).then(|| v.to_string())
        }),
        _ => None,
    }
}

fn env_required(svc: &Value, name: &str, key: &str) -> String {
    env(svc, key).unwrap_or_else(|| panic!("service {name} does not set {key}"))
}

/// (source, target, read_only) of each volume mount, short or long syntax.
fn mounts(svc: &Value) -> Vec<(String, String, bool)> {
    let Some(seq) = svc["volumes"].as_sequence() else {
        return Vec::new();
    };
    seq.iter()
        .filter_map(|m| match m {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                match parts.as_slice() {
                    [src, dst] => Some((src.to_string(), dst.to_string(), false)),
                    [src, dst, mode] => {
                        Some((src.to_string(), dst.to_string(), mode.contains("ro")))
                    }
                    _ => None,
                }
            }
            Value::Mapping(_) => Some((
                scalar(&m["source"]).unwrap_or_default(),
                scalar(&m["target"]).unwrap_or_default(),
                m["read_only"].as_bool().unwrap_or(false),
            )),
            _ => None,
        })
        .collect()
}

fn networks_of(svc: &Value) -> Vec<String> {
    match &svc["networks"] {
        Value::Sequence(seq) => seq.iter().filter_map(scalar).collect(),
        Value::Mapping(map) => map.keys().filter_map(scalar).collect(),
        _ => Vec::new(),
    }
}

/// Lexically normalised path, relative paths taken from `base`.
fn normalise(base: &Path, p: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for part in base.join(p).components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Byte sizes as Loki reads them (go-humanize: KB = 1000, KiB = 1024, …; a bare number is bytes).
fn loki_bytes(v: &Value) -> u64 {
    if let Some(n) = v.as_u64() {
        return n;
    }
    let text = scalar(v).unwrap_or_else(|| panic!("not a byte size: {v:?}"));
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let num: f64 = num
        .parse()
        .unwrap_or_else(|e| panic!("bad byte size {text:?}: {e}"));
    let factor: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unknown byte unit {other:?} in {text:?}"),
    };
    (num * factor) as u64
}

// ---------- compose ----------

#[test]
fn published_ports_are_loopback_only_and_llmtap_publishes_none() {
    let compose = compose();
    for (name, svc) in services(&compose) {
        assert_ne!(
            scalar(&svc["network_mode"]).as_deref(),
            Some("host"),
            "{name}: network_mode host bypasses every port rule"
        );
        let Some(ports) = svc["ports"].as_sequence() else {
            continue;
        };
        assert!(
            name != "llmtap" || ports.is_empty(),
            "llmtap must publish no port: the gateway reaches it over the internal network"
        );
        for port in ports {
            match port {
                Value::Mapping(_) => {
                    let ip = scalar(&port["host_ip"]).unwrap_or_default();
                    assert_eq!(
                        ip, "127.0.0.1",
                        "{name}: published port {port:?} must set host_ip 127.0.0.1"
                    );
                }
                other => {
                    let text = scalar(other).unwrap_or_default();
                    assert!(
                        text.starts_with("127.0.0.1:") && text.split(':').count() == 3,
                        "{name}: published port {text:?} must be 127.0.0.1:HOST:CONTAINER (no bare port, no 0.0.0.0)"
                    );
                }
            }
        }
    }
    let zeros = read(COMPOSE).matches("0.0.0.0").count();
    let llmtap = service(&compose, "llmtap");
    let allowed = ["PROXY_LISTEN", "PROXY_REVERSE_LISTEN"]
        .into_iter()
        .filter(|key| env(llmtap, key).is_some_and(|v| v.starts_with("0.0.0.0:")))
        .count();
    assert_eq!(
        zeros, allowed,
        "0.0.0.0 may appear only as llmtap's listen addresses inside its container"
    );
}

fn assert_hardened(name: &str, svc: &Value) {
    assert!(
        strings(&svc["cap_drop"])
            .iter()
            .any(|c| c.eq_ignore_ascii_case("ALL")),
        "{name}: cap_drop must be [ALL]"
    );
    assert_eq!(
        svc["read_only"].as_bool(),
        Some(true),
        "{name}: read_only must be true"
    );
    assert!(
        strings(&svc["security_opt"])
            .iter()
            .any(|o| o == "no-new-privileges" || o == "no-new-privileges:true"),
        "{name}: security_opt must contain no-new-privileges:true"
    );
    let limits = &svc["deploy"]["resources"]["limits"];
    assert!(
        scalar(&limits["memory"]).is_some() || scalar(&svc["mem_limit"]).is_some(),
        "{name}: needs a memory limit"
    );
    assert!(
        scalar(&limits["cpus"]).is_some() || scalar(&svc["cpus"]).is_some(),
        "{name}: needs a CPU limit"
    );
    let restart = scalar(&svc["restart"]).unwrap_or_default();
    assert!(
        ["always", "unless-stopped"].contains(&restart.as_str())
            || restart.starts_with("on-failure"),
        "{name}: needs a restart policy, has {restart:?}"
    );
    let logging = &svc["logging"];
    let driver = scalar(&logging["driver"]).unwrap_or_default();
    let rotated = driver == "local"
        || (driver == "json-file"
            && scalar(&logging["options"]["max-size"]).is_some()
            && scalar(&logging["options"]["max-file"]).is_some());
    assert!(
        rotated,
        "{name}: logs must rotate (json-file with max-size and max-file, or local)"
    );
    if let Some(user) = scalar(&svc["user"]) {
        let uid = user.split(':').next().unwrap_or_default();
        assert!(uid != "0" && uid != "root", "{name}: must not run as root");
    }
}

#[test]
fn llmtap_service_is_locked_down_and_healthchecked() {
    let compose = compose();
    let svc = service(&compose, "llmtap");
    assert_hardened("llmtap", svc);
    assert!(
        svc["build"].is_mapping() || svc["build"].is_string(),
        "llmtap is built from the Dockerfile"
    );
    let test = strings(&svc["healthcheck"]["test"]).join(" ");
    assert!(
        test.contains("llmtap healthcheck"),
        "healthcheck must run `llmtap healthcheck`, is {test:?}"
    );
    assert!(!test.contains("curl") && !test.contains("wget"));
    assert_eq!(env_required(svc, "llmtap", "PROXY_LISTEN"), "0.0.0.0:8080");
    assert!(
        !env_required(svc, "llmtap", "PROXY_LLM_HOSTS")
            .trim()
            .is_empty()
    );
    assert_eq!(
        env_required(svc, "llmtap", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
        "http://loki:3100/otlp/v1/logs"
    );
    let ca_dir = env_required(svc, "llmtap", "PROXY_CA_DIR");
    let ca_mount = mounts(svc).into_iter().find(|(_, dst, _)| *dst == ca_dir);
    let (src, _, ro) =
        ca_mount.unwrap_or_else(|| panic!("llmtap: PROXY_CA_DIR {ca_dir} is not a mount"));
    assert!(
        src.starts_with('.') || src.starts_with('/'),
        "the CA dir is a bind mount, is {src:?}"
    );
    assert!(!ro, "llmtap writes its CA: the CA mount must be writable");
    let spool_dir = env_required(svc, "llmtap", "PROXY_SPOOL_DIR");
    for (src, dst, ro) in mounts(svc) {
        assert!(
            dst == ca_dir || dst == spool_dir || ro,
            "llmtap: only the CA directory and the spool may be writable, {src}:{dst} is not read-only"
        );
    }
}

#[test]
fn llmtap_spools_to_a_named_volume_of_its_own() {
    let compose = compose();
    let svc = service(&compose, "llmtap");
    let dir = env_required(svc, "llmtap", "PROXY_SPOOL_DIR");
    let (volume, _, ro) = mounts(svc)
        .into_iter()
        .find(|(_, dst, _)| *dst == dir)
        .unwrap_or_else(|| panic!("llmtap: PROXY_SPOOL_DIR {dir} is not a mount"));
    assert!(!ro, "llmtap writes its spool: the mount must be writable");
    assert!(
        !volume.starts_with('.') && !volume.starts_with('/') && !volume.is_empty(),
        "the spool is a named volume (it must outlive the container), is {volume:?}"
    );
    assert!(
        compose["volumes"][volume.as_str()].is_mapping(),
        "volume {volume} must be declared at the top level"
    );
    // The spool holds records (prompts, answers): no sandbox, no gateway may read it.
    for (name, other) in services(&compose) {
        if name != "llmtap" {
            assert!(
                mounts(other).iter().all(|(src, _, _)| *src != volume),
                "{name} must not mount llmtap's spool {volume}"
            );
        }
    }
    // The root file system is read-only: the spool must be the mount, not a path under it.
    assert_eq!(svc["read_only"].as_bool(), Some(true));
    if let Some(max) = env(svc, "PROXY_SPOOL_MAX_BYTES") {
        use clap::Parser;
        let argv = ["llmtap", "--spool-dir", &dir, "--spool-max-bytes", &max];
        let cli = llmtap::config::Cli::try_parse_from(argv).unwrap();
        let mut args = cli.run;
        args.addons_config = repo().join("addons-config");
        let config = llmtap::config::Config::from_args(&args).unwrap();
        assert_eq!(config.spool.map(|s| s.dir), Some(PathBuf::from(&dir)));
    }
    // A fresh named volume takes the owner and mode of the image's directory: the image must
    // carry it, writable by whichever user compose runs llmtap as.
    let parent = Path::new(&dir)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let creates = instructions(&read("Dockerfile"))
        .into_iter()
        .any(|(op, args)| {
            let dest = args.split_whitespace().last().unwrap_or_default();
            let dest = dest.trim_end_matches('/');
            op == "COPY" && (dest == dir || dest == parent)
        });
    assert!(
        creates,
        "the image must create {dir}, so a new named volume there starts out writable"
    );
}

#[test]
fn gateway_reaches_out_only_through_llmtap() {
    let compose = compose();
    let gw = service(&compose, "gateway");
    let llmtap = service(&compose, "llmtap");
    assert_hardened("gateway", gw);

    let nets = networks_of(gw);
    assert!(
        !nets.is_empty(),
        "gateway must name its networks (the default one has a way out)"
    );
    for net in &nets {
        assert_eq!(
            compose["networks"][net.as_str()]["internal"].as_bool(),
            Some(true),
            "gateway network {net} must be internal: true"
        );
        assert!(
            networks_of(llmtap).contains(net),
            "llmtap must be on gateway network {net}"
        );
    }

    assert_proxies_through_llmtap(&compose, "gateway");

    // NODE_EXTRA_CA_CERTS is ca.pem inside a read-only mount of llmtap's CA directory.
    let extra = env_required(gw, "gateway", "NODE_EXTRA_CA_CERTS");
    assert!(
        extra.ends_with("/ca.pem"),
        "NODE_EXTRA_CA_CERTS must point at ca.pem, is {extra}"
    );
    let ca_dir = env_required(llmtap, "llmtap", "PROXY_CA_DIR");
    let llmtap_ca_src = mounts(llmtap)
        .into_iter()
        .find(|(_, dst, _)| *dst == ca_dir)
        .map(|(src, _, _)| src)
        .unwrap_or_default();
    let gw_mount = mounts(gw).into_iter().find(|(_, dst, _)| {
        extra.starts_with(&format!("{}/", dst.trim_end_matches('/'))) || extra == *dst
    });
    let (src, _, ro) = gw_mount.unwrap_or_else(|| panic!("gateway: {extra} is not inside a mount"));
    assert_eq!(
        src, llmtap_ca_src,
        "gateway must mount llmtap's CA directory"
    );
    assert!(ro, "gateway mounts the CA read-only");

    let command = strings(&gw["command"]).join(" ");
    let node_options = env(gw, "NODE_OPTIONS").unwrap_or_default();
    let preload = format!("--require {BOOTSTRAP_IN_GATEWAY}");
    assert!(
        command.contains(&preload) || node_options.contains(&preload),
        "gateway must start node with {preload}"
    );
    let context = scalar(&gw["build"]["context"]).unwrap_or_else(|| ".".into());
    let dockerfile = scalar(&gw["build"]["dockerfile"]).unwrap_or_else(|| "Dockerfile".into());
    let path = normalise(&normalise(&repo().join("compose"), &context), &dockerfile);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("gateway Dockerfile {}: {e}", path.display()));
    assert!(text.contains("proxy-bootstrap.cjs") && text.contains("/opt/llmtap"));
    assert_eq!(
        scalar(&gw["depends_on"]["llmtap"]["condition"]).as_deref(),
        Some("service_healthy"),
        "gateway starts once llmtap is healthy"
    );
}

// ---------- egress: the sandboxes and the policy (issue 8) ----------

/// A proxy variable `http://USER:PASSWORD@HOST:PORT`, split (PASSWORD as written in compose).
#[derive(Debug)]
struct ProxyUrl {
    user: String,
    password: String,
    host: String,
    port: String,
}

fn proxy_url(name: &str, value: &str) -> ProxyUrl {
    let rest = value
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{name}: proxy {value:?} must be an http:// URL"));
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (userinfo, hostport) = rest
        .rsplit_once('@')
        .unwrap_or_else(|| panic!("{name}: proxy {value:?} carries no credentials (NAME:TOKEN@)"));
    let (user, password) = userinfo
        .split_once(':')
        .unwrap_or_else(|| panic!("{name}: proxy {value:?} has a user but no password"));
    let (host, port) = hostport
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{name}: proxy {value:?} names no port"));
    ProxyUrl {
        user: user.to_string(),
        password: password.to_string(),
        host: host.to_string(),
        port: port.to_string(),
    }
}

/// What compose makes of `text` when its variable is unset: a literal stays as it is,
/// `${VAR:-default}` / `${VAR-default}` is the default, `${VAR}` or `${VAR:?error}` is unknown.
fn compose_default(text: &str) -> Option<String> {
    if !text.contains('$') {
        return Some(text.to_string());
    }
    let inner = text.strip_prefix("${")?.strip_suffix('}')?;
    let (_, default) = match inner.split_once(":-") {
        Some(split) => split,
        None if inner.contains('?') => return None,
        None => inner.split_once('-')?,
    };
    (!default.contains('$')).then(|| default.to_string())
}

fn listen_port(compose: &Value) -> String {
    env_required(service(compose, "llmtap"), "llmtap", "PROXY_LISTEN")
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// HTTPS_PROXY and HTTP_PROXY name llmtap with this service's own credentials, and NO_PROXY
/// exempts loopback only.
fn assert_proxies_through_llmtap(compose: &Value, name: &str) -> ProxyUrl {
    let svc = service(compose, name);
    let https = env_required(svc, name, "HTTPS_PROXY");
    assert_eq!(
        env_required(svc, name, "HTTP_PROXY"),
        https,
        "{name}: HTTP_PROXY and HTTPS_PROXY must be the same proxy"
    );
    for lower in ["https_proxy", "http_proxy"] {
        if let Some(v) = env(svc, lower) {
            assert_eq!(v, https, "{name}: {lower} differs from HTTPS_PROXY");
        }
    }
    let url = proxy_url(name, &https);
    assert_eq!(url.host, "llmtap", "{name}: the proxy must be llmtap");
    assert_eq!(url.port, listen_port(compose), "{name}: llmtap's port");
    assert!(
        !url.user.is_empty(),
        "{name}: the proxy user names its client"
    );
    assert!(
        !url.password.is_empty() && url.password != "${}",
        "{name}: the proxy password (token) is empty"
    );
    for key in ["NO_PROXY", "no_proxy"] {
        let Some(no_proxy) = env(svc, key) else {
            continue;
        };
        for entry in no_proxy.split(',').map(str::trim) {
            assert!(
                ["", "localhost", "127.0.0.1", "::1"].contains(&entry),
                "{name}: {key} may exempt only loopback, not {entry:?} (that would bypass llmtap)"
            );
        }
    }
    url
}

/// The uid of a service's `user`, with compose defaults applied (`${LLMTAP_UID:-1000}:...` → 1000).
fn uid_of(name: &str, svc: &Value) -> String {
    let user = scalar(&svc["user"]).unwrap_or_else(|| panic!("{name}: must set a non-root user"));
    let uid = match user.find('}') {
        Some(end) if user.starts_with("${") => &user[..=end],
        _ => user.split(':').next().unwrap_or_default(),
    };
    compose_default(uid).unwrap_or_else(|| uid.to_string())
}

#[test]
fn sandboxes_reach_out_only_through_llmtap_with_their_own_credentials() {
    let compose = compose();
    let llmtap = service(&compose, "llmtap");
    let llmtap_uid = uid_of("llmtap", llmtap);
    let mut users = BTreeSet::new();
    users.insert(assert_proxies_through_llmtap(&compose, "gateway").user);
    for name in SANDBOXES {
        let svc = service(&compose, name);
        assert_hardened(name, svc);
        let uid = uid_of(name, svc);
        assert!(uid != "0" && uid != "root", "{name}: must not run as root");
        assert_ne!(
            uid, llmtap_uid,
            "{name}: must not run as llmtap's user (it could read the CA key)"
        );
        assert_ne!(
            svc["privileged"].as_bool(),
            Some(true),
            "{name}: privileged"
        );
        for key in [
            "cap_add",
            "devices",
            "ports",
            "expose",
            "extra_hosts",
            "dns",
        ] {
            assert!(strings(&svc[key]).is_empty(), "{name}: must not set {key}");
        }
        for key in ["network_mode", "pid", "ipc", "userns_mode"] {
            assert!(scalar(&svc[key]).is_none(), "{name}: must not set {key}");
        }

        let nets = networks_of(svc);
        assert!(!nets.is_empty(), "{name}: must name its networks");
        for net in &nets {
            assert_eq!(
                compose["networks"][net.as_str()]["internal"].as_bool(),
                Some(true),
                "{name}: network {net} must be internal: true"
            );
            assert!(
                networks_of(llmtap).contains(net),
                "{name}: llmtap must be on network {net}"
            );
            for (other, other_svc) in services(&compose) {
                assert!(
                    other == name || other == "llmtap" || !networks_of(other_svc).contains(net),
                    "{name}: network {net} must be shared with llmtap only, {other} is on it too"
                );
            }
        }

        let url = assert_proxies_through_llmtap(&compose, name);
        assert!(
            users.insert(url.user.clone()),
            "{name}: proxy user {:?} is another service's: each client has its own credentials",
            url.user
        );
        assert_eq!(
            scalar(&svc["depends_on"]["llmtap"]["condition"]).as_deref(),
            Some("service_healthy"),
            "{name} starts once llmtap is healthy (and its CA exists)"
        );
    }
}

/// The mount of `svc` that contains `path`: (source, target, read_only).
fn mount_holding(svc: &Value, path: &str) -> Option<(String, String, bool)> {
    mounts(svc).into_iter().find(|(_, dst, _)| {
        path.starts_with(&format!("{}/", dst.trim_end_matches('/'))) || path == dst
    })
}

fn tmpfs_targets(svc: &Value) -> Vec<String> {
    strings(&svc["tmpfs"])
        .into_iter()
        .map(|t| t.split(':').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn sandboxes_trust_the_llmtap_ca() {
    let compose = compose();
    let llmtap = service(&compose, "llmtap");
    let ca_dir = env_required(llmtap, "llmtap", "PROXY_CA_DIR");
    let (llmtap_ca_src, _, _) = mounts(llmtap)
        .into_iter()
        .find(|(_, dst, _)| *dst == ca_dir)
        .unwrap_or_else(|| panic!("llmtap: PROXY_CA_DIR is not a mount"));
    for name in SANDBOXES {
        let svc = service(&compose, name);
        let ca_mount = mounts(svc)
            .into_iter()
            .find(|(src, _, _)| *src == llmtap_ca_src);
        let (_, dst, ro) =
            ca_mount.unwrap_or_else(|| panic!("{name}: must mount llmtap's CA directory"));
        assert!(ro, "{name}: mounts the CA read-only");
        let ca_pem = format!("{}/ca.pem", dst.trim_end_matches('/'));
        let command = strings(&svc["command"]).join(" ");
        let mut trusted = 0;
        for key in [
            "NODE_EXTRA_CA_CERTS",
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "PIP_CERT",
        ] {
            let Some(path) = env(svc, key) else {
                continue;
            };
            trusted += 1;
            if key == "NODE_EXTRA_CA_CERTS" {
                assert_eq!(path, ca_pem, "{name}: {key} adds llmtap's ca.pem");
                continue;
            }
            // These replace the trust store: llmtap's CA alone would break every tunnelled
            // host (pypi.org keeps its own certificate). They name a bundle of the system roots
            // plus llmtap's CA that the command writes to a tmpfs (the root is read-only).
            assert_ne!(
                path, ca_pem,
                "{name}: {key} replaces the trust store; it needs a bundle, not ca.pem alone"
            );
            let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or_default();
            assert!(
                tmpfs_targets(svc).iter().any(|t| t == dir),
                "{name}: {key} {path} must be on a tmpfs (the root is read-only)"
            );
            assert!(
                command.contains(&format!("> {path}"))
                    && command.contains(&ca_pem)
                    && command.contains("/etc/ssl/certs/ca-certificates.crt"),
                "{name}: the command must build {path} from the system roots and {ca_pem}"
            );
        }
        assert!(trusted > 0, "{name}: trusts no CA file");
    }
}

/// (name, value) of every variable of an `environment:` (or `build.args`), map or list form.
fn env_vars(v: &Value) -> Vec<(String, String)> {
    match v {
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| (scalar(k).unwrap_or_default(), scalar(v).unwrap_or_default()))
            .collect(),
        Value::Sequence(seq) => seq
            .iter()
            .filter_map(scalar)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (item, String::new()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Text shaped like a real provider key (Anthropic, OpenAI, Google).
fn key_shaped() -> Regex {
    Regex::new(r"sk-ant-|sk-proj-|\bsk-[A-Za-z0-9_-]{16,}|AIza[0-9A-Za-z_-]{16,}")
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn sandboxes_hold_no_api_keys() {
    let compose = compose();
    let key_shaped = key_shaped();
    for name in SANDBOXES {
        let svc = service(&compose, name);
        assert!(
            svc["env_file"].is_null(),
            "{name}: no env_file (it could carry keys past this test)"
        );
        for (key, value) in env_vars(&svc["environment"]) {
            let upper = key.to_ascii_uppercase();
            // The sentinel is no key: llmtap swaps it for the real one (issue 10).
            assert!(
                (!upper.contains("API_KEY") && !upper.ends_with("_SECRET")) || value == SENTINEL,
                "{name}: {key} looks like an API key variable and is not the sentinel \
                 {SENTINEL:?}: sandboxes hold no keys"
            );
            assert!(
                !key_shaped.is_match(&value),
                "{name}: {key} holds something shaped like a real API key"
            );
            assert!(
                !value.contains("API_KEY"),
                "{name}: {key} interpolates an API key variable"
            );
        }
    }
}

/// llmtap's `PROXY_POLICY`, as a path in the repository (through its read-only mount).
fn mounted_policy(compose: &Value) -> PathBuf {
    mounted_file(compose, "PROXY_POLICY")
}

/// The file llmtap's variable `var` names, as a path in the repository (through its read-only mount).
fn mounted_file(compose: &Value, var: &str) -> PathBuf {
    let llmtap = service(compose, "llmtap");
    let path = env_required(llmtap, "llmtap", var);
    let (src, dst, ro) = mount_holding(llmtap, &path)
        .unwrap_or_else(|| panic!("llmtap: {var} {path} is not inside a mount"));
    assert!(
        ro,
        "llmtap: the mount {src}:{dst} of {var} must be read-only"
    );
    let rest = path
        .strip_prefix(dst.trim_end_matches('/'))
        .unwrap_or_default();
    normalise(&repo().join("compose"), &format!("{src}{rest}"))
}

#[test]
fn llmtap_enforces_a_mounted_read_only_policy_and_audits_every_decision() {
    let compose = compose();
    let llmtap = service(&compose, "llmtap");
    let host = mounted_policy(&compose);
    assert!(
        host.is_file(),
        "PROXY_POLICY is mounted from {}, which is not a file of the repository",
        host.display()
    );
    assert!(
        host.starts_with(repo().join("compose")),
        "the stack's policy lives under compose/"
    );
    assert_eq!(
        env(llmtap, "PROXY_AUDIT").as_deref(),
        Some("all"),
        "llmtap: PROXY_AUDIT=all records every decision"
    );
    assert!(
        env(llmtap, "PROXY_ALLOW_PRIVATE")
            .unwrap_or_default()
            .is_empty(),
        "llmtap: the stack opens no private range (Loki and Grafana are private addresses)"
    );
}

/// A policy file as issue 8 describes it, checked field by field.
#[derive(Debug)]
struct PolicyDoc {
    mode: String,
    /// In file order.
    clients: Vec<PolicyClient>,
    profiles: std::collections::BTreeMap<String, PolicyProfile>,
}

#[derive(Debug)]
struct PolicyClient {
    name: String,
    token_sha256: Option<String>,
    sources: Vec<String>,
    profile: String,
}

#[derive(Debug)]
struct PolicyProfile {
    allow: Vec<String>,
    deny: Vec<String>,
    allow_private: Vec<String>,
}

fn toml_strings(label: &str, field: &str, v: Option<&toml::Value>) -> Vec<String> {
    let Some(v) = v else {
        return Vec::new();
    };
    let items = v
        .as_array()
        .unwrap_or_else(|| panic!("{label}: {field} must be an array"));
    items
        .iter()
        .map(|i| {
            i.as_str()
                .unwrap_or_else(|| panic!("{label}: {field} holds a non-string {i:?}"))
                .to_string()
        })
        .collect()
}

fn only_keys(label: &str, table: &toml::Table, allowed: &[&str]) {
    for key in table.keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{label}: unknown key {key:?} (allowed: {allowed:?})"
        );
    }
}

fn policy_doc(path: &Path) -> PolicyDoc {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{label}: {e}"));
    let table: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{label} is not valid TOML: {e}"));
    only_keys(&label, &table, &["mode", "client", "profile"]);
    let mode = table
        .get("mode")
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{label}: needs mode"))
        .to_string();
    assert!(
        ["enforce", "report"].contains(&mode.as_str()),
        "{label}: mode {mode:?}"
    );
    let mut clients: Vec<PolicyClient> = Vec::new();
    let client_items = table
        .get("client")
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("{label}: needs [[client]] entries"));
    for (i, c) in client_items.iter().enumerate() {
        let c = c
            .as_table()
            .unwrap_or_else(|| panic!("{label}: client[{i}] is not a table"));
        let at = format!("{label}: client[{i}]");
        only_keys(&at, c, &["name", "token_sha256", "sources", "profile"]);
        let text_of = |key: &str| c.get(key).and_then(toml::Value::as_str).map(str::to_string);
        let name = text_of("name").unwrap_or_else(|| panic!("{at}: needs name"));
        let profile = text_of("profile").unwrap_or_else(|| panic!("{at}: needs profile"));
        let token = text_of("token_sha256");
        if let Some(t) = &token {
            assert!(
                t.len() == 64 && t.chars().all(|ch| matches!(ch, '0'..='9' | 'a'..='f')),
                "{at}: token_sha256 {t:?} is not 64 lower-case hex digits"
            );
        }
        let sources = toml_strings(&at, "sources", c.get("sources"));
        for s in &sources {
            assert!(
                s.parse::<ipnet::IpNet>().is_ok(),
                "{at}: source {s:?} is not a CIDR"
            );
        }
        assert!(
            clients.iter().all(|c| c.name != name),
            "{at}: client {name:?} appears twice"
        );
        clients.push(PolicyClient {
            name,
            token_sha256: token,
            sources,
            profile,
        });
    }
    let mut profiles = std::collections::BTreeMap::new();
    let profile_items = table
        .get("profile")
        .and_then(toml::Value::as_table)
        .unwrap_or_else(|| panic!("{label}: needs [profile.*] tables"));
    for (name, p) in profile_items {
        let at = format!("{label}: profile.{name}");
        let p = p
            .as_table()
            .unwrap_or_else(|| panic!("{at} is not a table"));
        only_keys(&at, p, &["allow", "deny", "allow_private", "limits"]);
        assert!(p.contains_key("allow"), "{at}: needs allow (even empty)");
        let lists = PolicyProfile {
            allow: toml_strings(&at, "allow", p.get("allow")),
            deny: toml_strings(&at, "deny", p.get("deny")),
            allow_private: toml_strings(&at, "allow_private", p.get("allow_private")),
        };
        for cidr in &lists.allow_private {
            assert!(
                cidr.parse::<ipnet::IpNet>().is_ok(),
                "{at}: allow_private {cidr:?} is not a CIDR"
            );
        }
        profiles.insert(name.clone(), lists);
    }
    PolicyDoc {
        mode,
        clients,
        profiles,
    }
}

/// A host pattern without its port: `files.pythonhosted.org:443` → `files.pythonhosted.org`.
fn pattern_host(pattern: &str) -> &str {
    match pattern.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => pattern,
    }
}

fn client<'a>(doc: &'a PolicyDoc, label: &str, name: &str) -> &'a PolicyClient {
    doc.clients
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{label}: no [[client]] named {name:?}"))
}

/// What both policy files promise: default deny, the seed's browse and code profiles.
fn assert_default_deny_and_the_seed_profiles(label: &str, doc: &PolicyDoc) {
    for c in &doc.clients {
        assert!(
            doc.profiles.contains_key(&c.profile),
            "{label}: client {} names profile {:?}, which does not exist",
            c.name,
            c.profile
        );
    }
    let default = doc
        .profiles
        .get("default")
        .unwrap_or_else(|| panic!("{label}: needs [profile.default] (clients that match nothing)"));
    assert!(
        default.allow.is_empty() && default.allow_private.is_empty(),
        "{label}: profile.default must allow nothing"
    );
    for sandbox in SANDBOXES {
        assert!(
            client(doc, label, sandbox).token_sha256.is_some(),
            "{label}: {sandbox} needs a token_sha256"
        );
    }

    let browse = &doc.profiles[&client(doc, label, "browser-sandbox").profile];
    assert_eq!(
        browse.allow,
        ["*"],
        "{label}: the browser sandbox may browse"
    );
    assert!(
        browse.deny.iter().any(|d| d == "*.internal"),
        "{label}: the browser sandbox may not reach *.internal"
    );

    let code = &doc.profiles[&client(doc, label, "code-sandbox").profile];
    let hosts: BTreeSet<&str> = code.allow.iter().map(|p| pattern_host(p)).collect();
    assert_eq!(
        hosts,
        CODE_PROFILE_HOSTS.into_iter().collect::<BTreeSet<_>>(),
        "{label}: the code sandbox may reach exactly the LLM APIs and the package registries"
    );
    assert!(
        code.allow_private.is_empty(),
        "{label}: the code sandbox reaches no private address"
    );
}

fn sha256_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_example_policy_tells_the_seed_story() {
    let path = repo().join(POLICY_EXAMPLE);
    let doc = policy_doc(&path);
    let label = POLICY_EXAMPLE;
    assert_eq!(doc.mode, "enforce");
    assert_default_deny_and_the_seed_profiles(label, &doc);
    let names: Vec<&str> = doc.clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, SANDBOXES, "{label}: the seed's two sandboxes");
    let browser = client(&doc, label, "browser-sandbox");
    assert_eq!(browser.profile, "browse");
    assert_eq!(browser.sources, ["172.30.1.0/24"]);
    assert_eq!(client(&doc, label, "code-sandbox").profile, "code");
    assert_eq!(
        doc.profiles["code"].allow,
        [
            "api.anthropic.com",
            "api.openai.com",
            "pypi.org",
            "files.pythonhosted.org:443",
            "registry.npmjs.org"
        ],
        "{label}: the issue's code profile"
    );
    // The example tokens its comments name are the ones hashed (and obviously examples).
    let text = read(POLICY_EXAMPLE);
    for (name, token) in [
        ("browser-sandbox", "browser-example-token"),
        ("code-sandbox", "code-example-token"),
    ] {
        assert!(
            text.contains(token),
            "{label}: names the example token {token}"
        );
        assert_eq!(
            client(&doc, label, name).token_sha256.as_deref(),
            Some(sha256_hex(token).as_str()),
            "{label}: {name}'s token_sha256 is not sha256({token})"
        );
    }
    assert!(
        text.contains("printf %s \"$TOKEN\" | sha256sum"),
        "{label}: says how to make a hash"
    );
}

#[test]
fn the_stack_policy_denies_by_default_and_knows_every_proxy_user() {
    let compose = compose();
    let path = mounted_policy(&compose);
    let label = path.display().to_string();
    let doc = policy_doc(&path);
    assert_eq!(doc.mode, "enforce", "{label}: the stack enforces");
    assert_default_deny_and_the_seed_profiles(&label, &doc);

    for name in std::iter::once("gateway").chain(SANDBOXES) {
        let url = assert_proxies_through_llmtap(&compose, name);
        let token = client(&doc, &label, &url.user)
            .token_sha256
            .as_deref()
            .unwrap_or_else(|| panic!("{label}: client {} needs a token_sha256", url.user));
        // Out of the box (no .env), compose uses the password's default: it must be the one
        // the policy's hash was made from, or the stack answers 407.
        if let Some(default) = compose_default(&url.password) {
            assert_eq!(
                sha256_hex(&default),
                token,
                "{name}: the default proxy password does not match {label}'s token_sha256 of {}",
                url.user
            );
        }
    }

    // The gateway may reach exactly the hosts llmtap intercepts, on 443.
    let gateway_user = assert_proxies_through_llmtap(&compose, "gateway").user;
    let llm = &doc.profiles[&client(&doc, &label, &gateway_user).profile];
    let llm_hosts: BTreeSet<String> =
        env_required(service(&compose, "llmtap"), "llmtap", "PROXY_LLM_HOSTS")
            .split(',')
            .map(|h| format!("{}:443", h.trim()))
            .collect();
    assert_eq!(
        llm.allow.iter().cloned().collect::<BTreeSet<_>>(),
        llm_hosts,
        "{label}: the gateway's profile allows exactly PROXY_LLM_HOSTS on 443"
    );
    assert!(llm.deny.is_empty() && llm.allow_private.is_empty());
}

/// Both policy files load through llmtap's own parser (what `--policy` does at start).
#[test]
fn policy_files_load_through_the_llmtap_parser() {
    let compose = compose();
    for path in [repo().join(POLICY_EXAMPLE), mounted_policy(&compose)] {
        let set = llmtap::policy::PolicySet::load(&path)
            .unwrap_or_else(|e| panic!("llmtap refuses {}: {e}", path.display()));
        assert_eq!(
            set.mode,
            llmtap::policy::Mode::Enforce,
            "{}",
            path.display()
        );
        let names = set.client_names();
        for sandbox in SANDBOXES {
            assert!(
                names.iter().any(|n| n == sandbox),
                "{}: llmtap loaded clients {names:?}, not {sandbox}",
                path.display()
            );
        }
    }
}

// ---------- provider keys: llmtap alone holds them (issue 10) ----------

/// A variable name that would carry a provider key or another secret. `*_PROXY_TOKEN` (the
/// password part of a client's HTTPS_PROXY) is a client's own credential for llmtap, not a key.
fn key_named(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if upper.ends_with("_PROXY_TOKEN") {
        return false;
    }
    upper.contains("API_KEY")
        || upper.contains("APIKEY")
        || upper.ends_with("_KEY")
        || upper == "TOKEN"
        || upper.ends_with("_TOKEN")
        || upper.contains("SECRET")
}

/// The variables `text` interpolates: `$NAME`, `${NAME}`, `${NAME:-default}`, ...
fn interpolated(text: &str) -> Vec<String> {
    static RE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)").unwrap_or_else(|e| panic!("{e}"))
    });
    RE.captures_iter(text).map(|c| c[1].to_string()).collect()
}

/// Every string scalar (keys and values) anywhere in `v`.
fn all_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Mapping(map) => {
            for (k, v) in map {
                out.extend(scalar(k));
                all_strings(v, out);
            }
        }
        Value::Sequence(seq) => seq.iter().for_each(|v| all_strings(v, out)),
        Value::Tagged(t) => all_strings(&t.value, out),
        other => out.extend(scalar(other)),
    }
}

/// The `env_file` entries of a service: a path, a list of paths, or a list of `{path, required}`.
fn env_files(svc: &Value) -> Vec<String> {
    match &svc["env_file"] {
        Value::Null => Vec::new(),
        Value::Sequence(seq) => seq
            .iter()
            .filter_map(|e| match e {
                Value::Mapping(_) => scalar(&e["path"]),
                other => scalar(other),
            })
            .collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// (name, value) of each `NAME=value` line of an env file.
fn env_file_vars(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// (source, path in the container) of each secret a service lists; compose mounts a secret at
/// /run/secrets/TARGET (TARGET defaults to the secret's name; an absolute target is the path).
fn secrets_of(svc: &Value) -> Vec<(String, String)> {
    let Some(seq) = svc["secrets"].as_sequence() else {
        return Vec::new();
    };
    seq.iter()
        .filter_map(|s| {
            let (source, target) = match s {
                Value::Mapping(_) => {
                    let source = scalar(&s["source"])?;
                    let target = scalar(&s["target"]).unwrap_or_else(|| source.clone());
                    (source, target)
                }
                other => {
                    let name = scalar(other)?;
                    (name.clone(), name)
                }
            };
            let path = if target.starts_with('/') {
                target
            } else {
                format!("/run/secrets/{target}")
            };
            Some((source, path))
        })
        .collect()
}

/// The names of the top-level secrets whose file lies under compose/secrets/: the real keys.
fn key_secrets(compose: &Value) -> BTreeSet<String> {
    let Some(map) = compose["secrets"].as_mapping() else {
        return BTreeSet::new();
    };
    map.iter()
        .filter(|(_, def)| {
            scalar(&def["file"]).is_some_and(|f| {
                normalise(&repo().join("compose"), &f).starts_with(repo().join(SECRETS_DIR))
            })
        })
        .filter_map(|(name, _)| scalar(name))
        .collect()
}

fn assert_holds_no_real_key(name: &str, origin: &str, key: &str, value: &str, shaped: &Regex) {
    if key_named(key) {
        // Literally the sentinel: `${ANTHROPIC_API_KEY:-llmtap-managed}` would let a real key
        // from the shell or compose/.env through, and an empty value passes the shell's on.
        assert!(
            value == SENTINEL,
            "{name}: {origin} {key} looks like a provider key or secret and is not the sentinel \
             {SENTINEL:?}: only llmtap holds real keys (compose/llmtap/keys.toml)"
        );
    }
    assert!(
        !shaped.is_match(value),
        "{name}: {origin} {key} holds something shaped like a real API key"
    );
}

#[test]
fn no_service_but_llmtap_holds_a_real_key() {
    let compose = compose();
    let shaped = key_shaped();
    let keys = key_secrets(&compose);
    assert!(
        !keys.is_empty(),
        "{COMPOSE}: the real keys are top-level secrets with a file under {SECRETS_DIR}/"
    );
    let secrets_dir = repo().join(SECRETS_DIR);
    let mut sentinel_holders = 0;
    for (name, svc) in services(&compose) {
        if name == "llmtap" {
            continue;
        }
        // environment: and build args: a key variable holds the literal sentinel or nothing.
        for (origin, vars) in [
            ("environment", env_vars(&svc["environment"])),
            ("build.args", env_vars(&svc["build"]["args"])),
        ] {
            for (key, value) in vars {
                assert_holds_no_real_key(&name, origin, &key, &value, &shaped);
                sentinel_holders += usize::from(key_named(&key));
            }
        }
        // env_file: only a file of the repository can be checked; a user's file (compose/.env,
        // git-ignored) could carry anything, so only llmtap may read one.
        for file in env_files(svc) {
            let path = normalise(&repo().join("compose"), &file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{name}: env_file {file} cannot be checked ({e}): it could carry a real key; \
                     only llmtap may read an env file that is not in the repository"
                )
            });
            for (key, value) in env_file_vars(&text) {
                assert_holds_no_real_key(
                    &name,
                    &format!("env_file {file}:"),
                    &key,
                    &value,
                    &shaped,
                );
            }
        }
        // Anywhere else (command, entrypoint, labels, ...): no interpolated key variable.
        let mut texts = Vec::new();
        all_strings(svc, &mut texts);
        for text in &texts {
            for var in interpolated(text) {
                assert!(
                    !key_named(&var),
                    "{name}: interpolates ${{{var}}}, a key variable: it would hand the service the \
                     real key from the shell or compose/.env ({text:?})"
                );
            }
        }
        // The key secrets are llmtap's alone, as secrets and as files.
        for (source, _) in secrets_of(svc) {
            assert!(
                !keys.contains(&source),
                "{name}: lists the key secret {source}: only llmtap may"
            );
        }
        for s in strings(&svc["build"]["secrets"]).into_iter().chain(
            svc["build"]["secrets"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|s| scalar(&s["source"])),
        ) {
            assert!(
                !keys.contains(&s),
                "{name}: build uses the key secret {s}: only llmtap may"
            );
        }
        for (src, dst, _) in mounts(svc) {
            if !(src.starts_with('.') || src.starts_with('/') || src.starts_with('~')) {
                continue; // a named volume
            }
            let host = normalise(&repo().join("compose"), &src);
            assert!(
                !secrets_dir.starts_with(&host) && !host.starts_with(&secrets_dir),
                "{name}: the mount {src}:{dst} exposes {SECRETS_DIR}/, where the real keys are"
            );
        }
    }
    assert!(
        sentinel_holders > 0,
        "no service holds the sentinel {SENTINEL:?}: the check above saw no key variable at all"
    );
    // Top-level configs are files mounted into services too: none may be a key file.
    if let Some(configs) = compose["configs"].as_mapping() {
        for (cname, def) in configs {
            let file = scalar(&def["file"]).unwrap_or_default();
            assert!(
                file.is_empty()
                    || !normalise(&repo().join("compose"), &file).starts_with(&secrets_dir),
                "config {cname:?} is a file under {SECRETS_DIR}/"
            );
        }
    }
    // Nothing in the compose file is a key, llmtap's part included.
    assert!(
        !shaped.is_match(&read(COMPOSE)),
        "{COMPOSE} holds something shaped like a real API key"
    );
}

/// Does `host` fall under one of llmtap's PROXY_LLM_HOSTS (exact, or `*.suffix`)?
fn intercepted(llm_hosts: &str, host: &str) -> bool {
    llm_hosts
        .split(',')
        .map(str::trim)
        .any(|p| match p.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => p == host,
        })
}

#[test]
fn llmtap_reads_every_key_from_a_secret_of_its_own() {
    let compose = compose();
    let llmtap = service(&compose, "llmtap");
    let path = mounted_file(&compose, "PROXY_KEYS");
    let label = path.display().to_string();
    assert!(
        path.is_file() && path.starts_with(repo().join("compose")),
        "PROXY_KEYS is mounted from {label}, which is not a file of the repository under compose/"
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(
        !key_shaped().is_match(&text),
        "{label} holds something shaped like a real key: it names where the keys are, never a key"
    );
    let table: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{label} is not valid TOML: {e}"));
    only_keys(&label, &table, &["key"]);
    let entries = table
        .get("key")
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("{label}: needs [[key]] entries"));
    assert!(!entries.is_empty(), "{label}: no [[key]]");

    let mounted = secrets_of(llmtap);
    let llm_hosts = env_required(llmtap, "llmtap", "PROXY_LLM_HOSTS");
    let policy = policy_doc(&mounted_policy(&compose));
    let secrets_dir = repo().join(SECRETS_DIR);
    // (host, client) pairs some [[key]] serves.
    let mut served: BTreeSet<(String, String)> = BTreeSet::new();
    let mut hosts: BTreeSet<String> = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("{label}: key[{i}]");
        let entry = entry
            .as_table()
            .unwrap_or_else(|| panic!("{at} is not a table"));
        // No field for an inline key: a key is read from a file or the environment only.
        only_keys(
            &at,
            entry,
            &[
                "host",
                "from_env",
                "from_file",
                "sentinel",
                "require_sentinel",
                "clients",
            ],
        );
        let text_of = |key: &str| {
            entry.get(key).map(|v| {
                v.as_str()
                    .unwrap_or_else(|| panic!("{at}: {key} must be a string"))
                    .to_string()
            })
        };
        let host = text_of("host").unwrap_or_else(|| panic!("{at}: needs host"));
        assert!(
            !host.is_empty() && !host.contains(['*', '/', ':']),
            "{at}: host {host:?} must be one exact host name"
        );
        assert!(
            intercepted(&llm_hosts, &host),
            "{at}: {host} is not in llmtap's PROXY_LLM_HOSTS: it would be tunnelled, never swapped"
        );
        hosts.insert(host.clone());
        match (text_of("from_file"), text_of("from_env")) {
            (Some(file), None) => {
                let (source, _) = mounted
                    .iter()
                    .find(|(_, target)| *target == file)
                    .unwrap_or_else(|| {
                        panic!(
                            "{at}: from_file {file} is not a secret mounted into llmtap \
                             (/run/secrets/NAME, the llmtap service's `secrets:`)"
                        )
                    });
                let def = &compose["secrets"][source.as_str()];
                let src = scalar(&def["file"]).unwrap_or_else(|| {
                    panic!("{COMPOSE}: secret {source} must be a file (top-level secrets.{source}.file)")
                });
                assert!(
                    normalise(&repo().join("compose"), &src).starts_with(&secrets_dir),
                    "{COMPOSE}: secret {source} ({src}) must be a file under {SECRETS_DIR}/ (git-ignored)"
                );
            }
            (None, Some(var)) => match env(llmtap, &var) {
                // Passed through from the shell or compose/.env, never written in compose.yaml.
                Some(value) => assert!(
                    value.starts_with("${") && compose_default(&value).is_none_or(|d| d.is_empty()),
                    "{at}: from_env {var}: llmtap's environment must pass it through (${{{var}}}), \
                     not set it"
                ),
                None => assert!(
                    !env_files(llmtap).is_empty(),
                    "{at}: from_env {var}: llmtap's environment does not pass it"
                ),
            },
            _ => panic!(
                "{at}: needs exactly one of from_file and from_env (a key is never written in the keys file)"
            ),
        }
        assert_eq!(
            entry.get("require_sentinel").and_then(toml::Value::as_bool),
            Some(true),
            "{at}: require_sentinel = true: any other credential sent to {host} is refused"
        );
        let sentinel = text_of("sentinel").unwrap_or_else(|| SENTINEL.to_string());
        assert_eq!(
            sentinel, SENTINEL,
            "{at}: the stack's services hold {SENTINEL:?}"
        );
        // A key without `clients` serves every client, the unidentified "default" included.
        let clients = toml_strings(&at, "clients", entry.get("clients"));
        assert!(
            !clients.is_empty(),
            "{at}: must name its clients: only the services that hold the sentinel get the key"
        );
        for name in &clients {
            client(&policy, &label, name);
        }
        served.extend(clients.into_iter().map(|c| (host.clone(), c)));
    }
    // Every secret llmtap lists is a key of this file: llmtap holds nothing it does not use.
    for (source, target) in &mounted {
        assert!(
            entries
                .iter()
                .any(|e| e.get("from_file").and_then(toml::Value::as_str) == Some(target)),
            "llmtap lists the secret {source} ({target}), which no [[key]] of {label} reads"
        );
    }
    // Every service that holds a sentinel gets a key for it: the SDKs' variables name their
    // provider's host; any other key variable needs some key for that client.
    for (name, svc) in services(&compose) {
        if name == "llmtap" {
            continue;
        }
        for (var, value) in env_vars(&svc["environment"]) {
            if !key_named(&var) || value != SENTINEL {
                continue;
            }
            let user = assert_proxies_through_llmtap(&compose, &name).user;
            let host = match var.as_str() {
                "ANTHROPIC_API_KEY" | "ANTHROPIC_AUTH_TOKEN" => Some("api.anthropic.com"),
                "OPENAI_API_KEY" => Some("api.openai.com"),
                "GEMINI_API_KEY" | "GOOGLE_API_KEY" => Some("generativelanguage.googleapis.com"),
                _ => None,
            };
            let ok = served
                .iter()
                .any(|(h, c)| *c == user && host.is_none_or(|want| h == want));
            assert!(
                ok,
                "{name} holds the sentinel in {var}, but no [[key]] of {label} serves client \
                 {user}{}",
                host.map(|h| format!(" on {h}")).unwrap_or_default()
            );
        }
    }
    for host in ["api.anthropic.com", "api.openai.com"] {
        assert!(hosts.contains(host), "{label}: needs a [[key]] for {host}");
    }
}

#[test]
fn reverse_routes_listen_inside_the_stack_on_a_port_of_their_own() {
    let compose = compose();
    let llmtap = service(&compose, "llmtap");
    let reverse = env_required(llmtap, "llmtap", "PROXY_REVERSE_LISTEN");
    let port = reverse.rsplit(':').next().unwrap_or_default().to_string();
    assert!(
        port.parse::<u16>().is_ok(),
        "PROXY_REVERSE_LISTEN {reverse:?} names no port"
    );
    assert_ne!(
        port,
        listen_port(&compose),
        "the base-URL routes need a port of their own"
    );
    // There a client sends no proxy credentials and is identified by its source address alone:
    // a service that uses the routes needs a fixed address inside some policy client's sources.
    let policy = policy_doc(&mounted_policy(&compose));
    let base = format!("http://llmtap:{port}/");
    for (name, svc) in services(&compose) {
        let uses = env_vars(&svc["environment"])
            .into_iter()
            .find(|(_, v)| v.starts_with(&base));
        let Some((var, url)) = uses else {
            continue;
        };
        let addresses: Vec<std::net::IpAddr> = match &svc["networks"] {
            Value::Mapping(map) => map
                .values()
                .filter_map(|n| scalar(&n["ipv4_address"]).or_else(|| scalar(&n["ipv6_address"])))
                .filter_map(|a| a.parse().ok())
                .collect(),
            _ => Vec::new(),
        };
        assert!(
            addresses.iter().any(|ip| policy.clients.iter().any(|c| c
                .sources
                .iter()
                .any(|s| s.parse::<ipnet::IpNet>().is_ok_and(|n| n.contains(ip))))),
            "{name}: {var}={url} reaches llmtap's base-URL routes, where it is known by its source \
             address only: give it a fixed ipv4_address that a policy client's sources hold"
        );
    }
}

/// Whether `gitignore` (the repository's root .gitignore) ignores `rel`, a path from the root, the
/// way git decides it: the last matching pattern wins, `!` re-includes, a pattern with a slash
/// before its end is anchored at the root, and nothing under an ignored directory comes back.
fn gitignore_ignores(gitignore: &str, rel: &str) -> bool {
    let rules: Vec<(bool, bool, Regex)> = gitignore
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (negate, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, line),
            };
            let (dir_only, pat) = match pat.strip_suffix('/') {
                Some(p) => (true, p),
                None => (false, pat),
            };
            let mut re = String::from(if pat.contains('/') { "^" } else { "^(?:.*/)?" });
            let mut chars = pat.trim_start_matches('/').chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '*' if chars.peek() == Some(&'*') => {
                        chars.next();
                        if chars.next_if_eq(&'/').is_some() {
                            re.push_str("(?:.*/)?");
                        } else {
                            re.push_str(".*");
                        }
                    }
                    '*' => re.push_str("[^/]*"),
                    '?' => re.push_str("[^/]"),
                    c => re.push_str(&regex::escape(&c.to_string())),
                }
            }
            re.push('$');
            let re = Regex::new(&re).unwrap_or_else(|e| panic!(".gitignore {line:?}: {e}"));
            (negate, dir_only, re)
        })
        .collect();
    let parts: Vec<&str> = rel.split('/').collect();
    (1..=parts.len()).any(|depth| {
        let prefix = parts[..depth].join("/");
        let is_dir = depth < parts.len();
        rules
            .iter()
            .rev()
            .find(|(_, dir_only, re)| (is_dir || !dir_only) && re.is_match(&prefix))
            .is_some_and(|(negate, _, _)| !negate)
    })
}

fn git(args: &[&str]) -> Option<std::process::Output> {
    std::process::Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(args)
        .output()
        .ok()
        .filter(|_| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(repo())
                .args(["rev-parse", "--is-inside-work-tree"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[test]
fn key_secret_files_are_git_ignored() {
    let compose = compose();
    let gitignore = read(".gitignore");
    // The matcher itself, on what the repository already ignores and keeps.
    assert!(gitignore_ignores(&gitignore, "certs/ca-key.pem"));
    assert!(!gitignore_ignores(&gitignore, "certs/README.md"));
    assert!(!gitignore_ignores(&gitignore, "compose/compose.yaml"));

    let keys = key_secrets(&compose);
    assert!(
        !keys.is_empty(),
        "{COMPOSE}: no secret has a file under {SECRETS_DIR}/"
    );
    let mut files: Vec<String> = compose["secrets"]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter_map(|(_, def)| scalar(&def["file"]))
        .map(|f| {
            let path = normalise(&repo().join("compose"), &f);
            path.strip_prefix(repo())
                .unwrap_or_else(|_| panic!("secret file {f} lies outside the repository"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // compose/.env: where the README puts the proxy tokens (and where a user may put keys).
    files.push("compose/.env".to_string());
    for rel in &files {
        assert!(
            gitignore_ignores(&gitignore, rel),
            ".gitignore must ignore {rel}: it holds secrets"
        );
    }
    let readme = format!("{SECRETS_DIR}/README.md");
    assert!(
        repo().join(&readme).is_file() && !gitignore_ignores(&gitignore, &readme),
        "{readme} says what to put in {SECRETS_DIR}/ and stays tracked"
    );

    // git agrees, and has none of them tracked (a force-added file is not ignored).
    if let Some(out) = git(&["ls-files", "--", SECRETS_DIR]) {
        let tracked = String::from_utf8_lossy(&out.stdout).into_owned();
        for file in tracked.lines() {
            assert_eq!(
                file, readme,
                "git tracks {file}: a secret must never be committed"
            );
        }
        for rel in &files {
            let out = git(&["check-ignore", "--quiet", "--", rel]).expect("git ran before");
            assert!(
                out.status.success(),
                "git check-ignore says {rel} is not ignored (or is tracked)"
            );
        }
    }
}

/// `repo[:tag][@digest]` has a tag other than latest, or a digest.
fn image_is_pinned(image: &str) -> bool {
    if image.contains("@sha256:") {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => !tag.is_empty() && tag != "latest" && !tag.contains('$'),
        None => false,
    }
}

#[test]
fn every_image_is_pinned() {
    let compose = compose();
    for (name, svc) in services(&compose) {
        match scalar(&svc["image"]) {
            Some(image) => assert!(
                image_is_pinned(&image),
                "{name}: image {image:?} is not pinned"
            ),
            None => assert!(!svc["build"].is_null(), "{name}: neither image nor build"),
        }
    }
    for dockerfile in ["Dockerfile", "compose/gateway/Dockerfile"] {
        let froms = from_images(&read(dockerfile));
        assert!(!froms.is_empty(), "{dockerfile} has no FROM");
        for image in froms {
            assert!(
                image_is_pinned(&image),
                "{dockerfile}: FROM {image} is not pinned"
            );
        }
    }
}

// ---------- Dockerfile ----------

/// Instructions with continuation lines joined, comments dropped.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (op, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((op.to_ascii_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

/// External images of FROM lines (earlier stage names excluded).
fn from_images(dockerfile: &str) -> Vec<String> {
    let mut stages = BTreeSet::new();
    let mut images = Vec::new();
    for (op, rest) in instructions(dockerfile) {
        if op != "FROM" {
            continue;
        }
        let words: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let image = words.first().copied().unwrap_or_default();
        if !stages.contains(&image.to_ascii_lowercase()) && image != "scratch" {
            images.push(image.to_string());
        }
        if let [_, as_kw, stage] = words.as_slice()
            && as_kw.eq_ignore_ascii_case("as")
        {
            stages.insert(stage.to_ascii_lowercase());
        }
    }
    images
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_healthcheck() {
    let text = read("Dockerfile");
    let ins = instructions(&text);
    let froms: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(froms.len() >= 2, "Dockerfile must be multi-stage");
    let last_from = froms.last().copied().unwrap_or(0);
    let final_stage = &ins[last_from..];
    let user = final_stage
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, v)| v.clone());
    let runtime_image = &final_stage[0].1;
    let user = user.unwrap_or_else(|| {
        assert!(
            runtime_image.contains(":nonroot"),
            "the final stage needs USER (or a :nonroot base)"
        );
        "nonroot".to_string()
    });
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        uid != "0" && uid != "root",
        "the image must not run as root"
    );

    let has =
        |op: &str, pred: &dyn Fn(&str) -> bool| final_stage.iter().any(|(o, v)| o == op && pred(v));
    assert!(has("EXPOSE", &|v| v
        .split_whitespace()
        .any(|p| p == "8080" || p == "8080/tcp")));
    assert!(
        has("HEALTHCHECK", &|v| {
            let compact: String = v
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '"' && *c != ',')
                .collect();
            compact.contains("CMD[llmtaphealthcheck]") || v.contains("CMD llmtap healthcheck")
        }),
        "HEALTHCHECK must run `llmtap healthcheck`"
    );
    let env_text: String = final_stage
        .iter()
        .filter(|(op, _)| op == "ENV")
        .map(|(_, v)| format!("{v} "))
        .collect();
    assert!(env_text.contains("PROXY_LISTEN=0.0.0.0:8080"));
    assert!(env_text.contains("PROXY_CA_DIR="));
    let addons = Regex::new(r"PROXY_ADDONS_CONFIG=(\S+)")
        .ok()
        .and_then(|re| {
            re.captures(&env_text)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str().to_string())
        });
    let addons = addons.unwrap_or_else(|| panic!("the image must set PROXY_ADDONS_CONFIG"));
    assert!(
        has("COPY", &|v| v.contains("addons-config")
            && v.trim_end().ends_with(addons.as_str())),
        "addons-config must be copied to {addons}"
    );
    assert!(
        text.contains("ca-certificates") || runtime_image.contains("distroless"),
        "the runtime image needs CA roots for upstream verification"
    );

    let ignore: BTreeSet<String> = read(".dockerignore")
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("**/")
                .trim_matches('/')
                .to_string()
        })
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["target", "certs"] {
        assert!(
            ignore.contains(needed),
            ".dockerignore must exclude {needed}/"
        );
    }
}

// ---------- Loki ----------

#[test]
fn loki_accepts_the_largest_record_llmtap_is_configured_to_send() {
    let compose = compose();
    let llmtap = service(&compose, "llmtap");
    let record = env(llmtap, "PROXY_MAX_RECORD_BYTES")
        .map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|e| panic!("PROXY_MAX_RECORD_BYTES {v:?}: {e}"))
        })
        .unwrap_or(LLMTAP_DEFAULT_MAX_RECORD_BYTES);
    if let Some(body) = env(llmtap, "PROXY_MAX_BODY_SIZE") {
        let body: u64 = body
            .parse()
            .unwrap_or_else(|e| panic!("PROXY_MAX_BODY_SIZE {body:?}: {e}"));
        assert!(
            body <= record,
            "a full body ({body}) must fit in one record ({record})"
        );
    }

    // compose mounts this very file as Loki's config.
    let loki = service(&compose, "loki");
    let config_arg = strings(&loki["command"])
        .into_iter()
        .find_map(|a| a.strip_prefix("-config.file=").map(str::to_string))
        .unwrap_or_else(|| panic!("loki: no -config.file"));
    let mounted = mounts(loki)
        .into_iter()
        .find(|(_, dst, _)| *dst == config_arg);
    let (src, _, _) = mounted.unwrap_or_else(|| panic!("loki: {config_arg} is not mounted"));
    assert_eq!(
        normalise(&repo().join("compose"), &src),
        normalise(&repo(), LOKI_CONFIG)
    );

    let cfg = yaml(LOKI_CONFIG);
    let limits = &cfg["limits_config"];
    assert_eq!(limits["allow_structured_metadata"].as_bool(), Some(true));
    let line = loki_bytes(&limits["max_line_size"]);
    assert!(
        line >= record,
        "max_line_size {line} < PROXY_MAX_RECORD_BYTES {record}"
    );
    let metadata = loki_bytes(&limits["max_structured_metadata_size"]);
    assert!(
        metadata > LOKI_DEFAULT_MAX_STRUCTURED_METADATA,
        "max_structured_metadata_size must be raised"
    );
    let mib = 1024.0 * 1024.0;
    let burst = limits["ingestion_burst_size_mb"].as_f64().unwrap_or(6.0) * mib;
    assert!(
        burst >= record as f64,
        "ingestion_burst_size_mb is smaller than one record"
    );
    if !limits["per_stream_rate_limit_burst"].is_null() {
        assert!(loki_bytes(&limits["per_stream_rate_limit_burst"]) >= record);
    }
    let grpc = cfg["server"]["grpc_server_max_recv_msg_size"]
        .as_u64()
        .unwrap_or(4 * 1024 * 1024);
    assert!(
        grpc >= record,
        "grpc_server_max_recv_msg_size is smaller than one record"
    );
    let schema = &cfg["schema_config"]["configs"];
    let last = schema
        .as_sequence()
        .and_then(|s| s.last())
        .unwrap_or(&Value::Null);
    assert_eq!(
        scalar(&last["store"]).as_deref(),
        Some("tsdb"),
        "structured metadata needs tsdb"
    );
    assert_eq!(
        scalar(&last["schema"]).as_deref(),
        Some("v13"),
        "structured metadata needs schema v13"
    );
}

// ---------- Grafana ----------

fn collect_strings(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map {
                if k == key
                    && let Some(s) = val.as_str()
                {
                    out.push(s.to_string());
                }
                collect_strings(val, key, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_strings(i, key, out)),
        _ => {}
    }
}

#[test]
fn dashboard_queries_use_only_names_llmtap_emits() {
    let emitted: BTreeSet<String> = ALL.iter().map(|k| loki_name(k)).collect();
    let service_label = loki_name("service.name");
    let compose = compose();
    let service_name =
        env(service(&compose, "llmtap"), "OTEL_SERVICE_NAME").unwrap_or_else(|| "llmtap".into());
    let selector = format!("{{{service_label}=\"{service_name}\"}}");

    let dashboard = json(DASHBOARD);
    let mut exprs = Vec::new();
    collect_strings(&dashboard, "expr", &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has no queries");
    let selectors = Regex::new(r"\{([^}]*)\}").unwrap_or_else(|e| panic!("{e}"));
    for expr in &exprs {
        assert!(
            expr.contains(&selector),
            "query does not select {selector}: {expr}"
        );
        for sel in selectors.captures_iter(expr) {
            let inner = sel.get(1).map(|m| m.as_str()).unwrap_or_default();
            if inner.contains('=') {
                assert!(
                    inner.trim_start().starts_with(&service_label),
                    "stream selectors may only use the index label {service_label}: {expr}"
                );
            }
        }
    }

    // Every attribute-shaped name anywhere in the dashboard (queries, legends, table columns).
    let text = read(DASHBOARD);
    let ident = Regex::new(
        r"\b(?:gen_ai|llmtap|http|url|server|client|user_agent|error|network)_[a-z0-9_]*[a-z0-9]\b",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let used: BTreeSet<String> = ident
        .find_iter(&text)
        .map(|m| m.as_str().to_string())
        .collect();
    let unknown: Vec<&String> = used.iter().filter(|n| !emitted.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses names llmtap does not emit: {unknown:?}"
    );

    let all_exprs = exprs.join("\n");
    for needed in [
        "gen_ai_request_model",
        "gen_ai_provider_name",
        "gen_ai_usage_input_tokens",
        "gen_ai_usage_output_tokens",
        "gen_ai_usage_cache_read_input_tokens",
        "llmtap_cost_usd",
        "llmtap_duration",
        "gen_ai_response_time_to_first_chunk",
        "http_response_status_code",
    ] {
        assert!(
            emitted.contains(needed),
            "{needed} is no longer emitted by llmtap"
        );
        assert!(
            all_exprs.contains(needed),
            "no dashboard query uses {needed}"
        );
    }
    assert!(
        all_exprs.contains("quantile_over_time(0.5,")
            && all_exprs.contains("quantile_over_time(0.95,")
    );
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    assert!(
        panels.iter().any(|p| p["type"] == "table"),
        "a table of recent calls"
    );
    // Issue 11: cost by client and by model, summed from each call's `llmtap.cost.usd`.
    let cost_by = |label: &str| {
        exprs.iter().any(|e| {
            e.contains("unwrap llmtap_cost_usd")
                && e.split("sum by (")
                    .nth(1)
                    .and_then(|rest| rest.split(')').next())
                    .is_some_and(|by| by.split(',').any(|l| l.trim() == label))
        })
    };
    assert!(cost_by("llmtap_client_name"), "a panel of cost by client");
    assert!(
        cost_by("gen_ai_response_model") || cost_by("gen_ai_request_model"),
        "a panel of cost by model"
    );
}

/// What an audit record carries (Loki names): a query that only asks for these may count
/// audit lines.
const AUDIT_RECORD_NAMES: [&str; 14] = [
    "llmtap_egress_decision",
    "llmtap_egress_reason",
    "llmtap_egress_route",
    "llmtap_client_name",
    "llmtap_client_profile",
    "client_address",
    "server_address",
    "server_port",
    "network_peer_address",
    "network_peer_port",
    "llmtap_egress_bytes_sent",
    "llmtap_egress_bytes_received",
    "llmtap_duration",
    "error_type",
];

/// Audit records (one per connection decision) and call records share the stream: every query
/// says which it counts. Audit queries filter on `llmtap_egress_decision`; call queries exclude
/// audit lines (`llmtap_egress_decision = ""`) or require an attribute only calls carry.
#[test]
fn dashboard_tells_calls_from_egress_decisions() {
    let dashboard = json(DASHBOARD);
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    let audit = Regex::new(r#"\| llmtap_egress_decision (?:!= ""|=~? "[a-z_|]+")"#)
        .unwrap_or_else(|e| panic!("{e}"));
    // A line that has a name audit records never carry is a call line.
    let present = Regex::new(r#"\| ([a-z0-9_]+) != """#).unwrap_or_else(|e| panic!("{e}"));
    let is_call = |expr: &str| {
        expr.contains(r#"| llmtap_egress_decision = """#)
            || present
                .captures_iter(expr)
                .any(|c| !AUDIT_RECORD_NAMES.contains(&&c[1]))
    };
    let mut audit_exprs = Vec::new();
    let mut call_exprs = Vec::new();
    let mut egress_row_y = None;
    for panel in &panels {
        if panel["type"] == "row" && panel["title"] == "Egress" {
            egress_row_y = panel["gridPos"]["y"].as_u64();
        }
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        let y = panel["gridPos"]["y"].as_u64().unwrap_or(0);
        let mut exprs = Vec::new();
        collect_strings(&panel["targets"], "expr", &mut exprs);
        for expr in exprs {
            let is_audit = audit.is_match(&expr);
            assert!(
                is_audit || is_call(&expr),
                "panel {title:?}: a query that may count audit lines as calls: {expr}"
            );
            if is_audit {
                audit_exprs.push((title.clone(), y, panel["type"].clone(), expr));
            } else {
                call_exprs.push(expr);
            }
        }
    }
    let row_y = egress_row_y.unwrap_or_else(|| panic!("the dashboard has no \"Egress\" row"));
    for (title, y, _, expr) in &audit_exprs {
        assert!(
            *y > row_y,
            "audit panel {title:?} is not in the Egress row: {expr}"
        );
    }
    let has = |pred: &dyn Fn(&str, &serde_json::Value) -> bool| {
        audit_exprs.iter().any(|(_, _, ty, e)| pred(e, ty))
    };
    assert!(
        has(&|e, _| e.contains("sum by (llmtap_client_name, llmtap_egress_decision)")),
        "a panel of decisions by client and decision"
    );
    assert!(
        has(&|e, _| e.contains(r#"llmtap_egress_decision = "deny""#)
            && e.contains("by (error_type")),
        "a panel of denials by reason"
    );
    assert!(
        has(&|e, ty| *ty == "table"
            && e.contains("topk(")
            && e.contains("server_address")
            && e.contains("deny")),
        "a table of the top denied hosts"
    );
    assert!(
        has(&|e, _| e.contains(r#"llmtap_egress_decision = "would_deny""#)),
        "a panel of what report mode would deny"
    );
    assert!(
        call_exprs
            .iter()
            .any(|e| e.contains("by (llmtap_client_name)") && e.contains("gen_ai_")),
        "a call panel broken down by client"
    );
}

#[test]
fn grafana_is_provisioned_with_the_loki_datasource_and_the_dashboard() {
    let ds = yaml(GRAFANA_DATASOURCE);
    let loki = ds["datasources"]
        .as_sequence()
        .and_then(|s| {
            s.iter()
                .find(|d| scalar(&d["type"]).as_deref() == Some("loki"))
        })
        .unwrap_or_else(|| panic!("{GRAFANA_DATASOURCE} has no loki datasource"));
    assert_eq!(scalar(&loki["url"]).as_deref(), Some("http://loki:3100"));
    let uid =
        scalar(&loki["uid"]).unwrap_or_else(|| panic!("the loki datasource needs a fixed uid"));
    let dashboard = json(DASHBOARD);
    let mut uids = Vec::new();
    collect_strings(&dashboard, "uid", &mut uids);
    let ds_uids: BTreeSet<&String> = uids.iter().filter(|u| **u != dashboard["uid"]).collect();
    assert_eq!(
        ds_uids.into_iter().collect::<Vec<_>>(),
        vec![&uid],
        "panels must use datasource uid {uid}"
    );

    // The provider's path is where compose mounts the dashboard JSON.
    let compose = compose();
    let grafana = service(&compose, "grafana");
    let providers = yaml(GRAFANA_PROVIDERS);
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let found = mounts(grafana).into_iter().any(|(src, dst, _)| {
        path.strip_prefix(dst.trim_end_matches('/'))
            .is_some_and(|rest| {
                let host = normalise(&repo().join("compose"), &format!("{src}{rest}"));
                host.join("llmtap.json") == normalise(&repo(), DASHBOARD)
            })
    });
    assert!(
        found,
        "grafana does not mount {DASHBOARD} at the provider path {path}"
    );
    let ports = strings(&grafana["ports"]);
    assert!(
        ports.iter().any(|p| p.starts_with("127.0.0.1:")),
        "grafana is reachable on 127.0.0.1"
    );
}

// ---------- Node bootstrap ----------

#[test]
fn node_bootstrap_dependencies_are_pinned_and_locked() {
    let pkg = json("node-bootstrap/package.json");
    for section in ["dependencies", "devDependencies"] {
        let Some(deps) = pkg[section].as_object() else {
            continue;
        };
        for (name, version) in deps {
            let v = version.as_str().unwrap_or_default();
            let exact = v.chars().next().is_some_and(|c| c.is_ascii_digit())
                && !v.contains(['^', '~', '*', 'x', '>', '<', ' ']);
            assert!(exact, "{section}.{name} = {v:?} is not an exact version");
        }
    }
    let lock = json("node-bootstrap/package-lock.json");
    assert!(lock["lockfileVersion"].as_u64().unwrap_or(0) >= 2);
    assert!(!read("node-bootstrap/proxy-bootstrap.cjs").is_empty());
}

/// The build stage must copy everything `cargo build` reads: workspace members and the
/// files the binary embeds with `include_str!`.
#[test]
fn dockerfile_build_stage_copies_what_the_build_reads() {
    let text = read("Dockerfile");
    let copies: Vec<String> = instructions(&text)
        .into_iter()
        .filter(|(op, _)| op == "COPY")
        .map(|(_, args)| args)
        .collect();
    let copied = |path: &str| {
        copies
            .iter()
            .any(|c| c.split_whitespace().any(|w| w == path))
    };
    let manifest = read("Cargo.toml");
    let members = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .unwrap_or("");
    for member in members.split('"').skip(1).step_by(2).filter(|m| *m != ".") {
        assert!(
            copied(member),
            "Dockerfile must COPY workspace member {member}"
        );
    }
    let embedded = regex::Regex::new(r#"include_str!\("\.\./([a-z-]+)/"#).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).unwrap();
            for cap in embedded.captures_iter(&source) {
                assert!(
                    copied(&cap[1]),
                    "Dockerfile must COPY {} (embedded by {path:?})",
                    &cap[1]
                );
            }
        }
    }
}
