//! `wxsandbox check-cert URL`: connect to a server, run the same audit as the proxy (SPEC
//! section 5), and print one line a check, the negotiated TLS, and the chain as served.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;

use crate::tls::audit::{handshake_check, provider, AcceptAny, FirstRecord, UpstreamTls};
use crate::tls::checks::{describe, CertInfo, Check};

/// How long the connection and handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
pub struct CheckCertOptions {
    pub url: String,
    pub trust: Vec<PathBuf>,
    /// HOST=ADDR pairs: connect to ADDR for HOST.
    pub resolve: Vec<(String, SocketAddr)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckCertError {
    #[error("{0}")]
    Usage(String),
    #[error("can't connect to {addr}: {message}")]
    Connect { addr: String, message: String },
}

/// What the audit found.
#[derive(Debug, Clone, Serialize)]
pub struct CertReport {
    pub url: String,
    pub address: String,
    pub tls_version: Option<String>,
    pub cipher: Option<String>,
    pub alpn: Option<String>,
    pub checks: Vec<Check>,
    pub chain: Vec<CertInfo>,
}

impl CertReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    pub fn render_text(&self) -> String {
        let mut out = format!("{} ({})\n", self.url, self.address);
        out.push_str(&format!(
            "TLS: {}, cipher {}, ALPN {}\n\n",
            self.tls_version.as_deref().unwrap_or("none"),
            self.cipher.as_deref().unwrap_or("none"),
            self.alpn.as_deref().unwrap_or("none")
        ));
        for c in &self.checks {
            if c.passed {
                out.push_str(&format!("PASS {:<12} {}\n", c.name, c.seen));
            } else {
                let (code, name) = c.error.unwrap_or((0, ""));
                out.push_str(&format!(
                    "FAIL {:<12} {} [{code} {name}]\n     fix: {}\n",
                    c.name, c.seen, c.fix
                ));
            }
        }
        out.push_str("\nchain as served:\n");
        for (i, cert) in self.chain.iter().enumerate() {
            out.push_str(&format!(
                "  {i}: {}\n     issuer {}\n     key {}, signature {}, {} to {}\n",
                cert.subject,
                cert.issuer,
                cert.key,
                cert.signature,
                cert.not_before,
                cert.not_after
            ));
        }
        out.push_str(if self.passed() {
            "\nresult: pass (iOS, Android and desktop WeChat should accept this server)\n"
        } else {
            "\nresult: FAIL (mini program calls to this server fail with the error above)\n"
        });
        out
    }

    pub fn render_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["passed"] = serde_json::Value::Bool(self.passed());
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

/// Records what the server sent; accepts it so the handshake finishes and the session can be read.
#[derive(Debug)]
struct Recording {
    any: AcceptAny,
    seen: Mutex<Option<(Vec<CertificateDer<'static>>, UnixTime)>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some((chain, now));
        self.any
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.any.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.any.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.any.supported_verify_schemes()
    }
}

/// Parse `HOST=ADDR` (ADDR = IP:PORT, or IP with the URL's port).
///
/// # Errors
/// Not of that form.
pub fn parse_resolve(
    text: &str,
    default_port: u16,
) -> Result<(String, SocketAddr), CheckCertError> {
    let bad = || CheckCertError::Usage(format!("--resolve {text}: expected HOST=IP:PORT"));
    let (host, addr) = text.split_once('=').ok_or_else(bad)?;
    let addr = addr
        .parse::<SocketAddr>()
        .or_else(|_| {
            addr.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, default_port))
        })
        .map_err(|_| bad())?;
    Ok((host.to_ascii_lowercase(), addr))
}

/// `https://host[:port]/...` → (host, port).
///
/// # Errors
/// Not an https URL with a host.
pub fn url_host_port(url: &str) -> Result<(String, u16), CheckCertError> {
    let parsed = crate::policy::parse_url(url)
        .filter(|u| {
            u.scheme == crate::config::Scheme::Https || u.scheme == crate::config::Scheme::Wss
        })
        .ok_or_else(|| CheckCertError::Usage(format!("{url}: expected https://host[:port]/")))?;
    let host = match &parsed.host {
        crate::policy::Host::V6(v6) => v6.to_string(),
        other => other.to_string(),
    };
    Ok((host, parsed.effective_port()))
}

/// Connect and audit.
///
/// # Errors
/// A bad URL or trust file, or no TCP connection.
pub async fn check_cert(opts: &CheckCertOptions) -> Result<CertReport, CheckCertError> {
    let (host, port) = url_host_port(&opts.url)?;
    let upstream =
        UpstreamTls::new(&opts.trust).map_err(|e| CheckCertError::Usage(e.to_string()))?;
    let addr = match opts.resolve.iter().find(|(h, _)| h == &host) {
        Some((_, addr)) => addr.to_string(),
        None => format!("{host}:{port}"),
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr))
        .await
        .map_err(|_| CheckCertError::Connect {
            addr: addr.clone(),
            message: "timed out".to_owned(),
        })?
        .map_err(|e| CheckCertError::Connect {
            addr: addr.clone(),
            message: e.to_string(),
        })?;
    let recording = Arc::new(Recording {
        any: AcceptAny(provider()),
        seen: Mutex::new(None),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CheckCertError::Usage(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recording.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let server_name = ServerName::try_from(host.clone())
        .map_err(|e| CheckCertError::Usage(format!("{host}: {e}")))?;
    let handshake = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name.clone(), FirstRecord::new(tcp))
            .into_fallible(),
    )
    .await
    .map_err(|_| CheckCertError::Connect {
        addr: addr.clone(),
        message: "TLS handshake timed out".to_owned(),
    })?;
    let mut report = CertReport {
        url: opts.url.clone(),
        address: addr,
        tls_version: None,
        cipher: None,
        alpn: None,
        checks: Vec::new(),
        chain: Vec::new(),
    };
    match handshake {
        Ok(stream) => {
            let conn = stream.get_ref().1;
            report.tls_version = conn.protocol_version().map(|v| format!("{v:?}"));
            report.cipher = conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()));
            report.alpn = conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            report.checks.push(Check::pass(
                "tls-version",
                report.tls_version.clone().unwrap_or_default(),
            ));
            // The client offers only forward-secret suites (TLS 1.3, ECDHE for TLS 1.2).
            report.checks.push(Check::pass(
                "cipher",
                report.cipher.clone().unwrap_or_default(),
            ));
        }
        Err((e, watched)) => {
            report
                .checks
                .push(handshake_check(&e, watched.alert_first()));
        }
    }
    let seen = recording
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some((chain, now)) = seen {
        report.chain = chain.iter().filter_map(|c| describe(c)).collect();
        if let Some((leaf, rest)) = chain.split_first() {
            report
                .checks
                .extend(upstream.auditor().audit(leaf, rest, &server_name, now));
        }
    }
    Ok(report)
}
