//! Throw-away test CA (made at start with rcgen) and TLS configs for the mock and the load generator.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Res;

/// Names the mock's certificate is valid for: the LLM host and the non-LLM (tunnel) hosts.
pub const MOCK_SANS: &[&str] = &["api.anthropic.com", "localhost", "127.0.0.1"];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Creates a CA and a server certificate signed by it; writes `ca.pem` into `dir` and
/// returns the mock's server config (HTTP/1.1).
pub fn mock_server_config(dir: &Path) -> Res<Arc<ServerConfig>> {
    std::fs::create_dir_all(dir)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "llmtap-bench mock CA (tests only)");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca = CertifiedIssuer::self_signed(ca, ca_key)?;

    let sans: Vec<String> = MOCK_SANS.iter().map(|s| s.to_string()).collect();
    let mut leaf = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, MOCK_SANS[0]);
    leaf.distinguished_name = dn;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca)?;

    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    let chain = vec![leaf_cert.der().clone()];
    let key = PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes())?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client config trusting the PEM certificates in `ca_files` (HTTP/1.1 ALPN, session resumption on).
pub fn client_config(ca_files: &[&Path]) -> Res<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for f in ca_files {
        for cert in CertificateDer::pem_file_iter(f)? {
            roots.add(cert?)?;
        }
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
