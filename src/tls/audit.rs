//! The upstream TLS client and its audit (SPEC section 5): the chain must be trusted (system
//! roots plus `upstream.trust`), the name and dates right, TLS 1.2 or newer. Failures are named
//! as Chromium names them (`-202 ERR_CERT_AUTHORITY_INVALID`), with what to fix.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::checks::{certificate_checks, webpki_checks, Check};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

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
    strict: Arc<rustls::ClientConfig>,
    lax: Arc<rustls::ClientConfig>,
    auditor: Arc<Auditor>,
}

/// Verdicts kept per (server name, served chain).
const AUDIT_CACHE: usize = 4096;

/// Runs the audit; shared by the proxy's verifier and `check-cert`.
#[derive(Debug)]
pub struct Auditor {
    webpki: Arc<WebPkiServerVerifier>,
    /// Subjects (DER contents) of every trusted root, and of those from `upstream.trust`.
    roots: HashSet<Vec<u8>>,
    private_roots: HashSet<Vec<u8>>,
    cache: Mutex<HashMap<[u8; 32], Option<NetError>>>,
}

/// The DER contents of a TLV (a Name without its SEQUENCE header), as trust anchors keep subjects.
fn der_contents(raw: &[u8]) -> &[u8] {
    let Some(&first_len) = raw.get(1) else {
        return raw;
    };
    let header = if first_len & 0x80 == 0 {
        2
    } else {
        2 + usize::from(first_len & 0x7f)
    };
    raw.get(header..).unwrap_or(raw)
}

impl Auditor {
    /// Every check of SPEC section 5 on what the server sent.
    pub fn audit(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Vec<Check> {
        let webpki = self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, &[], now)
            .map(|_| ());
        let top = intermediates.last().unwrap_or(end_entity);
        let issuer_of = |der: &[u8]| {
            X509Certificate::from_der(der)
                .ok()
                .map(|(_, c)| der_contents(c.issuer().as_raw()).to_vec())
        };
        let leaf_issuer = issuer_of(end_entity);
        let incomplete =
            intermediates.is_empty() && leaf_issuer.is_some_and(|i| !self.roots.contains(&i));
        let public_root = issuer_of(top).is_none_or(|i| !self.private_roots.contains(&i));
        let host = server_name.to_str();
        let mut checks = certificate_checks(end_entity, intermediates, public_root);
        checks.extend(webpki_checks(&webpki, incomplete, &host));
        checks
    }

    /// The first failure of the audit, cached per server name and served chain.
    fn verdict(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Option<NetError> {
        let mut hash = Sha256::new();
        hash.update(server_name.to_str().as_bytes());
        for cert in std::iter::once(end_entity).chain(intermediates) {
            hash.update((cert.len() as u64).to_be_bytes());
            hash.update(cert.as_ref());
        }
        let key: [u8; 32] = hash.finalize().into();
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return hit.clone();
        }
        let failure = self
            .audit(end_entity, intermediates, server_name, now)
            .iter()
            .find(|c| !c.passed)
            .and_then(Check::net_error);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= AUDIT_CACHE {
            cache.clear();
        }
        // Dates move: a cached "expired" stays right, a cached pass is re-checked by webpki
        // only when the cache turns over, which is far within any certificate's lifetime.
        cache.insert(key, failure.clone());
        failure
    }
}

/// An audit failure inside a rustls error, so the connector can name it.
#[derive(Debug)]
struct AuditFailure(NetError);

impl std::fmt::Display for AuditFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:net::{} ({})",
            self.0.code, self.0.name, self.0.detail
        )
    }
}

impl std::error::Error for AuditFailure {}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl UpstreamTls {
    /// System roots plus the PEM files of `upstream.trust`.
    ///
    /// # Errors
    /// A trust file can't be read or holds no certificate.
    pub fn new(trust: &[PathBuf]) -> Result<Self, AuditError> {
        let mut roots = rustls::RootCertStore::empty();
        let mut private_roots = HashSet::new();
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for path in trust {
            let text = std::fs::read(path).map_err(|e| AuditError::Trust {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut text.as_slice())
                .filter_map(Result::ok)
                .collect();
            if certs.is_empty() {
                return Err(AuditError::Trust {
                    path: path.clone(),
                    message: "holds no PEM certificate".to_owned(),
                });
            }
            for cert in certs {
                if let Ok((_, c)) = X509Certificate::from_der(&cert) {
                    private_roots.insert(der_contents(c.subject().as_raw()).to_vec());
                }
                roots.add(cert).map_err(|e| AuditError::Trust {
                    path: path.clone(),
                    message: format!("unusable certificate: {e}"),
                })?;
            }
        }
        let root_subjects = roots
            .roots
            .iter()
            .map(|r| r.subject.as_ref().to_vec())
            .collect();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| AuditError::Trust {
                path: PathBuf::from("<roots>"),
                message: e.to_string(),
            })?;
        let auditor = Arc::new(Auditor {
            webpki: verifier.clone(),
            roots: root_subjects,
            private_roots,
            cache: Mutex::new(HashMap::new()),
        });
        let strict = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| AuditError::Trust {
                path: PathBuf::new(),
                message: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Strict {
                inner: verifier,
                auditor: auditor.clone(),
            }))
            .with_no_client_auth();
        let lax = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| AuditError::Trust {
                path: PathBuf::new(),
                message: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
            .with_no_client_auth();
        Ok(UpstreamTls {
            strict: Arc::new(strict),
            lax: Arc::new(lax),
            auditor,
        })
    }

