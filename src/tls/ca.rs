//! The local CA: made with rcgen on first start under `ca.dir`, or brought by the user.

use std::path::{Path, PathBuf};

/// File name of the CA certificate inside `ca.dir`.
pub const CERT_FILE: &str = "wxsandbox-ca.pem";
/// File name of the CA key inside `ca.dir` (written 0600).
pub const KEY_FILE: &str = "wxsandbox-ca.key";

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
#[derive(Debug)]
pub struct CertificateAuthority {
    _private: (),
}

impl CertificateAuthority {
    /// Load the CA from `dir`, or make one there when none exists.
    ///
    /// # Errors
    /// The directory can't be created or read, or the files there are not a usable CA.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let _ = dir;
        unimplemented!("ca::load_or_create")
    }
    pub fn cert_pem(&self) -> &str {
        unimplemented!()
    }
    pub fn cert_der(&self) -> &[u8] {
        unimplemented!()
    }
    /// `AA:BB:...` upper-case hex of SHA-256 over the DER certificate.
    pub fn fingerprint_sha256(&self) -> String {
        unimplemented!()
    }
    pub fn cert_path(&self) -> &Path {
        unimplemented!()
    }
    pub fn key_path(&self) -> &Path {
        unimplemented!()
    }
    pub fn origin(&self) -> &CaOrigin {
        unimplemented!()
    }
    /// The subject, for `wxsandbox ca`.
    pub fn subject(&self) -> String {
        unimplemented!()
    }
}
