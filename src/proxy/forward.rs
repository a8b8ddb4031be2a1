//! One call: which app and API, the verdict, then the request upstream and the answer back.
//! Used for plain-HTTP proxy requests (absolute-form) and for every request inside an
//! intercepted TLS tunnel (origin-form over HTTP/1.1, or HTTP/2).

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{HeaderValue, EXPECT, ORIGIN, REFERER};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tracing::{info, warn};

use crate::config::AppConfig;
use crate::policy::{self, Api, ApiHints, AppHints, Call, Refusal, Verdict};
use crate::proxy::answer;
use crate::proxy::body::{self, Body};
use crate::proxy::headers::{self, get_str};
use crate::proxy::upstream::classify_client_error;
use crate::proxy::{certpage, connect, ws, ConnInfo};

/// Header: the exact URL string given to `wx.request`, judged instead of the request's URL.
pub const URL_HEADER: &str = "x-wxsandbox-url";
/// Header: names the app.
pub const APPID_HEADER: &str = "x-wxsandbox-appid";
/// Header: names the API (`request`, `uploadFile`, `downloadFile`).
pub const API_HEADER: &str = "x-wxsandbox-api";

/// The service function of every client-facing HTTP connection.
pub(crate) async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Result<Response<Body>, Infallible> {
    if conn.tunnel.is_none() && req.method() == Method::CONNECT {
        return Ok(connect::handle(req, conn));
    }
    Ok(forward(req, &conn).await)
}

/// Where a request goes: scheme, host, port, path; and whether the port was written.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    tls: bool,
    /// As in the URL: IPv6 literals keep their brackets.
    pub host: String,
    pub port: u16,
    explicit_port: bool,
    path_and_query: String,
}

impl Target {
    fn of(req: &Request<Incoming>, conn: &ConnInfo) -> Result<Target, Response<Body>> {
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        if let Some(tunnel) = &conn.tunnel {
            return Ok(Target {
                tls: true,
                host: tunnel.host.clone(),
                port: tunnel.port,
                explicit_port: tunnel.port != 443,
                path_and_query,
            });
        }
        let uri = req.uri();
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(answer::status_only(
                StatusCode::BAD_REQUEST,
                "wxsandbox is a proxy: send absolute-form requests (curl -x), or open http://wxsandbox.cert/ through it",
            ));
        };
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(answer::status_only(
                StatusCode::BAD_REQUEST,
                "only http:// URLs are forwarded in absolute form; use CONNECT for https",
            ));
        }
        Ok(Target {
            tls: false,
            host: authority.host().to_owned(),
            port: authority.port_u16().unwrap_or(80),
            explicit_port: authority.port().is_some(),
            path_and_query,
        })
    }

    /// The URL as the mini program wrote it (as far as the proxy can tell).
    pub fn url(&self, websocket: bool) -> String {
        let scheme = match (self.tls, websocket) {
            (true, false) => "https",
            (true, true) => "wss",
            (false, false) => "http",
            (false, true) => "ws",
        };
        let mut url = format!("{scheme}://{}", self.host);
        if self.explicit_port {
            url.push_str(&format!(":{}", self.port));
        }
        url.push_str(&self.path_and_query);
        url
    }

    /// The absolute URI the upstream client dials.
    fn upstream_uri(&self) -> Result<Uri, http::Error> {
        let scheme = if self.tls { "https" } else { "http" };
        Ok(Uri::try_from(format!(
            "{scheme}://{}:{}{}",
            self.host, self.port, self.path_and_query
        ))?)
    }
}

/// What was decided about a call before it goes upstream.
pub(crate) struct Admitted<'a> {
    pub app: &'a AppConfig,
    pub api: Api,
    pub url: String,
    pub origin: Option<HeaderValue>,
}

