//! Per-host leaf certificates, minted on demand from the CA and cached (bounded). One ECDSA P-256
//! leaf key is made at start and shared by every leaf, so a new host costs one CA signature,
//! not a key generation; each leaf gets a random serial.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::ca::{CaError, CertificateAuthority};

/// Default number of hosts whose server config is kept.
pub const DEFAULT_CAPACITY: usize = 1024;
/// Leaf lifetime: under Apple's 398-day limit, so iOS accepts it whatever it chains to.
pub const LEAF_DAYS: i64 = 397;

/// Mints and caches one `rustls::ServerConfig` per host (DNS name or IP literal).
pub struct LeafCache {
    ca_cert: CertificateDer<'static>,
    leaf_key: KeyPair,
    signer: Arc<dyn rustls::sign::SigningKey>,
    /// Shared by every host's config: one session cache, one ticketer, the ALPN list.
    base: rustls::ServerConfig,
    cache: Mutex<Cache>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    issuer: Arc<rcgen::Issuer<'static, KeyPair>>,
}

#[derive(Default)]
struct Cache {
    map: HashMap<String, Arc<rustls::ServerConfig>>,
    order: VecDeque<String>,
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("capacity", &self.capacity)
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl LeafCache {
    /// # Errors
    /// The leaf key can't be made or loaded.
    pub fn new(ca: &CertificateAuthority, capacity: usize) -> Result<Self, CaError> {
        let invalid = |e: &dyn std::fmt::Display| CaError::Invalid(format!("leaf key: {e}"));
        let leaf_key = KeyPair::generate().map_err(|e| invalid(&e))?;
        let provider = super::provider();
        let signer = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()))
            .map_err(|e| invalid(&e))?;
        let placeholder = Arc::new(OneCert(Arc::new(CertifiedKey::new(vec![], signer.clone()))));
        let mut base = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&e))?
            .with_no_client_auth()
            .with_cert_resolver(placeholder);
        base.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // The proxy's suite order, not the client's: see [`super::provider`].
        base.ignore_client_order = true;
        Ok(LeafCache {
            ca_cert: CertificateDer::from(ca.cert_der().to_vec()),
            leaf_key,
            signer,
            base,
            cache: Mutex::new(Cache::default()),
            capacity: capacity.max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            issuer: ca.issuer(),
        })
    }

    /// The server config for `host` (ALPN h2 and http/1.1), minted on the first call.
    ///
    /// # Errors
    /// Minting failed.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let key = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(config) = self.lock().map.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(config.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Minted outside the lock: two first connections to one host may both mint; one wins.
        let config = Arc::new(self.mint(&key)?);
        let mut cache = self.lock();
        if !cache.map.contains_key(&key) {
            if cache.map.len() >= self.capacity {
                if let Some(oldest) = cache.order.pop_front() {
                    cache.map.remove(&oldest);
                }
            }
            cache.order.push_back(key.clone());
            cache.map.insert(key, config.clone());
        }
        Ok(config)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The leaf (for `host`) and the CA, as served.
    fn mint_chain(&self, host: &str) -> Result<Vec<CertificateDer<'static>>, CaError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![match bare.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                bare.to_owned()
                    .try_into()
                    .map_err(|e| CaError::Invalid(format!("{bare}: not a DNS name: {e}")))?,
            ),
        }];
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, bare);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        // Unique per leaf: every leaf shares one key, so the default (key hash) would repeat.
        p.serial_number = Some(SerialNumber::from(rand::random::<u64>() >> 1));
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = p.not_before + time::Duration::days(LEAF_DAYS);
        let cert = p
            .signed_by(&self.leaf_key, &*self.issuer)
            .map_err(|e| CaError::Invalid(format!("can't mint a leaf for {bare}: {e}")))?;
        Ok(vec![cert.der().clone(), self.ca_cert.clone()])
    }

    fn mint(&self, host: &str) -> Result<rustls::ServerConfig, CaError> {
        let chain = self.mint_chain(host)?;
        let certified = Arc::new(CertifiedKey::new(chain, self.signer.clone()));
        let mut config = self.base.clone();
        config.cert_resolver = Arc::new(OneCert(certified));
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    fn setup() -> (tempfile::TempDir, CertificateAuthority) {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        (dir, ca)
    }

    fn verify(
        ca: &CertificateAuthority,
        chain: &[CertificateDer<'static>],
        name: &str,
    ) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der().to_vec()))
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn leaves_chain_to_the_ca_for_names_and_ips() {
        let (_dir, ca) = setup();
        let leaves = LeafCache::new(&ca, 8).unwrap();
        for host in ["api.example.com", "127.0.0.1", "[::1]"] {
            let chain = leaves.mint_chain(host).unwrap();
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            verify(&ca, &chain, bare).unwrap_or_else(|e| panic!("{host}: {e}"));
            assert!(verify(&ca, &chain, "other.example.com").is_err());
            let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
            let v = leaf.validity();
            assert!((v.not_after.timestamp() - v.not_before.timestamp()) / 86400 <= 397);
            let eku = leaf.extended_key_usage().unwrap().unwrap();
            assert!(eku.value.server_auth);
        }
    }

    #[test]
    fn serials_differ_and_the_cache_is_hit_and_bounded() {
        let (_dir, ca) = setup();
        let leaves = LeafCache::new(&ca, 2).unwrap();
        let a = leaves.mint_chain("a.example.com").unwrap();
        let b = leaves.mint_chain("b.example.com").unwrap();
        let serial = |der: &CertificateDer<'_>| {
            x509_parser::parse_x509_certificate(der)
                .unwrap()
                .1
                .raw_serial()
                .to_vec()
        };
        assert_ne!(serial(&a[0]), serial(&b[0]));
        let first = leaves.server_config("a.example.com").unwrap();
        let again = leaves.server_config("A.example.com.").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!((leaves.hits(), leaves.misses()), (1, 1));
        leaves.server_config("b.example.com").unwrap();
        leaves.server_config("c.example.com").unwrap();
        assert!(leaves.lock().map.len() <= 2);
    }
}
