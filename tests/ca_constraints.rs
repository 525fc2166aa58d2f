//! A name-constrained CA (`--ca-name-constraints`, `ca rotate --name-constrained`): leaves for
//! the intercepted hosts verify in OpenSSL (`openssl verify`), rustls and Node; a leaf for any
//! other name, signed with the CA's own key as a thief would sign it, fails in all three. And
//! llmtap refuses to start when an intercepted host is outside its CA's constraints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unused_imports)]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use clap::Parser;
use llmtap::ca::{CertAuthority, NewCa};
use llmtap::route::HostList;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

/// The intercepted hosts of most tests: exact, wildcard, IPv4 and IPv6.
const HOSTS: &str = "api.openai.com,*.example.com,127.0.0.1,[::1]";

struct TestCa {
    dir: tempfile::TempDir,
    ca: CertAuthority,
}

impl TestCa {
    fn constrained(hosts: &str) -> TestCa {
        common::init_crypto();
        let dir = tempfile::tempdir().unwrap();
        let new = NewCa::name_constrained(&HostList::parse(hosts).unwrap()).unwrap();
        let ca = CertAuthority::load_or_create_with(dir.path(), &new).unwrap();
        TestCa { dir, ca }
    }

    fn pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf for `name` signed with the CA's key (read from `ca-key.pem`, as a thief would).
    fn forge(&self, name: &str) -> (Arc<ServerConfig>, String) {
        self.forge_with(name, true)
    }

    /// `san`: false puts the name only in the subject CN (no subjectAltName).
    fn forge_with(&self, name: &str, san: bool) -> (Arc<ServerConfig>, String) {
        let key_pem = std::fs::read_to_string(self.dir.path().join("ca-key.pem")).unwrap();
        let issuer =
            Issuer::from_ca_cert_pem(self.ca.cert_pem(), KeyPair::from_pem(&key_pem).unwrap())
                .unwrap();
        let sans = if san { vec![name.to_string()] } else { vec![] };
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        let chain = vec![leaf.der().clone(), ca_der(self.ca.cert_pem())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        (Arc::new(config), leaf.pem())
    }
}

fn ca_der(pem: &str) -> CertificateDer<'static> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn to_pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// A TLS server on loopback presenting `config` to every connection.
async fn serve(config: Arc<ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                }
            });
        }
    });
    addr
}

/// rustls (webpki) with only the CA as root; the chain the server presented, or the error.
async fn rustls_connect(
    ca_pem: &str,
    addr: SocketAddr,
    name: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der(ca_pem)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let tls = tokio::time::timeout(common::STEP, connector.connect(server_name, tcp))
        .await
        .expect("rustls handshake timed out")
        .map_err(|e| e.to_string())?;
    Ok(tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .to_vec())
}

/// Runs a client the test needs; a missing one fails the test, it never passes silently.
fn run_tool(program: &str, package: &str, cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not on PATH: this test checks real {program} verification and needs it \
             (Debian: apt-get install {package})"
        ),
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `openssl verify -CAfile ca.pem` with the host (or address) check; Ok or openssl's words.
fn openssl_verify(ca_path: &Path, leaf_pem: &str, name: &str) -> Result<(), String> {
    let leaf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(leaf.path(), leaf_pem).unwrap();
    let check = if name.parse::<std::net::IpAddr>().is_ok() {
        "-verify_ip"
    } else {
        "-verify_hostname"
    };
    let out = run_tool(
        "openssl",
        "openssl",
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(ca_path)
            .args([check, name])
            .arg(leaf.path()),
    );
    let said = text(&out);
    if out.status.success() && said.contains(": OK") {
        Ok(())
    } else {
        Err(said)
    }
}

/// Node's `tls.connect` with `ca:` the CA only and Node's own host check against `name`.
const NODE_CLIENT: &str = r#"
const tls = require('tls'), fs = require('fs'), net = require('net');
const [ca, port, name] = process.argv.slice(1);
const opts = { host: '127.0.0.1', port: Number(port), ca: fs.readFileSync(ca) };
if (net.isIP(name)) opts.checkServerIdentity = (_h, cert) => tls.checkServerIdentity(name, cert);
else opts.servername = name;
const s = tls.connect(opts, () => { console.log('OK'); s.end(); });
s.on('error', e => { console.log('FAIL ' + e.code + ': ' + e.message); process.exitCode = 1; });
setTimeout(() => { console.log('FAIL timeout'); process.exit(1); }, 15000).unref();
"#;