async fn forward(mut req: Request<Incoming>, conn: &ConnInfo) -> Response<Body> {
    let target = match Target::of(&req, conn) {
        Ok(t) => t,
        Err(response) => return response,
    };
    if target.host.eq_ignore_ascii_case(certpage::CERT_HOST) {
        return certpage::serve(&req, &conn.shared);
    }
    let websocket = headers::is_websocket_upgrade(req.headers());
    let admitted = match admit(&req, conn, &target, websocket) {
        Ok(a) => a,
        Err(response) => return response,
    };
    let Ok(uri) = target.upstream_uri() else {
        return answer::status_only(
            StatusCode::BAD_REQUEST,
            "the request URL can't be forwarded",
        );
    };
    prepare_upstream_request(&mut req, admitted.app, uri, websocket);
    let strict = !conn.shared.skip_domain_check();
    if websocket {
        return ws::relay(req, conn, &admitted, strict).await;
    }
    match conn
        .shared
        .upstream
        .client(strict, false)
        .request(req.map(body::boxed))
        .await
    {
        Ok(response) => {
            let mut response = response.map(body::boxed);
            headers::strip_hop_by_hop(response.headers_mut(), false);
            response
        }
        Err(e) => {
            let failure = classify_client_error(&e);
            let refusal = Refusal::net(admitted.api, &admitted.url, failure.rule, &failure.net);
            warn!(app = %admitted.app.appid, api = admitted.api.as_str(), url = %admitted.url,
                rule = refusal.rule.as_str(), error = %failure, "upstream failed");
            answer::refusal(
                &refusal,
                Some(&admitted.app.appid),
                admitted.origin.as_ref(),
            )
        }
    }
}

/// Identify the app and API and judge the call (rules 1-4); a refusal is the answer.
pub(crate) fn admit<'c>(
    req: &Request<Incoming>,
    conn: &'c ConnInfo,
    target: &Target,
    websocket: bool,
) -> Result<Admitted<'c>, Response<Body>> {
    let h = req.headers();
    let origin = h.get(ORIGIN).cloned();
    let url = get_str(h, URL_HEADER).map_or_else(|| target.url(websocket), str::to_owned);
    let tunnel = conn.tunnel.as_ref();
    let hints = AppHints {
        proxy_authorization: get_str(h, "proxy-authorization")
            .or_else(|| tunnel.and_then(|t| t.proxy_authorization.as_deref())),
        appid_header: get_str(h, APPID_HEADER)
            .or_else(|| tunnel.and_then(|t| t.appid_header.as_deref())),
        referer: get_str(h, REFERER.as_str()),
        client: conn.client.ip(),
    };
    let shared = &conn.shared;
    let Some(app) = policy::identify_app(&shared.config, &hints) else {
        let api = if websocket {
            Api::ConnectSocket
        } else {
            Api::Request
        };
        let refusal = policy::unknown_app(api, &url);
        info!(client = %conn.client.ip(), api = api.as_str(), url = %url, rule = refusal.rule.as_str(), "refused");
        return Err(answer::refusal(&refusal, None, origin.as_ref()));
    };
    let api_hints = ApiHints {
        is_websocket_upgrade: websocket,
        api_header: get_str(h, API_HEADER),
        method: req.method().as_str(),
        content_type: get_str(h, "content-type"),
    };
    let api = policy::detect_api(app, &api_hints, &url);
    let call = Call {
        client: conn.client.ip(),
        api,
        url: &url,
        method: req.method().as_str(),
    };
    if let Verdict::Refuse(refusal) = policy::judge(app, &call, shared.switches()) {
        info!(app = %app.appid, client = %conn.client.ip(), api = api.as_str(), url = %url,
            rule = refusal.rule.as_str(), "refused");
        return Err(answer::refusal(&refusal, Some(&app.appid), origin.as_ref()));
    }
    Ok(Admitted {
        app,
        api,
        url,
        origin,
    })
}

/// Rewrite an admitted request for the upstream: absolute URI, HTTP/1.1 semantics (ALPN decides
/// h2 upstream), no hop-by-hop or sandbox headers, the platform's Referer.
fn prepare_upstream_request(
    req: &mut Request<Incoming>,
    app: &AppConfig,
    uri: Uri,
    websocket: bool,
) {
    let from_h2 = req.version() == Version::HTTP_2;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let h = req.headers_mut();
    headers::strip_hop_by_hop(h, websocket);
    headers::strip_sandbox_headers(h);
    if from_h2 {
        headers::join_cookies(h);
    }
    // hyper answers the client's `Expect: 100-continue` itself when the body is first read.
    h.remove(EXPECT);
    if let Ok(referer) = HeaderValue::from_str(&policy::referer(app)) {
        h.insert(REFERER, referer);
    }
}
