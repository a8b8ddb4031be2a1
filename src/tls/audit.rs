//! The upstream TLS client and its audit (SPEC section 5): the chain must be trusted (system
//! roots plus `upstream.trust`), the name and dates right, TLS 1.2 or newer with a forward-secret
//! cipher. Failures are named as Chromium names them (`-202 ERR_CERT_AUTHORITY_INVALID`), with
//! what to fix.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::checks::{certificate_checks, webpki_checks, Check};
pub(crate) use super::provider;

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

/// The TLS record type of an alert.
const CONTENT_TYPE_ALERT: u8 = 0x15;

/// The server's side of a connection during the TLS handshake, noting the type of the first
/// record the server sent: a fatal alert as its very first record is its answer to the
/// ClientHello (what BoringSSL calls `HANDSHAKE_FAILURE_ON_CLIENT_HELLO`, and Chromium maps to
/// -113). Reads and writes pass through; after the first byte it is one branch a read.
#[derive(Debug)]
pub struct FirstRecord<S> {
    inner: S,
    first: Option<u8>,
}

impl<S> FirstRecord<S> {
    pub fn new(inner: S) -> Self {
        FirstRecord { inner, first: None }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The server's first record was an alert: it answered the ClientHello with it.
    pub fn alert_first(&self) -> bool {
        self.first == Some(CONTENT_TYPE_ALERT)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstRecord<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.first.is_none() {
            this.first = buf.filled().get(before).copied();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstRecord<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Why a handshake found nothing in common with the server: both are Chromium's -113.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mismatch {
    /// No common TLS version (the `tls-version` check).
    Version,
    /// No common cipher suite, key exchange or signature scheme (the `cipher` check).
    Cipher,
}

/// The fix for a server with no forward-secret cipher a TLS 1.2+ client accepts.
const CIPHER_FIX: &str = "enable ECDHE cipher suites (TLS 1.3, or for TLS 1.2 e.g. \
    ECDHE-ECDSA-AES128-GCM-SHA256 / ECDHE-RSA-AES128-GCM-SHA256) on the server; \
    RSA key exchange (AES128-SHA256 and the like) is not forward-secret and is refused";
/// The fix for a server that speaks only old TLS versions.
const VERSION_FIX: &str = "enable TLS 1.2 or newer on the server (TLS 1.0 and 1.1 are refused)";

/// A version or cipher mismatch in `tls`, and what was seen. `alert_first`: the server's first
/// record was an alert ([`FirstRecord::alert_first`]).
fn mismatch(tls: &rustls::Error, alert_first: bool) -> Option<(Mismatch, String)> {
    use rustls::AlertDescription as A;
    use rustls::PeerIncompatible as P;
    match tls {
        rustls::Error::AlertReceived(A::ProtocolVersion) => Some((
            Mismatch::Version,
            "the server answered with a protocol_version alert: it speaks no TLS version \
             from 1.2 up"
                .to_owned(),
        )),
        rustls::Error::AlertReceived(A::HandshakeFailure) if alert_first => Some((
            Mismatch::Cipher,
            "the server answered the ClientHello with a handshake_failure alert: it offers no \
             forward-secret cipher that TLS 1.2+ clients accept"
                .to_owned(),
        )),
        rustls::Error::AlertReceived(A::InsufficientSecurity) => Some((
            Mismatch::Cipher,
            "the server answered with an insufficient_security alert: it accepts none of the \
             forward-secret ciphers TLS 1.2+ clients offer"
                .to_owned(),
        )),
        rustls::Error::PeerIncompatible(
            p @ (P::ServerDoesNotSupportTls12Or13
            | P::ServerTlsVersionIsDisabledByOurConfig
            | P::SupportedVersionsExtensionRequired
            | P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled),
        ) => Some((
            Mismatch::Version,
            format!("no common TLS version ({p:?}): the server speaks none from 1.2 up"),
        )),
        rustls::Error::PeerIncompatible(
            p @ (P::NoCipherSuitesInCommon
            | P::NoKxGroupsInCommon
            | P::NoSignatureSchemesInCommon
            | P::NoEcPointFormatsInCommon),
        ) => Some((
            Mismatch::Cipher,
            format!("no common cipher, key exchange or signature scheme ({p:?})"),
        )),
        rustls::Error::PeerIncompatible(p) => Some((
            Mismatch::Cipher,
            format!("the server's handshake parameters don't fit a TLS 1.2+ client ({p:?})"),
        )),
        _ => None,
    }
}

/// A failed TLS handshake as a line of the audit (`check-cert`): `tls-version` for no common
/// version, `cipher` for no common (forward-secret) cipher, `handshake` for the rest, with
/// Chromium's error as [`classify_handshake_error`] gives it. `alert_first`: the server's first
/// record was an alert ([`FirstRecord::alert_first`]).
pub fn handshake_check(err: &std::io::Error, alert_first: bool) -> Check {
    let tls = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    if let Some((kind, seen)) = tls.and_then(|t| mismatch(t, alert_first)) {
        let (name, fix) = match kind {
            Mismatch::Version => ("tls-version", VERSION_FIX),
            Mismatch::Cipher => ("cipher", CIPHER_FIX),
        };
        return Check::fail(name, seen, fix, -113, "ERR_SSL_VERSION_OR_CIPHER_MISMATCH");
    }
    let net = classify_handshake_error(err, alert_first);
    Check::fail(
        "handshake",
        net.detail,
        "check that this port serves TLS 1.2 or newer, and the server's TLS error log",
        net.code,
        net.name,
    )
}

/// Map a failed TLS handshake (the io::Error tokio-rustls returns) to the Chromium error.
/// `alert_first`: the server's first record was an alert ([`FirstRecord::alert_first`]), so a
/// handshake_failure alert is its answer to the ClientHello: no common cipher, -113 as Chromium
/// maps it (a handshake_failure later in the handshake stays -107).
pub fn classify_handshake_error(err: &std::io::Error, alert_first: bool) -> NetError {
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
        other if mismatch(other, alert_first).is_some() => handshake_check(err, alert_first)
            .net_error()
            .unwrap_or_else(|| net(-113, "ERR_SSL_VERSION_OR_CIPHER_MISMATCH", other.to_string())),
        other => net(-107, "ERR_SSL_PROTOCOL_ERROR", format!("TLS handshake failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn io_err(tls: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, tls)
    }

    #[test]
    fn a_handshake_failure_alert_is_a_cipher_mismatch_only_in_answer_to_the_client_hello() {
        let alert = io_err(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        let first = classify_handshake_error(&alert, true);
        assert_eq!(
            (first.code, first.name),
            (-113, "ERR_SSL_VERSION_OR_CIPHER_MISMATCH")
        );
        assert!(
            first.detail.starts_with("cipher check failed") && first.detail.contains("ECDHE"),
            "{}",
            first.detail
        );
        let check = handshake_check(&alert, true);
        assert_eq!(
            (check.name, check.error),
            ("cipher", Some((-113, "ERR_SSL_VERSION_OR_CIPHER_MISMATCH")))
        );
        // Later in the handshake (after a ServerHello) Chromium keeps -107.
        let later = classify_handshake_error(&alert, false);
        assert_eq!((later.code, later.name), (-107, "ERR_SSL_PROTOCOL_ERROR"));
        assert_eq!(handshake_check(&alert, false).name, "handshake");
    }

    #[test]
    fn version_and_cipher_mismatches_have_their_own_checks() {
        let cases = [
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion),
                "tls-version",
            ),
            (
                rustls::Error::PeerIncompatible(
                    rustls::PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig,
                ),
                "tls-version",
            ),
            (
                rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoKxGroupsInCommon),
                "cipher",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::InsufficientSecurity),
                "cipher",
            ),
        ];
        for (tls, name) in cases {
            let err = io_err(tls);
            for alert_first in [false, true] {
                let check = handshake_check(&err, alert_first);
                assert_eq!(
                    (check.name, check.error),
                    (name, Some((-113, "ERR_SSL_VERSION_OR_CIPHER_MISMATCH"))),
                    "{err}"
                );
                let net = classify_handshake_error(&err, alert_first);
                assert_eq!(net.code, -113);
                assert!(net.detail.starts_with(name), "{}", net.detail);
            }
        }
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        let check = handshake_check(&eof, false);
        assert_eq!(
            (check.name, check.error),
            ("handshake", Some((-324, "ERR_EMPTY_RESPONSE")))
        );
    }

    #[tokio::test]
    async fn first_record_notes_what_the_server_sent_first() {
        for (sent, alert_first) in [
            (&[0x15u8, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28][..], true),
            (&[0x16u8, 0x03, 0x03, 0x00, 0x01, 0x02, 0x15][..], false),
        ] {
            let (client, mut server) = tokio::io::duplex(64);
            let mut watched = FirstRecord::new(client);
            assert!(!watched.alert_first());
            server.write_all(sent).await.unwrap();
            drop(server);
            let mut got = Vec::new();
            watched.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, sent);
            assert_eq!(watched.alert_first(), alert_first, "{sent:02x?}");
        }
    }
}
