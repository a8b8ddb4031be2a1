//! `http://wxsandbox.cert/` through the proxy: the CA for phones, with iOS and Android steps.
//!
//! | path | what |
//! |---|---|
//! | `/` | the page |
//! | `/ca.pem` | PEM, `application/x-pem-file`, as a download |
//! | `/ca.crt` | DER, `application/x-x509-ca-cert`, as a download (Android's installer) |
//! | `/ca-ios.pem` | PEM, `application/x-x509-ca-cert`, `inline` (what mitmproxy's mitm.it gives iOS: Safari hands it to the profile installer) |
//! | `/ca.mobileconfig` | an Apple configuration profile (`application/x-apple-aspen-config`) with one `com.apple.security.root` payload: the CA |

use base64::Engine;
use http::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::tls::ca::CertificateAuthority;
use crate::web::answer;
use crate::web::body::{full, Body};

/// The magic host name that the proxy answers itself.
pub const CERT_HOST: &str = "wxsandbox.cert";

pub(crate) fn serve<B>(req: &Request<B>, ca: &CertificateAuthority) -> Response<Body> {
    match req.uri().path() {
        "/" | "/index.html" => html(page(ca)),
        "/ca.pem" => ca_pem(ca),
        "/ca.crt" => ca_der(ca),
        "/ca-ios.pem" => ca_ios(ca),
        "/ca.mobileconfig" => ca_mobileconfig(ca),
        _ => answer::status_only(
            StatusCode::NOT_FOUND,
            "not found: try http://wxsandbox.cert/",
        ),
    }
}

/// The CA as PEM (`application/x-pem-file`, which iOS Safari offers to install as a profile).
pub fn ca_pem(ca: &CertificateAuthority) -> Response<Body> {
    download(
        ca.cert_pem().as_bytes().to_vec(),
        "application/x-pem-file",
        "wxsandbox-ca.pem",
    )
}

/// The CA as DER (`application/x-x509-ca-cert`, what Android's installer expects).
pub fn ca_der(ca: &CertificateAuthority) -> Response<Body> {
    download(
        ca.cert_der().to_vec(),
        "application/x-x509-ca-cert",
        "wxsandbox-ca.crt",
    )
}

/// The CA as PEM for iOS: `application/x-x509-ca-cert`, `Content-Disposition: inline`, as
/// mitmproxy's mitm.it serves it, so Safari offers to install it as a profile.
pub fn ca_ios(ca: &CertificateAuthority) -> Response<Body> {
    with_disposition(
        ca.cert_pem().as_bytes().to_vec(),
        "application/x-x509-ca-cert",
        "inline",
        "wxsandbox-ca.pem",
    )
}

/// The CA in an Apple configuration profile (`application/x-apple-aspen-config`).
pub fn ca_mobileconfig(ca: &CertificateAuthority) -> Response<Body> {
    with_disposition(
        mobileconfig(ca.cert_der(), &ca.subject()).into_bytes(),
        "application/x-apple-aspen-config",
        "attachment",
        "wxsandbox-ca.mobileconfig",
    )
}

fn download(bytes: Vec<u8>, content_type: &'static str, name: &str) -> Response<Body> {
    with_disposition(bytes, content_type, "attachment", name)
}

fn with_disposition(
    bytes: Vec<u8>,
    content_type: &'static str,
    disposition: &str,
    name: &str,
) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("{disposition}; filename=\"{name}\"")) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    response
}

