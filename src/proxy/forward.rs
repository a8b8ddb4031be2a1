//! One call: which app and API, the verdict, then the request upstream and the answer back.
//! Used for plain-HTTP proxy requests (absolute-form) and for every request inside an
//! intercepted TLS tunnel (origin-form over HTTP/1.1, or HTTP/2).

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{HeaderValue, EXPECT, ORIGIN, REFERER};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tracing::{info, warn};

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::time::sleep_until;

use crate::config::AppConfig;
use crate::instances::{Instance, Phase};
use crate::policy::{self, Api, ApiHints, AppHints, Refusal, Verdict};
use crate::proxy::answer;
use crate::proxy::body::{self, Body};
use crate::proxy::call::{outcome_of, record, CallMeta, Counted, End, Tracked, Tracking};
use crate::proxy::headers::{self, get_str};
use crate::proxy::upstream::classify_client_error;
use crate::proxy::{certpage, connect, decode, ws, ConnInfo};
use crate::state::Shared;

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
    Ok(forward(req, conn).await)
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

/// Header: the call's timeout in ms (else `network_timeout` of the API, else 60 s).
pub const TIMEOUT_HEADER: &str = "x-wxsandbox-timeout";
/// Header: `arraybuffer` leaves the response bytes alone (no BOM or charset handling).
pub const RESPONSE_TYPE_HEADER: &str = "x-wxsandbox-response-type";
/// The platform's default timeout for every network API.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(60_000);

async fn forward(mut req: Request<Incoming>, conn: Arc<ConnInfo>) -> Response<Body> {
    let conn = &*conn;
    let target = match Target::of(&req, conn) {
        Ok(t) => t,
        Err(response) => return response,
    };
    if target.host.eq_ignore_ascii_case(certpage::CERT_HOST) {
        return certpage::serve(&req, &conn.shared);
    }
    let shared = &conn.shared;
    let websocket = headers::is_websocket_upgrade(req.headers());
    let url =
        get_str(req.headers(), URL_HEADER).map_or_else(|| target.url(websocket), str::to_owned);
    let origin = req.headers().get(ORIGIN).cloned();
    let mut meta = CallMeta::new(
        shared,
        conn.client.ip(),
        req.method().as_str(),
        &url,
        req.headers(),
        req.version(),
    );
    let admitted = match admit(&req, conn, url, websocket, &mut meta) {
        Ok(a) => a,
        Err(refusal) => return refuse(shared, meta, &refusal, origin.as_ref()),
    };
    let (app, api) = (admitted.app, admitted.api);
    let Ok(instance) = shared.instances.get(&app.appid, conn.client.ip()) else {
        return answer::status_only(StatusCode::INTERNAL_SERVER_ERROR, "app instance missing");
    };
    if instance.phase() != Phase::Foreground {
        return refuse(
            shared,
            meta,
            &Refusal::background(api, &admitted.url),
            origin.as_ref(),
        );
    }
    let timeout = call_timeout(req.headers(), app, api);
    let deadline = meta.arrival + timeout;
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let arraybuffer = get_str(req.headers(), RESPONSE_TYPE_HEADER)
        .is_some_and(|v| v.eq_ignore_ascii_case("arraybuffer"));
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key("access-control-request-method");
    let Ok(uri) = target.upstream_uri() else {
        return answer::status_only(
            StatusCode::BAD_REQUEST,
            "the request URL can't be forwarded",
        );
    };
    prepare_upstream_request(&mut req, app, uri, websocket);
    let strict = !shared.skip_domain_check();
    if websocket {
        return ws::relay(
            req,
            conn,
            &admitted,
            strict,
            Call {
                instance,
                deadline,
                timeout_ms,
                meta,
            },
        )
        .await;
    }
    let url = admitted.url.as_str();

    // One deadline timer and one background-cut future per call, shared by the queue wait, the
    // upstream wait, the decoding and the response body.
    let mut timer = Box::pin(sleep_until(deadline));
    let cut_instance = instance.clone();
    let mut cut: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(async move { cut_instance.cut().await });

    // Rule 6: a slot (CORS preflights don't count), waiting in FIFO order with `overflow: queue`.
    let permit = if preflight {
        None
    } else {
        tokio::select! {
            biased;
            () = &mut cut => return refuse(shared, meta, &Refusal::interrupted(api, url, grace_ms(app)), origin.as_ref()),
            () = &mut timer => return refuse(shared, meta, &Refusal::timeout(api, url, timeout_ms), origin.as_ref()),
            slot = instance.http_slot() => match slot {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let refusal = Refusal::concurrency(api, url, app.limits.requests);
                    return refuse(shared, meta, &refusal, origin.as_ref());
                }
            },
        }
    };
    let queue_ms = u64::try_from(meta.arrival.elapsed().as_millis()).unwrap_or(u64::MAX);

    // Rule 7: upstream, within the deadline, unless the app goes to the background.
    let bytes_up = Arc::new(AtomicU64::new(0));
    let req = req.map(|b| body::boxed(Counted::new(b, bytes_up.clone())));
    let client = shared.upstream.client(strict, false);
    let result = tokio::select! {
        biased;
        () = &mut cut => return refuse(shared, meta, &Refusal::interrupted(api, url, grace_ms(app)), origin.as_ref()),
        () = &mut timer => return refuse(shared, meta, &Refusal::timeout(api, url, timeout_ms), origin.as_ref()),
        result = client.request(req) => result,
    };
    let mut response = match result {
        Ok(response) => response.map(body::boxed),
        Err(e) => {
            let failure = classify_client_error(&e);
            let refusal = Refusal::net(api, url, failure.rule, &failure.net);
            warn!(app = %app.appid, api = api.as_str(), url = %url, rule = refusal.rule.as_str(),
                error = %failure, "upstream failed");
            return refuse(shared, meta, &refusal, origin.as_ref());
        }
    };
    headers::strip_hop_by_hop(response.headers_mut(), false);
    if !arraybuffer && !preflight {
        let decoded = tokio::select! {
            biased;
            () = &mut cut => return refuse(shared, meta, &Refusal::interrupted(api, url, grace_ms(app)), origin.as_ref()),
            () = &mut timer => return refuse(shared, meta, &Refusal::timeout(api, url, timeout_ms), origin.as_ref()),
            decoded = decode::decode_response(response) => decoded,
        };
        response = match decoded {
            Ok(r) => r,
            Err(detail) => {
                return refuse(
                    shared,
                    meta,
                    &Refusal::charset(api, url, detail),
                    origin.as_ref(),
                )
            }
        };
    }
    let end = End {
        status: Some(response.status().as_u16()),
        queue_ms,
        response_headers: response.headers().clone(),
        ..End::default()
    };
    let tracking = Tracking {
        shared: shared.clone(),
        meta,
        end,
        bytes_up,
        permit,
        deadline: Some(timer),
        cut: Some(cut),
    };
    response.map(|b| body::boxed(Tracked::new(b, tracking)))
}

