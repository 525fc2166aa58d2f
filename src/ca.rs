//! The root CA: load or create it in the CA directory (name-constrained to the intercepted hosts
//! when asked), and issue cached per-host leaf certificates.

mod constraints;

pub use constraints::NameScope;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, NameConstraints, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::route::HostList;

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
const LOCK_FILE: &str = ".ca.lock";
/// Ten years.
const CA_VALIDITY: time::Duration = time::Duration::days(3650);
/// Short enough for clients that cap leaf lifetimes (Apple: 398 days).
const LEAF_VALIDITY: time::Duration = time::Duration::days(90);
/// Reissue a cached leaf this long before it expires.
const LEAF_REFRESH: Duration = Duration::from_secs(30 * 24 * 3600);
/// Tolerate clients whose clocks are a little behind.
const BACKDATE: time::Duration = time::Duration::hours(1);
const LEAF_CACHE_SIZE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid {what}: {reason} (left untouched; fix or move it aside)")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error(
        "{cert} and {key} do not belong together (left untouched; restore the pair or move both aside)"
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "{present} exists but {missing} does not (left untouched; restore it or move {present} aside)"
    )]
    Incomplete { present: PathBuf, missing: PathBuf },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("--llm-hosts names no host: a name-constrained CA would permit nothing")]
    NothingToPermit,
    #[error("--llm-hosts entry {host:?} cannot be a name constraint: {reason}")]
    BadConstraintHost { host: String, reason: String },
    #[error(
        "--ca-name-constraints is set but {cert} has no name constraints (it was made without them); \
         run `llmtap ca rotate --name-constrained` and give clients the new ca.pem"
    )]
    Unconstrained { cert: PathBuf },
    #[error(
        "--llm-hosts {} outside the name constraints of {cert} ({scope}): clients would reject \
         their certificates; run `llmtap ca rotate --name-constrained` with the current --llm-hosts \
         and give clients the new ca.pem",
        hosts.iter().map(|h| format!("{h:?}")).collect::<Vec<_>>().join(", ")
    )]
    HostsOutside {
        cert: PathBuf,
        hosts: Vec<String>,
        scope: String,
    },
    #[error("TLS configuration for a leaf failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// How llmtap makes a CA when there is none (first start, `ca print`, `ca rotate`).
#[derive(Debug, Clone, Default)]
pub struct NewCa {
    name_constraints: Option<NameConstraints>,
}

impl NewCa {
    /// A CA whose X.509 name constraints permit only `hosts` (`--ca-name-constraints`,
    /// `ca rotate --name-constrained`): a leaf for any other name fails verification.
    pub fn name_constrained(hosts: &HostList) -> Result<NewCa, CaError> {
        Ok(NewCa {
            name_constraints: Some(constraints::for_hosts(hosts)?),
        })
    }
}

/// The loaded root CA plus a bounded cache of leaf server configs.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    cert_path: PathBuf,
    /// Its name constraints, `None` when it has none.
    scope: Option<NameScope>,
    leaves: Mutex<lru::LruCache<String, CachedLeaf>>,
}

struct CachedLeaf {
    config: Arc<ServerConfig>,
    refresh_at: Instant,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority").finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// Loads `ca.pem` + `ca-key.pem` from `dir`, creating them (once, atomically) if both are absent.
    pub fn load_or_create(dir: &Path) -> Result<CertAuthority, CaError> {
        Self::load_or_create_with(dir, &NewCa::default())
    }