/// A UUID (RFC 9562 version 8, custom) from 16 bytes of a digest: stable for one CA.
fn uuid_from(bytes: &[u8]) -> String {
    let mut b = [0u8; 16];
    for (slot, byte) in b.iter_mut().zip(bytes) {
        *slot = *byte;
    }
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The configuration profile: one `com.apple.security.root` payload carrying the CA's DER
/// (base64 in `<data>`). Its UUIDs and identifiers come from the CA's SHA-256, so serving it
/// again gives the same profile, and a new CA a new one.
pub fn mobileconfig(der: &[u8], subject: &str) -> String {
    let digest = Sha256::digest(der);
    let payload_uuid = uuid_from(&digest[..16]);
    let profile_uuid = uuid_from(&digest[16..]);
    let short: String = digest[..8].iter().map(|x| format!("{x:02x}")).collect();
    let data = base64::engine::general_purpose::STANDARD.encode(der);
    let subject = html_escape(subject);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>PayloadContent</key>
	<array>
		<dict>
			<key>PayloadCertificateFileName</key>
			<string>wxsandbox-ca.cer</string>
			<key>PayloadContent</key>
			<data>{data}</data>
			<key>PayloadDescription</key>
			<string>Adds the wxsandbox CA as a trusted root: {subject}</string>
			<key>PayloadDisplayName</key>
			<string>wxsandbox CA</string>
			<key>PayloadIdentifier</key>
			<string>cert.wxsandbox.ca.{short}</string>
			<key>PayloadType</key>
			<string>com.apple.security.root</string>
			<key>PayloadUUID</key>
			<string>{payload_uuid}</string>
			<key>PayloadVersion</key>
			<integer>1</integer>
		</dict>
	</array>
	<key>PayloadDescription</key>
	<string>The CA of wxsandbox, the WeChat mini program network sandbox on your computer. After installing, enable full trust in Settings &gt; General &gt; About &gt; Certificate Trust Settings.</string>
	<key>PayloadDisplayName</key>
	<string>wxsandbox CA</string>
	<key>PayloadIdentifier</key>
	<string>cert.wxsandbox.profile.{short}</string>
	<key>PayloadRemovalDisallowed</key>
	<false/>
	<key>PayloadType</key>
	<string>Configuration</string>
	<key>PayloadUUID</key>
	<string>{profile_uuid}</string>
	<key>PayloadVersion</key>
	<integer>1</integer>
</dict>
</plist>
"#
    )
}

fn html(text: String) -> Response<Body> {
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// A small-screen page: links first, then the steps. No scripts, no external assets.
fn page(ca: &CertificateAuthority) -> String {
    let fingerprint = ca.fingerprint_sha256();
    let subject = html_escape(&ca.subject());
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>wxsandbox CA</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;margin:1em;max-width:40em}}a.b{{display:block;padding:.8em;margin:.5em 0;background:#07c160;color:#fff;text-align:center;border-radius:6px;text-decoration:none}}code{{word-break:break-all}}</style>
</head><body>
<h1>wxsandbox CA</h1>
<p>Install this CA so the sandbox can see your mini program's HTTPS and WSS calls.</p>
<a class="b" href="/ca.mobileconfig">iOS: download profile (.mobileconfig)</a>
<a class="b" href="/ca-ios.pem">iOS: the certificate alone (ca.pem)</a>
<a class="b" href="/ca.crt">Android: download certificate (ca.crt)</a>
<p>CA: {subject}<br>SHA-256: <code>{fingerprint}</code></p>
<h2>iOS</h2>
<ol>
<li>Open this page in <b>Safari</b> and tap <i>iOS: download profile</i>; allow the download.
(If a profile is refused, <i>the certificate alone</i> gives the same CA as a plain certificate.)</li>
<li>Settings &gt; General &gt; VPN &amp; Device Management &gt; the wxsandbox profile &gt; Install.</li>
<li>Settings &gt; General &gt; About &gt; Certificate Trust Settings &gt; enable <b>full trust</b> for the wxsandbox CA.
Without this step iOS installs the profile but does not trust it for TLS.</li>
<li>Wi-Fi &gt; (i) &gt; Configure Proxy &gt; Manual: server = this computer, port = the proxy port;
Authentication on, user name = your appid (any password).</li>
</ol>
<h2>Android</h2>
<ol>
<li>Tap <i>Android: download certificate</i>.</li>
<li>Settings &gt; Security &gt; Encryption &amp; credentials &gt; Install a certificate &gt; CA certificate &gt; pick wxsandbox-ca.crt.</li>
<li>Wi-Fi &gt; your network &gt; Proxy: Manual, host = this computer, port = the proxy port.
Android can't authenticate to a Wi-Fi proxy: list the phone's address under <code>clients:</code> of your app in the config.</li>
<li>Apps targeting Android 7+ trust user CAs only when they opt in; recent WeChat versions may need the CA in the system store.</li>
</ol>
</body></html>
"#
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
