//! The upstream TLS client and its audit (SPEC section 5): as strict as iOS ATS.

use std::path::PathBuf;
use std::sync::Arc;

use crate::policy::NetError;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {message}")]
    Trust { path: PathBuf, message: String },
}

/// Which ALPN protocols the upstream client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2`, `http/1.1`: ordinary calls.
    H2AndHttp11,
    /// `http/1.1` only: WebSocket upgrades.
    Http11,
}

/// Upstream TLS client configs: strict (audited) and lax (skip switch on, or `strict_tls: false`).
#[derive(Debug)]
pub struct UpstreamTls {
    _private: (),
}

impl UpstreamTls {
    /// System roots plus the PEM files of `upstream.trust`.
    ///
    /// # Errors
    /// A trust file can't be read or holds no certificate.
    pub fn new(trust: &[PathBuf]) -> Result<Self, AuditError> {
        let _ = trust;
        unimplemented!()
    }
    /// The client config to connect with. `strict` = the audit of SPEC section 5; otherwise
    /// any certificate is accepted (like the devtools' "do not verify TLS").
    pub fn client_config(&self, strict: bool, alpn: Alpn) -> Arc<rustls::ClientConfig> {
        let _ = (strict, alpn);
        unimplemented!()
    }
    /// After a successful strict handshake: the checks the verifier can't see (TLS version,
    /// forward-secret cipher).
    ///
    /// # Errors
    /// The session fails a check.
    pub fn check_session(&self, conn: &rustls::ClientConnection) -> Result<(), NetError> {
        let _ = conn;
        unimplemented!()
    }
}

/// Map a failed TLS handshake (the io::Error tokio-rustls returns) to the Chromium error.
pub fn classify_handshake_error(err: &std::io::Error) -> NetError {
    let _ = err;
    unimplemented!()
}