/// What a call carries into its relay (sockets).
pub(crate) struct Call {
    pub instance: Arc<Instance>,
    pub deadline: tokio::time::Instant,
    pub timeout_ms: u64,
    pub meta: CallMeta,
}

fn grace_ms(app: &AppConfig) -> u64 {
    u64::try_from(app.limits.background_grace.as_millis()).unwrap_or(u64::MAX)
}

/// `X-Wxsandbox-Timeout` (ms), else the API's `network_timeout`, else 60 s.
fn call_timeout(h: &http::HeaderMap, app: &AppConfig, api: Api) -> Duration {
    if let Some(ms) = get_str(h, TIMEOUT_HEADER).and_then(|v| v.trim().parse::<u64>().ok()) {
        return Duration::from_millis(ms);
    }
    let t = &app.network_timeout;
    let configured = match api {
        Api::Request | Api::Tcp => t.request,
        Api::UploadFile => t.upload_file,
        Api::DownloadFile => t.download_file,
        Api::ConnectSocket => t.connect_socket,
    };
    configured.unwrap_or(DEFAULT_TIMEOUT)
}

/// Log, record and answer a refusal.
pub(crate) fn refuse(
    shared: &Shared,
    meta: CallMeta,
    refusal: &Refusal,
    origin: Option<&HeaderValue>,
) -> Response<Body> {
    info!(app = meta.appid.as_deref().unwrap_or("-"), client = %meta.client, api = refusal.api.as_str(),
        url = %refusal.url, rule = refusal.rule.as_str(), errmsg = %refusal.errmsg, "refused");
    let response = answer::refusal(refusal, meta.appid.as_deref(), origin);
    let end = End {
        status: Some(refusal.status),
        ..End::default()
    };
    record(shared, meta, outcome_of(refusal), Some(refusal), end);
    response
}

/// Identify the app and API and judge the call (rules 1-4).
pub(crate) fn admit<'c>(
    req: &Request<Incoming>,
    conn: &'c ConnInfo,
    url: String,
    websocket: bool,
    meta: &mut CallMeta,
) -> Result<Admitted<'c>, Refusal> {
    let h = req.headers();
    let origin = h.get(ORIGIN).cloned();
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
        meta.api = api.as_str();
        return Err(policy::unknown_app(api, &url));
    };
    meta.appid = Some(app.appid.clone());
    let api_hints = ApiHints {
        is_websocket_upgrade: websocket,
        api_header: get_str(h, API_HEADER),
        method: req.method().as_str(),
        content_type: get_str(h, "content-type"),
    };
    let api = policy::detect_api(app, &api_hints, &url);
    meta.api = api.as_str();
    let call = policy::Call {
        client: conn.client.ip(),
        api,
        url: &url,
        method: req.method().as_str(),
    };
    if let Verdict::Refuse(refusal) = policy::judge(app, &call, shared.switches()) {
        return Err(refusal);
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
