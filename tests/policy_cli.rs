//! The binary and the egress policy (issue 8): `llmtap policy check` exit codes and words,
//! SIGHUP reload (a good file applies to new connections, a bad one is reported and the old
//! policy kept, open connections keep their decision), `/healthz`'s policy section, and
//! IPv4-mapped client addresses on a dual-stack listener.
//!
//! `policy check` never connects; every name it is asked about is either denied by a rule
//! before any lookup or pinned with `--resolve`, so nothing is ever looked up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{STEP, TestCa, Upstream, llmtap_bin};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// `llmtap` with a clean environment: no `PROXY_*` or `OTEL_*` from the caller.
fn llmtap() -> Command {
    let mut cmd = Command::new(llmtap_bin());
    cmd.env_clear()
        .env("PROXY_ADDONS_CONFIG", common::addons_dir());
    cmd
}

fn example_policy() -> PathBuf {
    common::addons_dir().join("policy.example.toml")
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/policy")
        .join(name)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// What one `llmtap policy check` printed, and its exit code.
#[derive(Debug)]
struct Check {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn policy_check(args: &[&str]) -> Check {
    let out = llmtap()
        .args(["policy", "check"])
        .args(args)
        .output()
        .unwrap();
    Check {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn policy_check_prints_the_decision_and_exits_0_or_1() {
    let policy = path(&example_policy());
    let p = policy.as_str();
    // (args, exit code, words that must be in stdout)
    let cases: &[(&[&str], i32, &[&str])] = &[
        // An allowed IP literal (no lookup; `policy check` never connects).
        (
            &[
                "--policy",
                p,
                "--client",
                "browser-sandbox",
                "203.0.113.7:443",
            ],
            0,
            &["allow", "203.0.113.7:443", "tunnel"],
        ),
        // An allowed name, pinned (no lookup).
        (
            &[
                "--policy",
                p,
                "--client",
                "code-sandbox",
                "--resolve",
                "pypi.org:443:127.0.0.1",
                "pypi.org",
            ],
            0,
            &["allow", "pypi.org:443", "allow rule pypi.org"],
        ),
        // The LLM API is intercepted.
        (
            &[
                "--policy",
                p,
                "--client",
                "code-sandbox",
                "--resolve",
                "api.anthropic.com:443:127.0.0.1",
                "api.anthropic.com",
            ],
            0,
            &["allow", "intercept"],
        ),
        // Plain HTTP.
        (
            &[
                "--policy",
                p,
                "--client",
                "code-sandbox",
                "--http",
                "--resolve",
                "api.openai.com:80:127.0.0.1",
                "api.openai.com",
            ],
            0,
            &["allow", "api.openai.com:80", "http"],
        ),
        // Denied by name: no rule allows it (no lookup is made for it).
        (
            &["--policy", p, "--client", "code-sandbox", "example.com"],
            1,
            &[
                "deny",
                "policy",
                "code-sandbox (profile code): no rule allows example.com:443",
            ],
        ),
        // A port the rule does not name.
        (
            &[
                "--policy",
                p,
                "--client",
                "code-sandbox",
                "files.pythonhosted.org:80",
            ],
            1,
            &["no rule allows files.pythonhosted.org:80"],
        ),
        // Denied by a deny rule, over `allow = ["*"]`.
        (
            &["--policy", p, "--client", "browser-sandbox", "DB.Internal."],
            1,
            &["policy", "deny rule *.internal"],
        ),
        // A private address, for a profile whose rules allow it.
        (
            &["--policy", p, "--client", "browser-sandbox", "10.0.0.1:22"],
            1,
            &["private_address", "10.0.0.1"],
        ),
        (
            &[
                "--policy",
                p,
                "--client",
                "browser-sandbox",
                "[::ffff:169.254.169.254]:80",
            ],
            1,
            &["private_address"],
        ),
        // No --client: `default`, which the example allows nothing.
        (
            &["--policy", p, "example.com"],
            1,
            &["default (profile default): no rule allows example.com:443"],
        ),
        // Without --policy: any public host, but never a private one.
        (&["203.0.113.7"], 0, &["allow"]),
        (&["127.0.0.1:8080"], 1, &["private_address"]),
    ];
    for (args, code, words) in cases {
        let out = policy_check(args);
        assert_eq!(out.code, Some(*code), "{args:?}: {out:?}");
        for word in *words {
            assert!(
                out.stdout.contains(word),
                "{args:?}: {word:?} not in {out:?}"
            );
        }
    }
}

#[test]
fn policy_check_client_picks_whose_rules_apply() {
    let policy = path(&example_policy());
    let pin = "example.com:443:127.0.0.1";
    let browser = policy_check(&[
        "--policy",
        &policy,
        "--resolve",
        pin,
        "--client",
        "browser-sandbox",
        "example.com",
    ]);
    assert_eq!(browser.code, Some(0), "{browser:?}");
    assert!(browser.stdout.starts_with("allow"), "{browser:?}");
    let code = policy_check(&[
        "--policy",
        &policy,
        "--resolve",
        pin,
        "--client",
        "code-sandbox",
        "example.com",
    ]);
    assert_eq!(code.code, Some(1), "{code:?}");
    assert!(
        code.stdout.contains("code-sandbox (profile code)"),
        "{code:?}"
    );
    let unknown = policy_check(&["--policy", &policy, "--client", "nobody", "example.com"]);
    assert_eq!(unknown.code, Some(2), "{unknown:?}");
    assert!(unknown.stderr.contains("nobody"), "{unknown:?}");
}

#[test]
fn policy_check_refuses_llmtap_itself_whatever_the_allow_lists_say() {
    let listen = "127.0.0.1:18080";
    for (extra, target) in [
        (vec!["--allow-private", "127.0.0.0/8"], "127.0.0.1:18080"),
        (
            vec!["--allow-private", "127.0.0.0/8"],
            "[::ffff:127.0.0.1]:18080",
        ),
        // A pin exempts a name from the private rule, never from the loop rule.
        (
            vec!["--resolve", "loop.test:18080:127.0.0.1"],
            "loop.test:18080",
        ),
        (
            vec!["--connect-to", "loop.test:443:127.0.0.1:18080"],
            "loop.test:443",
        ),
    ] {
        let mut args = vec!["--listen", listen];
        args.extend(extra.iter().copied());
        args.push(target);
        let out = policy_check(&args);
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert!(out.stdout.contains("private_address"), "{args:?}: {out:?}");
        assert!(out.stdout.contains("llmtap itself"), "{args:?}: {out:?}");
    }
}

/// 0.0.0.0 reaches the local host: on llmtap's port, connecting there is connecting to llmtap.
#[test]
fn policy_check_refuses_the_zero_address_on_llmtaps_port() {
    let out = policy_check(&[
        "--listen",
        "127.0.0.1:18080",
        "--allow-private",
        "0.0.0.0/0",
        "0.0.0.0:18080",
    ]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("llmtap itself"), "{out:?}");
}

/// `3405803783` is 203.0.113.7 to the system resolver (a numeric form, parsed without a
/// lookup): a deny rule on 203.0.113.0/24 must not be walked around by spelling it so.
#[test]
fn policy_check_numeric_host_forms_are_judged_by_ip_rules() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[profile.default]\nallow = [\"*\"]\ndeny = [\"203.0.113.0/24\"]\n",
    )
    .unwrap();
    let p = path(&policy);
    let literal = policy_check(&["--policy", &p, "203.0.113.7"]);
    assert_eq!(literal.code, Some(1), "{literal:?}");
    for form in ["3405803783", "203.28935", "0xcb.0x0.0x71.0x7"] {
        let out = policy_check(&["--policy", &p, form]);
        assert_eq!(
            out.code,
            Some(1),
            "{form} walked around the IP deny rule: {out:?}"
        );
    }
}

#[test]
fn policy_check_exits_2_on_a_bad_file_naming_each_field_and_value() {
    let out = policy_check(&[
        "--policy",
        &path(&fixture("bad-fields.toml")),
        "example.com",
    ]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    for needle in [
        "bad-fields.toml",
        "mode = \"loud\"",
        "client[0].sources[0] = \"300.1.1.1/8\"",
        "client[0].profile = \"nope\"",
        "profile.code.allow[0] = \"api.anthropic.com:99999\"",
    ] {
        assert!(
            out.stderr.contains(needle),
            "{needle:?} not in {}",
            out.stderr
        );
    }
    // Not TOML at all: the line is named.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[profile.default]\nallow = [\"x\"\n").unwrap();
    let out = policy_check(&["--policy", &path(&broken), "example.com"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("line"), "{}", out.stderr);
    // A file that does not exist.
    let out = policy_check(&["--policy", "/nonexistent/llmtap/policy.toml", "example.com"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("/nonexistent/llmtap/policy.toml"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// The running binary
// ---------------------------------------------------------------------------------------------

/// A running `llmtap` with its stderr lines collected (stdout, the records, is dropped).
struct Running {
    child: Child,
    addr: SocketAddr,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    _ca_dir: tempfile::TempDir,
}

impl Running {
    fn start(listen: &str, extra: &[&str]) -> Running {
        let ca_dir = tempfile::tempdir().unwrap();
        let mut child = llmtap()
            .args(["--listen", listen, "--ca-dir"])
            .arg(ca_dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut running = Running {
            child,
            addr: listen.parse().unwrap(),
            lines,
            seen: Vec::new(),
            _ca_dir: ca_dir,
        };
        running.wait_line("llmtap listening");
        running
    }

    /// Waits (bounded) for a stderr line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no stderr line with {needle:?}; saw {:#?}", self.seen),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "llmtap did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free loopback address for the binary to listen on.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `CONNECT authority` (optionally with proxy credentials): the status and the connection.
async fn connect(
    proxy: SocketAddr,
    authority: &str,
    auth: Option<&str>,
) -> (u16, String, TcpStream) {
    let mut tcp = timeout(STEP, TcpStream::connect(proxy))
        .await
        .unwrap()
        .unwrap();
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = timeout(STEP, tcp.read(&mut byte))
            .await
            .unwrap()
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"));
    let mut rest = head;
    if status != 200 {
        let mut body = String::new();
        let _ = timeout(STEP, tcp.read_to_string(&mut body)).await;
        rest.push_str(&body);
    }
    (status, rest, tcp)
}

/// Polls (bounded) until a CONNECT to `authority` is answered `want`; returns that connection.
async fn until_connect(proxy: SocketAddr, authority: &str, want: u16) -> TcpStream {
    let deadline = Instant::now() + STEP;
    loop {
        let (status, text, tcp) = connect(proxy, authority, None).await;
        if status == want {
            return tcp;
        }
        assert!(
            Instant::now() < deadline,
            "CONNECT {authority} still answered {status}, not {want}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// TLS through an open tunnel to the upstream (trusting `ca`), then `GET /json`: `200`.
async fn get_through(tcp: TcpStream, sni: &str, ca: &str) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    common::init_crypto();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = timeout(STEP, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    let req = format!("GET /json HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = timeout(STEP, tls.read_to_end(&mut got)).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

async fn healthz(addr: SocketAddr) -> serde_json::Value {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(STEP)
        .build()
        .unwrap()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const DENY_X: &str = "[profile.default]\nallow = [\"other.test\"]\n";
const ALLOW_X: &str = "[profile.default]\nallow = [\"x.test\"]\n";
const BROKEN: &str = "[profile.default]\nallow = [\"x.test:0\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_good_policy_and_keeps_the_old_one_on_a_bad_file() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &["x.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, DENY_X).unwrap();
    let pin = format!("x.test:443:127.0.0.1:{}", up.port());
    let mut bin = Running::start(
        &free_addr(),
        &["--policy", &path(&policy), "--connect-to", &pin],
    );

    let (status, text, _) = connect(bin.addr, "x.test:443", None).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("no rule allows x.test:443"), "{text}");

    // A good file: new connections use it.
    std::fs::write(&policy, ALLOW_X).unwrap();
    bin.signal("HUP");
    let tunnel = until_connect(bin.addr, "x.test:443", 200).await;
    bin.wait_line("policy reloaded");

    // A bad file: reported, the old policy kept, the process alive.
    std::fs::write(&policy, BROKEN).unwrap();
    bin.signal("HUP");
    let line = bin.wait_line("policy reload failed");
    assert!(line.contains("profile.default.allow[0]"), "{line}");
    assert!(bin.alive());
    let (status, text, tcp) = connect(bin.addr, "x.test:443", None).await;
    assert_eq!(
        status, 200,
        "the previous policy must stay in force: {text}"
    );
    get_through(tcp, "x.test", &ca.pem).await;

    // Denied again: new connections are refused, the one opened before keeps its decision.
    std::fs::write(&policy, DENY_X).unwrap();
    bin.signal("HUP");
    drop(until_connect(bin.addr, "x.test:443", 403).await);
    get_through(tunnel, "x.test", &ca.pem).await;

    let doc = healthz(bin.addr).await;
    let p = &doc["policy"];
    assert_eq!(p["source"], path(&policy), "{doc}");
    assert_eq!(p["mode"], "enforce", "{doc}");
    assert!(p["loaded_at_unix"].as_u64().unwrap() > 0, "{doc}");
    assert!(p["decisions"]["allow"].as_u64().unwrap() >= 2, "{doc}");
    assert!(p["decisions"]["deny"].as_u64().unwrap() >= 2, "{doc}");
    assert_eq!(p["decisions"]["would_deny"], 0, "{doc}");

    assert!(bin.alive());
    bin.signal("TERM");
    assert_eq!(bin.wait_exit().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_summary_names_the_policy_file_mode_and_clients() {
    let mut bin = Running::start(&free_addr(), &["--policy", &path(&example_policy())]);
    let line = bin
        .seen
        .iter()
        .find(|l| l.contains("llmtap listening"))
        .cloned()
        .unwrap();
    for needle in [
        "policy.example.toml",
        "enforce",
        "browser-sandbox",
        "code-sandbox",
        "ca.pem",
        "api.anthropic.com",
        &bin.addr.to_string(),
    ] {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
    let doc = healthz(bin.addr).await;
    assert_eq!(doc["policy"]["source"], path(&example_policy()), "{doc}");
    bin.signal("TERM");
    assert_eq!(bin.wait_exit().code(), Some(0));
}

/// On a dual-stack socket IPv4 clients appear as `::ffff:a.b.c.d`: sources and the loop rule
/// must see through that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_mapped_client_and_listen_addresses_are_ipv4() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &["x.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[client]]\nname = \"local\"\nsources = [\"127.0.0.1/32\"]\nprofile = \"lab\"\n\
         [profile.lab]\nallow = [\"x.test\", \"127.0.0.1\"]\nallow_private = [\"127.0.0.0/8\"]\n\
         [profile.default]\nallow = []\n",
    )
    .unwrap();
    let port = free_addr().rsplit_once(':').unwrap().1.to_string();
    let listen = format!("[::ffff:127.0.0.1]:{port}");
    let pin = format!("x.test:443:127.0.0.1:{}", up.port());
    let _bin = Running::start(&listen, &["--policy", &path(&policy), "--connect-to", &pin]);
    // The client connects over IPv4 to 127.0.0.1; llmtap sees ::ffff:127.0.0.1.
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, text, tcp) = connect(v4, "x.test:443", None).await;
    assert_eq!(
        status, 200,
        "the source 127.0.0.1/32 must identify the client: {text}"
    );
    get_through(tcp, "x.test", &ca.pem).await;
    // Its own address, in either form.
    for own in [
        format!("127.0.0.1:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ] {
        let (status, text, _) = connect(v4, &own, None).await;
        assert_eq!(status, 403, "CONNECT {own}: {text}");
        assert!(text.contains("llmtap itself"), "{text}");
    }
}
