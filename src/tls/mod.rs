//! TLS: the local CA and per-host leaf certificates (client side of the MITM), and the upstream
//! TLS client with its audit (server side).

pub mod audit;
pub mod ca;
pub mod checks;
pub mod leaf;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::CipherSuite;

/// The crypto of every TLS config the proxy makes, on both sides of the MITM: rustls' ring
/// backend with the AES-128-GCM suites first. That is the order browsers and Go's TLS offer, and
/// every client and server supports it; AES-256 runs 14 AES rounds per block to AES-128's 10, on
/// every byte of both legs of every call. The phone's leg takes the proxy's order
/// (`ignore_client_order` in [`leaf`]): OpenSSL clients (curl) and rustls ones list AES-256 first.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| !prefers(suite.suite()));
    Arc::new(provider)
}

/// The suites put first by [`provider`] (the sort is stable: the rest keep rustls' order).
fn prefers(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_comes_first_in_each_version_and_nothing_is_lost() {
        let ours: Vec<CipherSuite> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let theirs: Vec<CipherSuite> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(ours.len(), theirs.len());
        assert!(theirs.iter().all(|s| ours.contains(s)));
        let tls12_first = ours
            .iter()
            .find(|s| !matches!(s, CipherSuite::TLS13_AES_128_GCM_SHA256) && prefers(**s));
        assert!(
            tls12_first.is_some(),
            "a TLS 1.2 AES-128-GCM suite is offered"
        );
    }
}
