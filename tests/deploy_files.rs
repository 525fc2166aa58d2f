//! The deployment files (Dockerfile, compose stack, Loki config, Grafana dashboard, Node bootstrap
//! package) keep the properties issue 4 asks for. No Docker engine is needed: the files are parsed.

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
    let listen = env(service(&compose, "llmtap"), "PROXY_LISTEN").unwrap_or_default();
    let allowed = usize::from(listen.starts_with("0.0.0.0:"));
    assert_eq!(
        zeros, allowed,
        "0.0.0.0 may appear only as llmtap's listen address inside its container"
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
    assert_eq!(
        mounts(svc).len(),
        1,
        "the CA directory is llmtap's only mount"
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

    let port = env_required(llmtap, "llmtap", "PROXY_LISTEN")
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let proxy = format!("http://llmtap:{port}");
    assert_eq!(env_required(gw, "gateway", "HTTPS_PROXY"), proxy);
    assert_eq!(env_required(gw, "gateway", "HTTP_PROXY"), proxy);
    let no_proxy = env_required(gw, "gateway", "NO_PROXY");
    assert!(
        !no_proxy.split(',').any(|h| h.trim() == "*"),
        "NO_PROXY=* would bypass llmtap"
    );

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
