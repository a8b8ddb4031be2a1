//! Per-host leaf certificates, minted on demand from the CA and cached (bounded).

use std::sync::Arc;

use super::ca::{CaError, CertificateAuthority};

/// Default number of hosts whose server config is kept.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Mints and caches one `rustls::ServerConfig` per host (DNS name or IP literal).
#[derive(Debug)]
pub struct LeafCache {
    _private: (),
}

impl LeafCache {
    /// # Errors
    /// The CA's key can't sign.
    pub fn new(ca: &CertificateAuthority, capacity: usize) -> Result<Self, CaError> {
        let _ = (ca, capacity);
        unimplemented!()
    }
    /// The server config for `host` (ALPN h2 and http/1.1), minted on the first call.
    ///
    /// # Errors
    /// Minting failed.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let _ = host;
        unimplemented!()
    }
    pub fn hits(&self) -> u64 {
        unimplemented!()
    }
    pub fn misses(&self) -> u64 {
        unimplemented!()
    }
}
