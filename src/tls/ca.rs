//! The local CA: made with rcgen on first start under `ca.dir`, or brought by the user (a CA that
//! phones already trust: mitmproxy's, Charles', whistle's). Keys in PKCS#8, SEC1 or PKCS#1 PEM,
//! ECDSA or RSA (at least 2048 bits for RSA, 256 for ECDSA). The directory is created 0700 and
//! the key file 0600, never readable by others even for a moment; a key file that group or others
//! can read is used with a warning (it is the user's file: not chmod-ed behind their back).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};

/// File name of the CA certificate inside `ca.dir`.
pub const CERT_FILE: &str = "wxsandbox-ca.pem";
/// File name of the CA key inside `ca.dir` (written 0600).
pub const KEY_FILE: &str = "wxsandbox-ca.key";
/// How long a generated CA is valid. Root lifetimes are not limited by the 825-day rule.
const CA_DAYS: i64 = 3650;
/// The smallest CA key accepted, as for the leaves the audit accepts (SPEC section 5).
pub const MIN_RSA_BITS: usize = 2048;
pub const MIN_ECDSA_BITS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// How the CA came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaOrigin {
    /// Made by this run.
    Generated,
    /// Found in `ca.dir` (made earlier, or brought by the user); the key's kind, e.g. `ECDSA P-256 (PKCS#8)`.
    Existing { key_kind: String },
}

