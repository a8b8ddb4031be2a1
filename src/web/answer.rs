//! Answers the proxy makes itself: the refusal of SPEC section 4, and plain error statuses.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::policy::Refusal;
use crate::web::body::{full, Body};

/// The refusal answer: status, `X-Wxsandbox-Errno/Errmsg/Rule`, JSON body; CORS headers when the
/// request had an `Origin`, so a page can read why.
pub fn refusal(
    refusal: &Refusal,
    appid: Option<&str>,
    origin: Option<&HeaderValue>,
) -> Response<Body> {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
    // A web-view navigation is read by a person: a page, not JSON.
    let html = refusal.rule == crate::policy::Rule::BusinessDomain;
    let mut builder = Response::builder()
        .status(status)
        .header(
            CONTENT_TYPE,
            if html {
                "text/html; charset=utf-8"
            } else {
                "application/json"
            },
        )
        .header("x-wxsandbox-errno", refusal.errno.to_string())
        .header("x-wxsandbox-rule", refusal.rule.as_str());
    if let Ok(errmsg) = HeaderValue::from_str(&refusal.errmsg_header()) {
        builder = builder.header("x-wxsandbox-errmsg", errmsg);
    }
    if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        builder = builder.header("proxy-authenticate", "Basic realm=\"wxsandbox appid\"");
    }
    if let Some(origin) = origin {
        builder = builder
            .header("access-control-allow-origin", origin.clone())
            .header(
                "access-control-expose-headers",
                "X-Wxsandbox-Errno, X-Wxsandbox-Errmsg, X-Wxsandbox-Rule",
            )
            .header("vary", "Origin");
    }
    let body = if html {
        webview_page(refusal)
    } else {
        refusal.refusal_json(appid)
    };
    builder
        .body(full(body))
        .unwrap_or_else(|_| status_only(StatusCode::INTERNAL_SERVER_ERROR, "bad refusal"))
}

/// The page a web-view shows for a navigation outside the business domains, in the platform's
/// words (无法打开该页面 / 不支持打开非业务域名), with what to add in the admin console.
fn webview_page(refusal: &Refusal) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    format!(
        "<!doctype html><html lang=\"zh\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>无法打开该页面</title></head>\
<body style=\"font-family:sans-serif;text-align:center;padding:3em 1em\"><h1>无法打开该页面</h1>\
<p>不支持打开非业务域名 {url}<br>请重新配置</p><p>Can't open this page: {url} is not a business domain of this mini program.</p>\
<p style=\"color:#666\">{detail}</p><p style=\"color:#999\">wxsandbox · {errmsg} · rule {rule}</p></body></html>\n",
        url = esc(&refusal.url),
        detail = esc(&refusal.detail),
        errmsg = esc(&refusal.errmsg),
        rule = refusal.rule.as_str(),
    )
}

/// A plain-text answer for what is not a sandbox verdict (a malformed request, a bad CONNECT).
pub fn status_only(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