    /// Like [`load_or_create`](Self::load_or_create); a CA it creates is made as `new` says.
    pub fn load_or_create_with(dir: &Path, new: &NewCa) -> Result<CertAuthority, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if !cert_path.exists() || !key_path.exists() {
            create_once(dir, &cert_path, &key_path, new)?;
        }
        Self::load(&cert_path, &key_path)
    }

    /// The CA of a proxy intercepting `hosts`: loaded or created (name-constrained to `hosts`
    /// when `name_constrained`), refused when its name constraints leave out one of `hosts`, or
    /// when `name_constrained` and it has none.
    pub fn for_proxy(
        dir: &Path,
        hosts: &HostList,
        name_constrained: bool,
    ) -> Result<CertAuthority, CaError> {
        let new = if name_constrained {
            NewCa::name_constrained(hosts)?
        } else {
            NewCa::default()
        };
        let ca = Self::load_or_create_with(dir, &new)?;
        let constrained = ca
            .scope
            .as_ref()
            .is_some_and(NameScope::constrains_anything);
        if name_constrained && !constrained {
            return Err(CaError::Unconstrained {
                cert: ca.cert_path.clone(),
            });
        }
        ca.check_hosts(hosts)?;
        Ok(ca)
    }

    /// Every pattern of `hosts` inside the CA's name constraints (always, for a CA without).
    pub fn check_hosts(&self, hosts: &HostList) -> Result<(), CaError> {
        let Some(scope) = &self.scope else {
            return Ok(());
        };
        let outside: Vec<String> = hosts
            .patterns()
            .iter()
            .filter(|p| !scope.admits(p))
            .map(constraints::pattern_text)
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        Err(CaError::HostsOutside {
            cert: self.cert_path.clone(),
            hosts: outside,
            scope: scope.to_string(),
        })
    }

    /// The CA's name constraints, `None` when it has none.
    pub fn name_scope(&self) -> Option<&NameScope> {
        self.scope.as_ref()
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<CertAuthority, CaError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Corrupt {
            path: key_path.to_path_buf(),
            what: "PEM private key",
            reason: e.to_string(),
        })?;
        let ca_der = first_cert_der(&cert_pem).ok_or_else(|| CaError::Corrupt {
            path: cert_path.to_path_buf(),
            what: "PEM certificate",
            reason: "no CERTIFICATE block".into(),
        })?;
        let (cert_spki, scope) = inspect(&ca_der).map_err(|reason| CaError::Corrupt {
            path: cert_path.to_path_buf(),
            what: "PEM certificate",
            reason,
        })?;
        if cert_spki != key.public_key_raw() {
            return Err(CaError::Mismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&ca_der, key).map_err(|e| CaError::Corrupt {
            path: cert_path.to_path_buf(),
            what: "CA certificate",
            reason: e.to_string(),
        })?;
        let cache_size = NonZeroUsize::new(LEAF_CACHE_SIZE).unwrap_or(NonZeroUsize::MIN);
        Ok(CertAuthority {
            issuer,
            ca_der,
            ca_pem: cert_pem,
            cert_path: cert_path.to_path_buf(),
            scope,
            leaves: Mutex::new(lru::LruCache::new(cache_size)),
        })
    }

    /// The CA certificate in PEM: what clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server config presenting a leaf for `host` (DNS name or IP), cached per host.
    pub fn server_config_for(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let host = crate::route::normalize_host(host);
        if let Some(config) = self.cached(&host) {
            return Ok(config);
        }
        let config = Arc::new(self.issue_leaf(&host)?);
        if let Ok(mut cache) = self.leaves.lock() {
            cache.put(
                host,
                CachedLeaf {
                    config: Arc::clone(&config),
                    refresh_at: Instant::now() + LEAF_REFRESH_AFTER,
                },
            );
        }
        Ok(config)
    }

    fn cached(&self, host: &str) -> Option<Arc<ServerConfig>> {
        let mut cache = self.leaves.lock().ok()?;
        let leaf = cache.get(host)?;
        (leaf.refresh_at > Instant::now()).then(|| Arc::clone(&leaf.config))
    }

    /// Number of leaves currently cached.
    pub fn cached_leaves(&self) -> usize {
        self.leaves.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn issue_leaf(&self, host: &str) -> Result<ServerConfig, CaError> {
        // A key of its own per leaf: a leaked leaf key must not be the CA's key.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let san = match host.parse::<IpAddr>() {
            // No CN: OpenSSL reads a CN that looks like a host name (`127.0.0.1` does) as a DNS
            // name, and a name-constrained CA's DNS subtrees would then refuse the leaf. With an
            // empty subject the SAN is marked critical (RFC 5280 4.1.2.6).
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                dn.push(DnType::CommonName, host);
                SanType::DnsName(host.to_string().try_into()?)
            }
        };
        params.subject_alt_names = vec![san];
        params.distinguished_name = dn;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

const LEAF_REFRESH_AFTER: Duration = Duration::from_secs(
    (LEAF_VALIDITY.whole_seconds() as u64).saturating_sub(LEAF_REFRESH.as_secs()),
);

/// Moves the current pair aside (`<name>.<unix-time>.bak`) and creates a new CA; returns the backups.
/// The new CA is made as `new` says.
pub fn rotate(dir: &Path, new: &NewCa) -> Result<Vec<PathBuf>, CaError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let _lock = lock_dir(dir)?;
    let mut moved = Vec::new();
    for name in [CA_CERT_FILE, CA_KEY_FILE] {
        let from = dir.join(name);
        if from.exists() {
            let to = dir.join(format!("{name}.{stamp}.bak"));
            fs::rename(&from, &to).map_err(|source| CaError::Write {
                path: to.clone(),
                source,
            })?;
            moved.push(to);
        }
    }
    write_new_ca(dir, &dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE), new)?;
    Ok(moved)
}