/// The CA that signs the leaves shown to clients.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: Vec<u8>,
    cert_path: PathBuf,
    key_path: PathBuf,
    origin: CaOrigin,
    subject: String,
    /// Permission bits of the key file (Unix), as found at load.
    key_mode: Option<u32>,
    issuer: std::sync::Arc<Issuer<'static, KeyPair>>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_path", &self.cert_path)
            .field("origin", &self.origin)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Load the CA from `dir`, or make one there when neither file exists.
    ///
    /// # Errors
    /// The directory can't be created or read, only one of the two files exists, or the files
    /// are not a usable CA (not a CA certificate, a key that doesn't match it).
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(cert_path, key_path),
            (false, false) => Self::create(dir, cert_path, key_path),
            (true, false) => Err(CaError::Invalid(format!(
                "{} exists but {} is missing: put the CA's key there, or remove the certificate to make a new CA",
                cert_path.display(),
                key_path.display()
            ))),
            (false, true) => Err(CaError::Invalid(format!(
                "{} exists but {} is missing: put the CA's certificate there, or remove the key to make a new CA",
                key_path.display(),
                cert_path.display()
            ))),
        }
    }

    fn create(dir: &Path, cert_path: PathBuf, key_path: PathBuf) -> Result<Self, CaError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CaError::Io { path, source }
        };
        create_private_dir(dir).map_err(io(dir))?;
        let key = KeyPair::generate()
            .map_err(|e| CaError::Invalid(format!("can't make a CA key: {e}")))?;
        let id: u32 = rand::random();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, format!("wxsandbox CA {id:08x}"));
        p.distinguished_name
            .push(DnType::OrganizationName, "wxsandbox");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(CA_DAYS);
        p.serial_number = Some(SerialNumber::from(rand::random::<u64>()));
        let cert = p
            .self_signed(&key)
            .map_err(|e| CaError::Invalid(format!("can't sign the CA: {e}")))?;
        // The key first, created 0600: a crash between the two writes leaves no readable key.
        let mut file = OpenOptions::new();
        file.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        let mut f = file.open(&key_path).map_err(io(&key_path))?;
        f.write_all(key.serialize_pem().as_bytes())
            .map_err(io(&key_path))?;
        // The certificate is public, but only its owner may replace it (0644 under any umask).
        let mut file = OpenOptions::new();
        file.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o644);
        file.open(&cert_path)
            .and_then(|mut f| f.write_all(cert.pem().as_bytes()))
            .map_err(io(&cert_path))?;
        let mut ca = Self::load(cert_path, key_path)?;
        ca.origin = CaOrigin::Generated;
        Ok(ca)
    }

    fn load(cert_path: PathBuf, key_path: PathBuf) -> Result<Self, CaError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| CaError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let invalid =
            |path: &Path, what: String| CaError::Invalid(format!("{}: {what}", path.display()));
        let cert_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| invalid(&cert_path, "no PEM CERTIFICATE in it".to_owned()))?
            .to_vec();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| invalid(&cert_path, format!("not an X.509 certificate: {e}")))?;
        if !parsed.is_ca() {
            return Err(invalid(
                &cert_path,
                "is not a CA certificate (basicConstraints CA:TRUE missing)".to_owned(),
            ));
        }
        let subject = parsed.subject().to_string();
        if let Some(small) = too_small(&parsed) {
            return Err(invalid(&cert_path, small));
        }
        let (key, key_kind) = load_key(&key_pem).map_err(|e| invalid(&key_path, e))?;
        if key.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
            return Err(invalid(
                &key_path,
                format!("does not match the certificate {}", cert_path.display()),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key)
            .map_err(|e| invalid(&cert_path, format!("can't be used to sign: {e}")))?;
        // Normalise the PEM (a bundle may carry text or several blocks): serve exactly this one.
        let cert_pem = pem_encode("CERTIFICATE", &cert_der);
        let key_mode = file_mode(&key_path);
        let ca = CertificateAuthority {
            cert_pem,
            cert_der,
            cert_path,
            key_path,
            origin: CaOrigin::Existing { key_kind },
            subject,
            key_mode,
            issuer: std::sync::Arc::new(issuer),
        };
        if let Some(warning) = ca.key_warning() {
            tracing::warn!(key = %ca.key_path.display(), "{warning}");
        }
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
    /// `AA:BB:...` upper-case hex of SHA-256 over the DER certificate.
    pub fn fingerprint_sha256(&self) -> String {
        Sha256::digest(&self.cert_der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
    pub fn origin(&self) -> &CaOrigin {
        &self.origin
    }
    /// The subject, for `wxsandbox ca`.
    pub fn subject(&self) -> String {
        self.subject.clone()
    }
    /// The signer of leaves.
    pub fn issuer(&self) -> std::sync::Arc<Issuer<'static, KeyPair>> {
        self.issuer.clone()
    }
    /// The key file's permission bits (e.g. `0o600`), as found at load; `None` off Unix.
    pub fn key_mode(&self) -> Option<u32> {
        self.key_mode
    }
    /// What is wrong with the key file's permissions, and how to fix it: `None` when group and
    /// others can neither read nor write it.
    pub fn key_warning(&self) -> Option<String> {
        let mode = self.key_mode?;
        (mode & 0o066 != 0).then(|| {
            format!(
                "the CA key {path} has mode {mode:04o}: group or others can {what} it, and whoever \
                 holds it can impersonate any HTTPS site to devices that trust this CA; \
                 fix: chmod 600 {path}",
                path = self.key_path.display(),
                what = if mode & 0o044 != 0 { "read" } else { "write" },
            )
        })
    }
}

/// The permission bits of `path` (following symlinks); `None` off Unix or when unreadable.
fn file_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Create `dir` and any missing parents 0700, even under `umask 000` (the CA key lives there; a
/// umask can only take more away). Directories that exist are left as they are.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The CA's key is smaller than the minimum: the message says so, with the size and the minimum.
fn too_small(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    use x509_parser::public_key::PublicKey;
    let (kind, bits, min) = match cert.public_key().parsed().ok()? {
        PublicKey::RSA(k) => ("RSA", crate::tls::checks::rsa_bits(k.modulus), MIN_RSA_BITS),
        PublicKey::EC(p) => ("ECDSA", p.key_size(), MIN_ECDSA_BITS),
        _ => return None,
    };
    (bits < min).then(|| {
        format!(
            "the CA key is {kind} {bits} bits: too small (the minimum is {MIN_RSA_BITS} bits for RSA, \
             {MIN_ECDSA_BITS} for ECDSA); make a new CA with a {min}-bit or larger {kind} key"
        )
    })
}

/// A PEM private key in PKCS#8, SEC1 or PKCS#1, as an rcgen key pair, with a description.
fn load_key(pem: &str) -> Result<(KeyPair, String), String> {
    use rustls::pki_types::PrivateKeyDer;
    let der = rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| format!("can't read the PEM: {e}"))?
        .ok_or("no PEM private key in it (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")?;
    // rcgen's ring backend reads PKCS#8 only: wrap the others in a PrivateKeyInfo.
    let (candidates, format) = match &der {
        PrivateKeyDer::Pkcs8(k) => (vec![k.secret_pkcs8_der().to_vec()], "PKCS#8"),
        PrivateKeyDer::Sec1(k) => (
            vec![
                pkcs8_wrap(&[OID_EC_PUBLIC_KEY, OID_P256].concat(), k.secret_sec1_der()),
                pkcs8_wrap(&[OID_EC_PUBLIC_KEY, OID_P384].concat(), k.secret_sec1_der()),
            ],
            "SEC1",
        ),
        PrivateKeyDer::Pkcs1(k) => (
            vec![pkcs8_wrap(
                &[OID_RSA, DER_NULL].concat(),
                k.secret_pkcs1_der(),
            )],
            "PKCS#1",
        ),
        _ => return Err("unsupported private key format".to_owned()),
    };
    for pkcs8 in candidates {
        if let Ok(key) = KeyPair::try_from(pkcs8.as_slice()) {
            let kind = describe(&key);
            return Ok((key, format!("{kind} ({format})")));
        }
    }
    Err(format!(
        "the {format} key can't be used: only ECDSA P-256/P-384 and RSA keys are supported"
    ))
}

fn describe(key: &KeyPair) -> String {
    let alg = key.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        "ECDSA P-256".to_owned()
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        "ECDSA P-384".to_owned()
    } else if alg == &rcgen::PKCS_ED25519 {
        "Ed25519".to_owned()
    } else {
        // RSAPublicKey DER: the modulus is the first INTEGER; its length gives the size.
        format!(
            "RSA {}",
            rsa_bits(key.public_key_raw()).map_or_else(|| "?".to_owned(), |b| b.to_string())
        )
    }
}

