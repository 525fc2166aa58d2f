//! The `llmtap` binary itself: CA files, subcommands, config errors, signals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{STEP, TestCa, Upstream, llmtap_bin};

fn llmtap() -> Command {
    let mut cmd = Command::new(llmtap_bin());
    cmd.env_remove("PROXY_LISTEN")
        .env_remove("PROXY_CA_DIR")
        .env_remove("PROXY_LLM_HOSTS")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
        .env("PROXY_ADDONS_CONFIG", common::addons_dir());
    cmd
}

#[test]
fn ca_print_creates_the_ca_once_with_private_key_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = llmtap()
        .args(["ca", "print", "--ca-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8(out.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        pem,
        std::fs::read_to_string(dir.path().join("ca.pem")).unwrap()
    );
    let mode = std::fs::metadata(dir.path().join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = llmtap()
        .args(["ca", "print", "--ca-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        pem,
        "later starts reuse the CA"
    );
    // ECDSA P-256, ten years, CN naming llmtap.
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(cert.subject().to_string().contains("CN=llmtap CA "));
    let years = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
        / (365 * 24 * 3600);
    assert!((9..=10).contains(&years), "{years}");
    assert_eq!(
        cert.public_key()
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string()),
        Some("1.2.840.10045.3.1.7".to_string()),
        "P-256"
    );
}

#[test]
fn processes_starting_at_once_end_up_with_one_ca() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<Child> = (0..6)
        .map(|_| {
            llmtap()
                .args(["ca", "print", "--ca-dir"])
                .arg(dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    assert!(outputs.iter().all(|o| o == &outputs[0]));
    assert_eq!(
        outputs[0],
        std::fs::read_to_string(dir.path().join("ca.pem")).unwrap()
    );
}

#[test]
fn corrupt_ca_is_a_clear_error_and_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        llmtap()
            .args(["ca", "print", "--ca-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
            .status
            .success()
    );
    std::fs::write(dir.path().join("ca-key.pem"), "not a key").unwrap();
    let out = llmtap()
        .args(["ca", "print", "--ca-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ca-key.pem"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca-key.pem")).unwrap(),
        "not a key"
    );
}

#[test]
fn ca_rotate_replaces_the_pair_and_keeps_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let first = llmtap()
        .args(["ca", "print", "--ca-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let rotated = llmtap()
        .args(["ca", "rotate", "--ca-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(rotated.status.success());
    assert_ne!(first.stdout, rotated.stdout);
    let backups = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".bak")
        })
        .count();
    assert_eq!(backups, 2);
}

#[test]
fn bad_flags_name_the_field_and_the_value() {
    let out = llmtap()
        .args([
            "--listen",
            "nowhere",
            "--max-body-size",
            "lots",
            "--resolve",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "--listen = \"nowhere\"",
        "--max-body-size = \"lots\"",
        "--resolve = \"x\"",
    ] {
        assert!(err.contains(needle), "missing {needle} in {err}");
    }
}

/// A running `llmtap` child with its stdout lines collected.
struct Running {
    child: Child,
    addr: String,
    lines: std::sync::mpsc::Receiver<String>,
    _ca_dir: tempfile::TempDir,
}

impl Running {
    fn start(extra: &[&str]) -> Running {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let ca_dir = tempfile::tempdir().unwrap();
        let mut child = llmtap()
            .args(["--listen", &addr, "--ca-dir"])
            .arg(ca_dir.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + STEP;
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "llmtap did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Running {
            child,
            addr,
            lines,
            _ca_dir: ca_dir,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
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

#[test]
fn healthcheck_exits_0_when_up_and_1_when_down() {
    let mut proxy = Running::start(&[]);
    let up = llmtap()
        .args(["healthcheck", "--addr", &proxy.addr])
        .status()
        .unwrap();
    assert_eq!(up.code(), Some(0));
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit().code(), Some(0));
    let down = llmtap()
        .args(["healthcheck", "--addr", &proxy.addr])
        .status()
        .unwrap();
    assert_eq!(down.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_stream_finish_and_its_record_out() {
    let ca = TestCa::new("upstream CA");
    let up = Upstream::https(&ca, &["api.anthropic.com"]).await;
    let pin = format!("api.anthropic.com:{}:127.0.0.1", up.port());
    let ca_file = ca.pem_path.path().display().to_string();
    let mut proxy = Running::start(&["--resolve", &pin, "--upstream-ca", &ca_file]);
    let llmtap_ca = std::fs::read(proxy._ca_dir.path().join("ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", proxy.addr)).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&llmtap_ca).unwrap())
        .timeout(STEP)
        .build()
        .unwrap();
    let url = format!(
        "https://api.anthropic.com:{}/sse?n=10&delay_ms=50",
        up.port()
    );
    let mut res = client.get(url).send().await.unwrap();
    res.chunk().await.unwrap().unwrap();
    proxy.signal("TERM");
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(STEP, res.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        rest.extend_from_slice(&chunk);
    }
    assert!(
        String::from_utf8_lossy(&rest).contains("\"i\":9"),
        "stream cut short by shutdown"
    );
    let status = tokio::task::block_in_place(|| proxy.wait_exit());
    assert_eq!(status.code(), Some(0));
    let lines: Vec<String> = proxy.lines.try_iter().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/sse") && serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "the finished exchange must be written before exit: {lines:?}"
    );
}

#[test]
fn stdout_is_records_only_and_stderr_says_where_it_listens() {
    let mut child = llmtap()
        .args(["--listen", "127.0.0.1:0", "--ca-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + STEP;
    while !seen.contains("listening") && Instant::now() < deadline {
        let n = stderr.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("listening"), "{seen}");
}

/// At the file-descriptor limit the accept loop backs off (no spin, no log flood), counts the
/// failures on `/healthz`, and serves again once descriptors are free.
#[test]
fn at_the_fd_limit_accept_backs_off_and_healthz_counts_it() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is needed for this test");
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let ca_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=64:64").arg(llmtap_bin());
    for var in [
        "PROXY_LISTEN",
        "PROXY_CA_DIR",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .env("PROXY_ADDONS_CONFIG", common::addons_dir())
        .args(["--listen", &addr, "--ca-dir"])
        .arg(ca_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + STEP;
    let mut held = Vec::new();
    while held.is_empty() {
        assert!(Instant::now() < deadline, "llmtap did not start listening");
        if let Ok(c) = std::net::TcpStream::connect(&addr) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // More connections than llmtap has descriptors: the rest wait in the backlog.
    for _ in 0..100 {
        held.push(std::net::TcpStream::connect(&addr).unwrap());
    }
    let mut warned = Vec::new();
    let deadline = Instant::now() + STEP;
    while warned.is_empty() {
        assert!(Instant::now() < deadline, "no accept error was logged");
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100))
            && line.contains("cannot accept")
        {
            warned.push(line);
        }
    }
    // A second of EMFILE: at most one more line (one per interval), not thousands.
    let until = Instant::now() + Duration::from_secs(1);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if let Ok(line) = lines.recv_timeout(left)
            && line.contains("cannot accept")
        {
            warned.push(line);
        }
    }
    assert!(warned.len() <= 2, "{warned:?}");
    drop(held);
    let health = {
        let deadline = Instant::now() + STEP;
        loop {
            assert!(Instant::now() < deadline, "llmtap did not recover");
            if let Ok(mut c) = std::net::TcpStream::connect(&addr) {
                use std::io::Write;
                let _ =
                    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut text = String::new();
                let _ = c.read_to_string(&mut text);
                if text.starts_with("HTTP/1.1 200") {
                    break text;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let json = &health[health.find('{').unwrap()..];
    let doc: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(
        doc["connections"]["accept_errors"].as_u64().unwrap() > 0,
        "{doc}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "llmtap died at the fd limit"
    );
    let _ = child.kill();
    let _ = child.wait();
}
