//! The checks of the upstream TLS audit (SPEC section 5), as pure functions over the certificates
//! a server sent, so the proxy's verifier and `check-cert` run the same code. As strict as iOS
//! App Transport Security: each failure carries Chromium's name and what to fix.

use rustls::pki_types::CertificateDer;
use x509_parser::oid_registry::{
    OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ECDSA_WITH_SHA512,
    OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::policy::NetError;

const DAY: i64 = 86_400;
/// Apple: certificates issued on or after 2020-09-01 that chain to a public root live at most 398 days.
pub const APPLE_398_SINCE: i64 = 1_598_918_400;
/// iOS 13+: at most 825 days for every TLS server certificate.
pub const MAX_DAYS: i64 = 825;
/// Public roots, issued on or after [`APPLE_398_SINCE`].
pub const MAX_DAYS_PUBLIC: i64 = 398;

/// One line of the audit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// Short name: `chain`, `name`, `dates`, `self-signed`, `signature`, `key`, `validity`,
    /// `tls-version`, `cipher`, `handshake` (a handshake that failed otherwise).
    pub name: &'static str,
    pub passed: bool,
    /// What was seen.
    pub seen: String,
    /// How to fix it (empty when passed).
    pub fix: String,
    /// Chromium's code and name when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<(i32, &'static str)>,
}

impl Check {
    pub fn pass(name: &'static str, seen: String) -> Self {
        Check {
            name,
            passed: true,
            seen,
            fix: String::new(),
            error: None,
        }
    }
    pub fn fail(
        name: &'static str,
        seen: String,
        fix: &str,
        code: i32,
        chromium: &'static str,
    ) -> Self {
        Check {
            name,
            passed: false,
            seen,
            fix: fix.to_owned(),
            error: Some((code, chromium)),
        }
    }
    /// The failure as the platform reports it.
    pub fn net_error(&self) -> Option<NetError> {
        let (code, name) = self.error?;
        Some(NetError {
            code,
            name,
            detail: format!("{} check failed: {}; {}", self.name, self.seen, self.fix),
        })
    }
}

/// A certificate as `check-cert` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub key: String,
    pub signature: String,
    pub not_before: String,
    pub not_after: String,
}

pub fn describe(der: &[u8]) -> Option<CertInfo> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    Some(CertInfo {
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        key: key_description(&c),
        signature: signature_name(&c),
        not_before: c.validity().not_before.to_string(),
        not_after: c.validity().not_after.to_string(),
    })
}

/// The size in bits of an RSA modulus (big-endian, leading zeros ignored).
pub(crate) fn rsa_bits(modulus: &[u8]) -> usize {
    match modulus.iter().position(|&b| b != 0) {
        Some(i) => (modulus.len() - i) * 8 - modulus[i].leading_zeros() as usize,
        None => 0,
    }
}

fn key_description(c: &X509Certificate<'_>) -> String {
    match c.public_key().parsed() {
        Ok(PublicKey::RSA(k)) => format!("RSA {}", rsa_bits(k.modulus)),
        Ok(PublicKey::EC(p)) => format!("ECDSA {}", p.key_size()),
        Ok(_) => "other".to_owned(),
        Err(_) => "unparsable".to_owned(),
    }
}

fn strong_signature(c: &X509Certificate<'_>) -> bool {
    let a = &c.signature_algorithm.algorithm;
    [
        OID_PKCS1_SHA256WITHRSA,
        OID_PKCS1_SHA384WITHRSA,
        OID_PKCS1_SHA512WITHRSA,
        OID_SIG_ECDSA_WITH_SHA256,
        OID_SIG_ECDSA_WITH_SHA384,
        OID_SIG_ECDSA_WITH_SHA512,
        OID_PKCS1_RSASSAPSS,
        OID_SIG_ED25519,
    ]
    .iter()
    .any(|o| o == a)
}