fn rsa_bits(rsa_public_key: &[u8]) -> Option<usize> {
    let (_, seq) = x509_parser::der_parser::der::parse_der_sequence(rsa_public_key).ok()?;
    let items = seq.as_sequence().ok()?;
    let modulus = items.first()?.as_slice().ok()?;
    let significant = modulus.iter().skip_while(|b| **b == 0).count();
    Some(significant * 8)
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
];
const DER_NULL: &[u8] = &[0x05, 0x00];

/// `PrivateKeyInfo ::= SEQUENCE { version 0, AlgorithmIdentifier, OCTET STRING key }` (RFC 5208).
fn pkcs8_wrap(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend(der_tlv(0x30, algorithm));
    body.extend(der_tlv(0x04, key));
    der_tlv(0x30, &body)
}

fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    #[test]
    fn generates_once_with_a_0600_key_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.origin(), &CaOrigin::Generated);
        let mode = std::fs::metadata(ca.key_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(ca.subject().contains("wxsandbox CA"));
        let again = CertificateAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(again.fingerprint_sha256(), ca.fingerprint_sha256());
        assert_eq!(
            again.origin(),
            &CaOrigin::Existing {
                key_kind: "ECDSA P-256 (PKCS#8)".to_owned()
            }
        );
        assert_eq!(ca.fingerprint_sha256().len(), 32 * 3 - 1);
    }

    #[test]
    fn one_file_alone_is_an_error_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CERT_FILE), "x").unwrap();
        let err = CertificateAuthority::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is missing"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CERT_FILE)).unwrap(),
            "x"
        );
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A CA made by openssl with the given key (file `key.pem`), then loaded as brought by a user.
    fn byo(genkey: &[&str], convert: Option<&[&str]>, expected: &str) {
        let dir = byo_dir(genkey, convert);
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(
            ca.origin(),
            &CaOrigin::Existing {
                key_kind: expected.to_owned()
            }
        );
        assert!(ca.subject().contains("Byo Test CA"));
        let leaves = crate::tls::leaf::LeafCache::new(&ca, 4).unwrap();
        leaves.server_config("byo.example.com").unwrap();
    }

    /// A CA directory as a user brings it: certificate and key made by openssl with `genkey`
    /// (which writes `key.pem`), the key copied or `convert`ed to [`KEY_FILE`].
    fn byo_dir(genkey: &[&str], convert: Option<&[&str]>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(d, genkey);
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "key.pem",
                "-subj",
                "/CN=Byo Test CA",
                "-days",
                "30",
                "-out",
                CERT_FILE,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        match convert {
            Some(args) => openssl(d, args),
            None => std::fs::copy(d.join("key.pem"), d.join(KEY_FILE))
                .map(|_| ())
                .unwrap(),
        }
        dir
    }

    #[test]
    fn refuses_an_rsa_1024_ca_as_too_small() {
        let dir = byo_dir(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
                "-out",
                "key.pem",
            ],
            None,
        );
        let err = CertificateAuthority::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("too small") && err.contains("RSA 1024") && err.contains("2048"),
            "{err}"
        );
        assert!(err.contains(CERT_FILE), "names the file: {err}");
    }

    #[test]
    fn refuses_an_ecdsa_p192_ca_as_too_small() {
        // Whether this openssl still makes P-192 keys varies; skip the case where it can't.
        let dir = tempfile::tempdir().unwrap();
        let made = Command::new("openssl")
            .current_dir(dir.path())
            .args([
                "ecparam",
                "-name",
                "prime192v1",
                "-genkey",
                "-noout",
                "-out",
                "probe.pem",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if !made {
            eprintln!("openssl can't make a P-192 key here: skipped");
            return;
        }
        let dir = byo_dir(
            &[
                "ecparam",
                "-name",
                "prime192v1",
                "-genkey",
                "-noout",
                "-out",
                "key.pem",
            ],
            None,
        );
        let err = CertificateAuthority::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("too small") && err.contains("ECDSA 192") && err.contains("256"),
            "{err}"
        );
    }

    #[test]
    fn a_key_open_to_group_or_others_is_used_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.key_mode(), Some(0o600));
        assert_eq!(ca.key_warning(), None);
        let key = dir.path().join(KEY_FILE);
        for (mode, what) in [(0o644, "read"), (0o640, "read"), (0o620, "write")] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
            assert_eq!(ca.key_mode(), Some(mode));
            let warning = ca.key_warning().unwrap();
            assert!(
                warning.contains(&format!("{mode:04o}"))
                    && warning.contains(&format!("can {what} it"))
                    && warning.contains(&format!("chmod 600 {}", key.display())),
                "{warning}"
            );
            // Not chmod-ed behind the user's back.
            let now = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(now, mode);
        }
    }

    #[test]
    fn creates_the_directory_and_missing_parents_0700() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("new").join("sub");
        let ca = CertificateAuthority::load_or_create(&sub).unwrap();
        for d in [dir.path().join("new"), sub.clone()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        let cert = std::fs::metadata(ca.cert_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(
            cert & 0o022,
            0,
            "the certificate is writable only by its owner"
        );
    }

    #[test]
    fn brings_an_rsa_pkcs8_ca() {
        byo(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "key.pem",
            ],
            None,
            "RSA 2048 (PKCS#8)",
        );
    }

    #[test]
    fn brings_an_rsa_pkcs1_ca() {
        byo(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "key.pem",
            ],
            Some(&["rsa", "-in", "key.pem", "-traditional", "-out", KEY_FILE]),
            "RSA 2048 (PKCS#1)",
        );
    }

    #[test]
    fn brings_an_ec_sec1_ca() {
        byo(
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "key.pem",
            ],
            None,
            "ECDSA P-256 (SEC1)",
        );
    }

    #[test]
    fn refuses_a_key_that_does_not_match() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_create(a.path()).unwrap();
        CertificateAuthority::load_or_create(b.path()).unwrap();
        std::fs::copy(b.path().join(KEY_FILE), a.path().join(KEY_FILE)).unwrap();
        let err = CertificateAuthority::load_or_create(a.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match"), "{err}");
    }
}