    /// The client config to connect with. `strict` = the audit of SPEC section 5; otherwise
    /// any certificate is accepted (like the devtools' "do not verify TLS").
    pub fn client_config(&self, strict: bool, alpn: Alpn) -> Arc<rustls::ClientConfig> {
        let mut config = if strict {
            (*self.strict).clone()
        } else {
            (*self.lax).clone()
        };
        config.alpn_protocols = match alpn {
            Alpn::H2AndHttp11 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http11 => vec![b"http/1.1".to_vec()],
        };
        Arc::new(config)
    }

    /// The auditor, for `check-cert`.
    pub fn auditor(&self) -> Arc<Auditor> {
        self.auditor.clone()
    }

    /// After a successful strict handshake: the checks the verifier can't see (TLS version).
    ///
    /// # Errors
    /// The session fails a check.
    pub fn check_session(&self, conn: &rustls::ClientConnection) -> Result<(), NetError> {
        match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2 | rustls::ProtocolVersion::TLSv1_3) | None => {
                Ok(())
            }
            Some(v) => Err(NetError {
                code: -113,
                name: "ERR_SSL_VERSION_OR_CIPHER_MISMATCH",
                detail: format!("the server negotiated {v:?}; enable TLS 1.2 or newer"),
            }),
        }
    }
}

/// The strict verifier: the audit, failures classified; handshake signatures by webpki.
#[derive(Debug)]
struct Strict {
    inner: Arc<WebPkiServerVerifier>,
    auditor: Arc<Auditor>,
}

impl ServerCertVerifier for Strict {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .auditor
            .verdict(end_entity, intermediates, server_name, now)
        {
            None => Ok(ServerCertVerified::assertion()),
            Some(failure) => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(AuditFailure(failure))),
            ))),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The lax verifier: any certificate (the skip switch, `strict_tls: false`).
#[derive(Debug)]
pub(crate) struct AcceptAny(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    // "Do not verify" includes the handshake signature: ring can't check one made with a key
    // the audit would refuse (RSA-1024), and the skip switch must let such servers through.
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Map a failed TLS handshake (the io::Error tokio-rustls returns) to the Chromium error.
pub fn classify_handshake_error(err: &std::io::Error) -> NetError {
    let net = |code, name, detail: String| NetError { code, name, detail };
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match err.kind() {
            std::io::ErrorKind::ConnectionReset => net(
                -101,
                "ERR_CONNECTION_RESET",
                format!("TLS handshake: {err}"),
            ),
            std::io::ErrorKind::UnexpectedEof => net(
                -324,
                "ERR_EMPTY_RESPONSE",
                "the server closed the connection during the TLS handshake".to_owned(),
            ),
            _ => net(
                -107,
                "ERR_SSL_PROTOCOL_ERROR",
                format!("TLS handshake: {err}"),
            ),
        };
    };
    if let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = tls {
        if let Some(failure) = other.0.downcast_ref::<AuditFailure>() {
            return failure.0.clone();
        }
    }
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => net(
                -200,
                "ERR_CERT_COMMON_NAME_INVALID",
                "the certificate doesn't name this host: add it to the certificate's subjectAltName".to_owned(),
            ),
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => net(
                -201,
                "ERR_CERT_DATE_INVALID",
                format!("the certificate is outside its validity dates ({cert:?}): renew it"),
            ),
            CertificateError::UnknownIssuer => net(
                -202,
                "ERR_CERT_AUTHORITY_INVALID",
                "the chain doesn't lead to a trusted root: serve the full chain (leaf + intermediates) \
                 and use a certificate from a public CA (or add your CA to upstream.trust for tests)"
                    .to_owned(),
            ),
            CertificateError::BadSignature | CertificateError::UnsupportedSignatureAlgorithmContext { .. } => net(
                -208,
                "ERR_CERT_WEAK_SIGNATURE_ALGORITHM",
                "a certificate in the chain is signed with a weak or unsupported algorithm: reissue with SHA-256 or stronger".to_owned(),
            ),
            other => net(-202, "ERR_CERT_AUTHORITY_INVALID", format!("the certificate was refused: {other:?}")),
        },
        rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion)
        | rustls::Error::PeerIncompatible(_) => net(
            -113,
            "ERR_SSL_VERSION_OR_CIPHER_MISMATCH",
            format!("no common TLS version or cipher ({tls}): enable TLS 1.2 or newer with ECDHE ciphers"),
        ),
        other => net(-107, "ERR_SSL_PROTOCOL_ERROR", format!("TLS handshake failed: {other}")),
    }
}