fn signature_name(c: &X509Certificate<'_>) -> String {
    let a = &c.signature_algorithm.algorithm;
    let known = [
        (OID_PKCS1_SHA256WITHRSA, "sha256WithRSAEncryption"),
        (OID_PKCS1_SHA384WITHRSA, "sha384WithRSAEncryption"),
        (OID_PKCS1_SHA512WITHRSA, "sha512WithRSAEncryption"),
        (OID_SIG_ECDSA_WITH_SHA256, "ecdsa-with-SHA256"),
        (OID_SIG_ECDSA_WITH_SHA384, "ecdsa-with-SHA384"),
        (OID_SIG_ECDSA_WITH_SHA512, "ecdsa-with-SHA512"),
    ];
    known.iter().find(|(o, _)| o == a).map_or_else(
        || match a.to_id_string().as_str() {
            "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption".to_owned(),
            "1.2.840.113549.1.1.4" => "md5WithRSAEncryption".to_owned(),
            "1.2.840.10045.4.1" => "ecdsa-with-SHA1".to_owned(),
            other => other.to_owned(),
        },
        |(_, n)| (*n).to_owned(),
    )
}

/// The checks x509 parsing can make before the chain is verified: self-signed leaf, signature
/// hashes, leaf key size, validity length. `public_root`: the chain ends in a system root (the
/// 398-day rule), not in `upstream.trust`.
pub fn certificate_checks(
    end_entity: &[u8],
    intermediates: &[CertificateDer<'_>],
    public_root: bool,
) -> Vec<Check> {
    let mut out = Vec::new();
    let Ok((_, leaf)) = X509Certificate::from_der(end_entity) else {
        out.push(Check::fail(
            "parse",
            "the leaf certificate does not parse".to_owned(),
            "serve a valid X.509 certificate",
            -202,
            "ERR_CERT_AUTHORITY_INVALID",
        ));
        return out;
    };
    // Self-signed leaf.
    let self_signed = leaf.subject() == leaf.issuer() && leaf.verify_signature(None).is_ok();
    out.push(if self_signed {
        Check::fail(
            "self-signed",
            format!("the leaf {} is self-signed", leaf.subject()),
            "use a certificate issued by a public CA (a self-signed certificate fails on every phone)",
            -202,
            "ERR_CERT_AUTHORITY_INVALID",
        )
    } else {
        Check::pass("self-signed", format!("issued by {}", leaf.issuer()))
    });
    // SHA-2 signatures on every certificate the server sent (a root's own signature doesn't count).
    let mut weak = None;
    for der in std::iter::once(end_entity).chain(intermediates.iter().map(|c| c.as_ref())) {
        if let Ok((_, c)) = X509Certificate::from_der(der) {
            let is_root = c.subject() == c.issuer();
            if !is_root && !strong_signature(&c) {
                weak = Some(format!(
                    "{} is signed with {}",
                    c.subject(),
                    signature_name(&c)
                ));
                break;
            }
        }
    }
    out.push(match weak {
        Some(seen) => Check::fail(
            "signature",
            seen,
            "reissue the certificate (and intermediates) with SHA-256 or stronger",
            -208,
            "ERR_CERT_WEAK_SIGNATURE_ALGORITHM",
        ),
        None => Check::pass("signature", signature_name(&leaf)),
    });
    // Leaf key size.
    let key = key_description(&leaf);
    let weak_key = match leaf.public_key().parsed() {
        Ok(PublicKey::RSA(k)) => rsa_bits(k.modulus) < 2048,
        Ok(PublicKey::EC(p)) => p.key_size() < 256,
        _ => false,
    };
    out.push(if weak_key {
        Check::fail(
            "key",
            key,
            "use an RSA key of at least 2048 bits or an ECDSA key of at least 256 bits",
            -211,
            "ERR_CERT_WEAK_KEY",
        )
    } else {
        Check::pass("key", key)
    });
    // Validity length (Apple counts whole days, inclusive).
    let v = leaf.validity();
    let days = validity_days(v.not_before.timestamp(), v.not_after.timestamp());
    let limit = if public_root && v.not_before.timestamp() >= APPLE_398_SINCE {
        MAX_DAYS_PUBLIC
    } else {
        MAX_DAYS
    };
    out.push(if days > limit {
        Check::fail(
            "validity",
            format!("the leaf is valid for {days} days ({} to {})", v.not_before, v.not_after),
            &format!("iOS refuses server certificates valid for more than {limit} days: reissue with a shorter lifetime"),
            -213,
            "ERR_CERT_VALIDITY_TOO_LONG",
        )
    } else {
        Check::pass("validity", format!("{days} days (limit {limit})"))
    });
    out
}

/// Days from notBefore to notAfter, a partial day counting as one.
pub fn validity_days(not_before: i64, not_after: i64) -> i64 {
    (not_after - not_before + DAY - 1).div_euclid(DAY)
}

/// The outcome of webpki's verification as audit lines: chain, name, dates.
pub fn webpki_checks(
    result: &Result<(), rustls::Error>,
    incomplete_chain: bool,
    host: &str,
) -> Vec<Check> {
    use rustls::CertificateError as E;
    let chain_ok = Check::pass("chain", "trusted".to_owned());
    let name_ok = Check::pass("name", format!("the certificate names {host}"));
    let dates_ok = Check::pass("dates", "current".to_owned());
    match result {
        Ok(()) => vec![chain_ok, name_ok, dates_ok],
        Err(rustls::Error::InvalidCertificate(e)) => match e {
            E::NotValidForName | E::NotValidForNameContext { .. } => vec![
                chain_ok,
                Check::fail("name", format!("the certificate does not name {host}"), "add the host to the certificate's subjectAltName", -200, "ERR_CERT_COMMON_NAME_INVALID"),
                dates_ok,
            ],
            E::Expired | E::ExpiredContext { .. } => vec![
                chain_ok,
                name_ok,
                Check::fail("dates", "the certificate has expired".to_owned(), "renew the certificate", -201, "ERR_CERT_DATE_INVALID"),
            ],
            E::NotValidYet | E::NotValidYetContext { .. } => vec![
                chain_ok,
                name_ok,
                Check::fail("dates", "the certificate is not valid yet".to_owned(), "check the server's clock or the certificate's notBefore", -201, "ERR_CERT_DATE_INVALID"),
            ],
            E::UnknownIssuer if incomplete_chain => vec![Check::fail(
                "chain",
                "the server sent only the leaf, and its issuer is not a trusted root".to_owned(),
                "configure the full chain (leaf + intermediate) on the server",
                -202,
                "ERR_CERT_AUTHORITY_INVALID",
            )],
            E::UnknownIssuer => vec![Check::fail(
                "chain",
                "the chain does not lead to a trusted root".to_owned(),
                "use a certificate from a public CA (for a private test CA, add it to upstream.trust / --trust)",
                -202,
                "ERR_CERT_AUTHORITY_INVALID",
            )],
            E::UnsupportedSignatureAlgorithmContext { .. } | E::BadSignature => vec![Check::fail(
                "signature",
                format!("the chain's signature can't be verified ({e:?})"),
                "reissue with SHA-256 or stronger",
                -208,
                "ERR_CERT_WEAK_SIGNATURE_ALGORITHM",
            )],
            other => vec![Check::fail("chain", format!("{other:?}"), "fix the certificate chain", -202, "ERR_CERT_AUTHORITY_INVALID")],
        },
        Err(other) => vec![Check::fail("chain", other.to_string(), "fix the certificate chain", -202, "ERR_CERT_AUTHORITY_INVALID")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_days_at_the_limits() {
        assert_eq!(
            validity_days(0, 825 * DAY),
            825,
            "openssl -days 825 is 825 days"
        );
        assert_eq!(validity_days(0, 825 * DAY + 1), 826);
        assert_eq!(validity_days(0, 398 * DAY), 398);
        assert_eq!(validity_days(0, 5 * 365 * DAY), 1825);
    }
}