async fn node_connect(ca_path: &Path, addr: SocketAddr, name: &str) -> Result<(), String> {
    let ca_path = ca_path.to_path_buf();
    let name = name.to_string();
    let out = tokio::task::spawn_blocking(move || {
        run_tool(
            "node",
            "nodejs",
            Command::new("node")
                .arg("-e")
                .arg(NODE_CLIENT)
                .arg(&ca_path)
                .arg(addr.port().to_string())
                .arg(&name),
        )
    })
    .await
    .unwrap();
    let said = text(&out);
    if out.status.success() && said.trim() == "OK" {
        Ok(())
    } else {
        Err(said)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_for_intercepted_hosts_verify_in_openssl_rustls_and_node() {
    let ca = TestCa::constrained(HOSTS);
    for name in [
        "api.openai.com",
        "x.example.com",
        "a.b.example.com",
        "127.0.0.1",
        "::1",
    ] {
        let addr = serve(ca.ca.server_config_for(name).unwrap()).await;
        let chain = rustls_connect(ca.ca.cert_pem(), addr, name)
            .await
            .unwrap_or_else(|e| panic!("rustls refused llmtap's leaf for {name}: {e}"));
        assert_eq!(chain.len(), 2, "{name}: leaf and CA");
        openssl_verify(&ca.pem_path(), &to_pem(&chain[0]), name)
            .unwrap_or_else(|e| panic!("openssl refused llmtap's leaf for {name}: {e}"));
        node_connect(&ca.pem_path(), addr, name)
            .await
            .unwrap_or_else(|e| panic!("node refused llmtap's leaf for {name}: {e}"));
    }
}

/// Forged leaves for other names fail in all three, each for a name-constraint reason.
async fn assert_forgeries_fail(ca: &TestCa, names: &[&str]) {
    for &name in names {
        let (config, leaf_pem) = ca.forge(name);
        let addr = serve(config).await;
        let err = rustls_connect(ca.ca.cert_pem(), addr, name)
            .await
            .err()
            .unwrap_or_else(|| panic!("rustls accepted a forged leaf for {name}"));
        assert!(
            err.contains("NameConstraintViolation"),
            "rustls, {name}: {err}"
        );
        let err = openssl_verify(&ca.pem_path(), &leaf_pem, name)
            .err()
            .unwrap_or_else(|| panic!("openssl accepted a forged leaf for {name}"));
        assert!(err.contains("subtree violation"), "openssl, {name}: {err}");
        let err = node_connect(&ca.pem_path(), addr, name)
            .await
            .err()
            .unwrap_or_else(|| panic!("node accepted a forged leaf for {name}"));
        assert!(err.contains("subtree violation"), "node, {name}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_for_other_names_signed_with_the_ca_key_fail_everywhere() {
    let ca = TestCa::constrained(HOSTS);
    // The forger's own leaf for a permitted name verifies: the key works, the names do not.
    let (config, pem) = ca.forge("api.openai.com");
    let addr = serve(config).await;
    rustls_connect(ca.ca.cert_pem(), addr, "api.openai.com")
        .await
        .unwrap();
    openssl_verify(&ca.pem_path(), &pem, "api.openai.com").unwrap();
    node_connect(&ca.pem_path(), addr, "api.openai.com")
        .await
        .unwrap();
    let others = [
        "evil.com",
        "openai.com",
        "api.openai.com.evil.com",
        "notexample.com",
        "10.0.0.1",
        "127.0.0.2",
        "::2",
    ];
    assert_forgeries_fail(&ca, &others).await;

    // No SAN, the name in the CN only (OpenSSL and Node still read a CN as the host name when
    // there is no DNS SAN; OpenSSL applies the DNS constraints to it too).
    let (config, pem) = ca.forge_with("evil.com", false);
    let addr = serve(config).await;
    let err = openssl_verify(&ca.pem_path(), &pem, "evil.com").unwrap_err();
    assert!(err.contains("subtree violation"), "openssl, CN only: {err}");
    let err = node_connect(&ca.pem_path(), addr, "evil.com")
        .await
        .unwrap_err();
    assert!(err.contains("subtree violation"), "node, CN only: {err}");
    let err = rustls_connect(ca.ca.cert_pem(), addr, "evil.com")
        .await
        .expect_err("rustls accepted a CN-only leaf");
    assert!(err.contains("not valid for name"), "rustls, CN only: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_type_with_no_intercepted_host_is_excluded_whole() {
    // Only DNS names intercepted: no address at all may be certified, v4 or v6.
    let dns_only = TestCa::constrained("api.openai.com");
    assert_forgeries_fail(&dns_only, &["127.0.0.1", "::1"]).await;
    // Only an address intercepted: no DNS name may be certified.
    let ip_only = TestCa::constrained("127.0.0.1");
    assert_forgeries_fail(&ip_only, &["evil.com", "localhost"]).await;
}

struct NullSink;

impl llmtap::capture::ExchangeSink for NullSink {
    fn submit(&self, _: llmtap::capture::Exchange) {}
    fn submit_egress(&self, _: llmtap::audit::EgressRecord) {}
}

async fn start(ca_dir: &Path, extra: &[&str]) -> Result<llmtap::RunningProxy, llmtap::ProxyError> {
    common::init_crypto();
    let mut argv = vec![
        "llmtap".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--ca-dir".into(),
        ca_dir.display().to_string(),
        "--addons-config".into(),
        common::addons_dir().display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let cli = llmtap::config::Cli::try_parse_from(argv).unwrap();
    let config = llmtap::Config::from_args(&cli.run).unwrap();
    llmtap::start(config, Arc::new(NullSink)).await
}

#[tokio::test]
async fn start_refuses_intercepted_hosts_outside_the_ca_constraints() {
    let ca = TestCa::constrained("api.openai.com,*.example.com");
    let hosts =
        "api.openai.com,api.anthropic.com,*.openai.com,x.example.com,*.b.example.com,10.0.0.1";
    let err = start(ca.dir.path(), &["--llm-hosts", hosts])
        .await
        .err()
        .expect("started with hosts outside the CA's constraints")
        .to_string();
    assert!(
        err.contains(r#""api.anthropic.com", "*.openai.com", "10.0.0.1" outside"#),
        "{err}"
    );
    assert!(
        err.contains("ca.pem") && err.contains("ca rotate --name-constrained"),
        "{err}"
    );
    // Inside the subtrees (an exact host's subtree holds its subdomains too): starts.
    let proxy = start(
        ca.dir.path(),
        &[
            "--llm-hosts",
            "api.openai.com,x.api.openai.com,*.example.com,example.com",
        ],
    )
    .await
    .unwrap();
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_flag_makes_a_constrained_ca_and_refuses_one_without_constraints() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = ["--llm-hosts", "api.openai.com", "--ca-name-constraints"];
    let proxy = start(dir.path(), &hosts).await.unwrap();
    let scope = proxy
        .shared
        .ca
        .name_scope()
        .expect("name constraints")
        .to_string();
    assert_eq!(
        scope,
        "permitted DNS api.openai.com; excluded IP 0.0.0.0/0, IP ::/0"
    );
    proxy.shutdown().await;

    let plain = tempfile::tempdir().unwrap();
    CertAuthority::load_or_create(plain.path()).unwrap();
    let err = start(plain.path(), &hosts).await.err().unwrap().to_string();
    assert!(
        err.contains("has no name constraints") && err.contains("ca rotate --name-constrained"),
        "{err}"
    );
    // Without the flag an unconstrained CA is what it always was.
    let proxy = start(plain.path(), &["--llm-hosts", "anything.example"])
        .await
        .unwrap();
    assert!(proxy.shared.ca.name_scope().is_none());
    proxy.shutdown().await;
}

fn llmtap(ca_dir: &Path) -> Command {
    let mut cmd = Command::new(common::llmtap_bin());
    cmd.env_remove("PROXY_LISTEN")
        .env_remove("PROXY_LLM_HOSTS")
        .env_remove("PROXY_CA_NAME_CONSTRAINTS")
        .env("PROXY_CA_DIR", ca_dir)
        .env("PROXY_ADDONS_CONFIG", common::addons_dir());
    cmd
}

fn has_name_constraints(pem: &str) -> bool {
    let der = ca_der(pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.name_constraints().unwrap().is_some()
}

#[test]
fn ca_rotate_name_constrained_and_the_env_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = llmtap(dir.path()).args(["ca", "print"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let old = String::from_utf8(out.stdout).unwrap();
    assert!(!has_name_constraints(&old));

    // Bad hosts: an error naming the field, and the current CA stays where it is.
    for bad in ["", "bücher.example"] {
        let out = llmtap(dir.path())
            .args(["ca", "rotate", "--name-constrained", "--llm-hosts", bad])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let said = text(&out);
        assert!(said.contains("--llm-hosts"), "{said}");
        assert!(!said.contains("panicked"), "{said}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
            old
        );
    }

    let out = llmtap(dir.path())
        .args([
            "ca",
            "rotate",
            "--name-constrained",
            "--llm-hosts",
            "api.openai.com,*.example.com",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("name constraints: permitted DNS api.openai.com, DNS example.com"),
        "{said}"
    );
    let new = String::from_utf8(out.stdout).unwrap();
    assert_ne!(new, old);
    assert!(has_name_constraints(&new));

    // PROXY_CA_NAME_CONSTRAINTS: 1/true make a new CA constrained, 0/false do not.
    for (value, want) in [("1", true), ("true", true), ("0", false), ("false", false)] {
        let fresh = tempfile::tempdir().unwrap();
        let out = llmtap(fresh.path())
            .env("PROXY_CA_NAME_CONSTRAINTS", value)
            .args(["ca", "print"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{value}: {}", text(&out));
        let pem = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            has_name_constraints(&pem),
            want,
            "PROXY_CA_NAME_CONSTRAINTS={value}"
        );
    }
}