fn create_once(dir: &Path, cert_path: &Path, key_path: &Path, new: &NewCa) -> Result<(), CaError> {
    fs::create_dir_all(dir).map_err(|source| CaError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    // Two processes starting at once: the lock makes one create, the other load.
    let _lock = lock_dir(dir)?;
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => Ok(()),
        (false, false) => write_new_ca(dir, cert_path, key_path, new),
        (true, false) => Err(CaError::Incomplete {
            present: cert_path.to_path_buf(),
            missing: key_path.to_path_buf(),
        }),
        (false, true) => Err(CaError::Incomplete {
            present: key_path.to_path_buf(),
            missing: cert_path.to_path_buf(),
        }),
    }
}

fn lock_dir(dir: &Path) -> Result<File, CaError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| CaError::Write {
            path: path.clone(),
            source,
        })?;
    file.lock()
        .map_err(|source| CaError::Write { path, source })?;
    Ok(file)
}

fn write_new_ca(dir: &Path, cert_path: &Path, key_path: &Path, new: &NewCa) -> Result<(), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let id: u64 = rand::random();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("llmtap CA {id:016x}"));
    dn.push(DnType::OrganizationName, "llmtap");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial());
    params.name_constraints = new.name_constraints.clone();
    let cert = params.self_signed(&key)?;
    // Key first: a crash between the two renames leaves an incomplete pair, reported, never a torn file.
    write_atomic(dir, key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(dir, cert_path, cert.pem().as_bytes(), 0o644)
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let err = |source| CaError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".llmtap-ca-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn first_cert_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
}

/// The CA certificate's public key and its name constraints.
fn inspect(der: &CertificateDer<'_>) -> Result<(Vec<u8>, Option<NameScope>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let scope = constraints::read(&cert)?;
    Ok((cert.public_key().subject_public_key.data.to_vec(), scope))
}

fn random_serial() -> rcgen::SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive INTEGER: clear the top bit.
    bytes[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_then_reuses_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let a = CertAuthority::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = CertAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem());
        let (_, cert) = x509_parser::parse_x509_certificate(&a.ca_der).unwrap();
        assert!(cert.subject().to_string().contains("llmtap CA"));
        assert!(cert.is_ca());
    }

    #[test]
    fn corrupt_or_mismatched_pairs_are_errors_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        CertAuthority::load_or_create(dir.path()).unwrap();
        let other = tempfile::tempdir().unwrap();
        CertAuthority::load_or_create(other.path()).unwrap();
        fs::copy(other.path().join(CA_KEY_FILE), dir.path().join(CA_KEY_FILE)).unwrap();
        let err = CertAuthority::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, CaError::Mismatch { .. }), "{err}");

        fs::write(dir.path().join(CA_CERT_FILE), "garbage").unwrap();
        let err = CertAuthority::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
        assert_eq!(
            fs::read_to_string(dir.path().join(CA_CERT_FILE)).unwrap(),
            "garbage"
        );

        fs::remove_file(dir.path().join(CA_CERT_FILE)).unwrap();
        let err = CertAuthority::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, CaError::Incomplete { .. }), "{err}");
    }

    #[test]
    fn leaves_have_own_keys_and_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::load_or_create(dir.path()).unwrap();
        let a = ca.server_config_for("api.anthropic.com").unwrap();
        let b = ca.server_config_for("API.anthropic.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        ca.server_config_for("127.0.0.1").unwrap();
        assert_eq!(ca.cached_leaves(), 2);
    }

    #[test]
    fn a_name_constrained_ca_reads_its_constraints_back() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = HostList::parse("api.openai.com,*.example.com,10.1.2.3").unwrap();
        let new = NewCa::name_constrained(&hosts).unwrap();
        CertAuthority::load_or_create_with(dir.path(), &new).unwrap();
        let ca = CertAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(
            ca.name_scope().unwrap().to_string(),
            "permitted DNS api.openai.com, DNS example.com, IP 10.1.2.3/32; excluded IP ::/0"
        );
        ca.check_hosts(&hosts).unwrap();
        let err = ca
            .check_hosts(&HostList::parse("api.openai.com,evil.com").unwrap())
            .unwrap_err();
        assert!(
            matches!(&err, CaError::HostsOutside { hosts, .. } if hosts == &["evil.com"]),
            "{err}"
        );
        let plain = tempfile::tempdir().unwrap();
        let ca = CertAuthority::load_or_create(plain.path()).unwrap();
        assert!(ca.name_scope().is_none());
        ca.check_hosts(&HostList::parse("evil.com").unwrap())
            .unwrap();
    }

    #[test]
    fn rotate_moves_the_old_pair_aside() {
        let dir = tempfile::tempdir().unwrap();
        let old = CertAuthority::load_or_create(dir.path()).unwrap();
        let moved = rotate(dir.path(), &NewCa::default()).unwrap();
        assert_eq!(moved.len(), 2);
        let new = CertAuthority::load_or_create(dir.path()).unwrap();
        assert_ne!(old.cert_pem(), new.cert_pem());
    }
}
