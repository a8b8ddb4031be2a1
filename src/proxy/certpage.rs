//! `http://wxsandbox.cert/` through the proxy: the CA for phones, with iOS and Android steps.

use http::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{Request, Response, StatusCode};

use crate::proxy::answer;
use crate::proxy::body::{full, Body};
use crate::state::Shared;

/// The magic host name that the proxy answers itself.
pub const CERT_HOST: &str = "wxsandbox.cert";

pub(crate) fn serve<B>(req: &Request<B>, shared: &Shared) -> Response<Body> {
    match req.uri().path() {
        "/" | "/index.html" => html(page(shared)),
        "/ca.pem" => ca_pem(shared),
        "/ca.crt" => ca_der(shared),
        _ => answer::status_only(
            StatusCode::NOT_FOUND,
            "not found: try http://wxsandbox.cert/",
        ),
    }
}

/// The CA as PEM (`application/x-pem-file`, which iOS Safari offers to install as a profile).
pub fn ca_pem(shared: &Shared) -> Response<Body> {
    download(
        shared.ca.cert_pem().as_bytes().to_vec(),
        "application/x-pem-file",
        "wxsandbox-ca.pem",
    )
}

/// The CA as DER (`application/x-x509-ca-cert`, what Android's installer expects).
pub fn ca_der(shared: &Shared) -> Response<Body> {
    download(
        shared.ca.cert_der().to_vec(),
        "application/x-x509-ca-cert",
        "wxsandbox-ca.crt",
    )
}

fn download(bytes: Vec<u8>, content_type: &'static str, name: &str) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    response
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
fn page(shared: &Shared) -> String {
    let fingerprint = shared.ca.fingerprint_sha256();
    let subject = html_escape(&shared.ca.subject());
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>wxsandbox CA</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;margin:1em;max-width:40em}}a.b{{display:block;padding:.8em;margin:.5em 0;background:#07c160;color:#fff;text-align:center;border-radius:6px;text-decoration:none}}code{{word-break:break-all}}</style>
</head><body>
<h1>wxsandbox CA</h1>
<p>Install this CA so the sandbox can see your mini program's HTTPS and WSS calls.</p>
<a class="b" href="/ca.pem">iOS: download profile (ca.pem)</a>
<a class="b" href="/ca.crt">Android: download certificate (ca.crt)</a>
<p>CA: {subject}<br>SHA-256: <code>{fingerprint}</code></p>
<h2>iOS</h2>
<ol>
<li>Open this page in <b>Safari</b> and tap <i>iOS: download profile</i>; allow the download.</li>
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
