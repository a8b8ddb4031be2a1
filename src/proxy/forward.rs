//! One call, in named stages: **admit** (which app, which API, the URL as judged, rules 1-5)
//! → **run** (slot, upstream, decoding, each raced against the call's clock) → **deliver**
//! (the response under a watchdog) → **record** (once, by whoever ends the call).
//! A refusal at any stage leaves through [`refuse::finish`].
//!
//! Used for plain-HTTP proxy requests (absolute-form) and for every request inside an
//! intercepted TLS tunnel (origin-form over HTTP/1.1, or HTTP/2).

use std::sync::Arc;

use http::header::{HeaderValue, ORIGIN, REFERER};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::AppConfig;
use crate::instances::{Instance, Phase};
use crate::policy::{self, Api, ApiHints, AppHints, CallUrl, Refusal, Style, Verdict};
use crate::proxy::body::{self, Body, BoxError};
use crate::proxy::call::{
    record, track, CallMeta, Clock, Counted, Cut, CutInfo, End, Live, RequestBody,
};
use crate::proxy::conn::{current_stream_kill, ActivityGuard};
use crate::proxy::headers::{self, get_str, head_size};
use crate::proxy::refuse::{self, Refused};
use crate::proxy::upstream::classify_client_error;
use crate::proxy::{answer, certpage, connect, decode, ws, ConnInfo, MAX_HEADER_BYTES};
use crate::state::Shared;

/// Header: the exact URL string given to `wx.request`, judged instead of the request's URL.
pub const URL_HEADER: &str = "x-wxsandbox-url";
/// Header: names the app.
pub const APPID_HEADER: &str = "x-wxsandbox-appid";
/// Header: names the API (`request`, `uploadFile`, `downloadFile`).
pub const API_HEADER: &str = "x-wxsandbox-api";
/// Header: the call's timeout in ms (else `network_timeout` of the API, else 60 s).
pub const TIMEOUT_HEADER: &str = "x-wxsandbox-timeout";
/// Header: `arraybuffer` leaves the response bytes alone (no BOM or charset handling).
pub const RESPONSE_TYPE_HEADER: &str = "x-wxsandbox-response-type";
/// Header: `fail` or `answer`, this call's refusal style.
pub const REFUSAL_HEADER: &str = "x-wxsandbox-refusal";
pub use crate::policy::DEFAULT_TIMEOUT;

/// The service of the outer connection: CONNECT, or an absolute-form request.
pub(crate) async fn outer(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Result<Response<Body>, BoxError> {
    if req.method() == Method::CONNECT {
        let _busy = conn.activity.begin();
        return Ok(connect::handle(req, conn));
    }
    call(req, conn).await
}

/// The service of every request that is a call (absolute-form, or inside a tunnel).
pub(crate) async fn call(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Result<Response<Body>, BoxError> {
    let busy = conn.activity.begin();
    let target = match Target::of(&req, &conn) {
        Ok(t) => t,
        Err(response) => return Ok(response),
    };
    if target.host == certpage::CERT_HOST && head_size(&req) <= MAX_HEADER_BYTES {
        return Ok(certpage::serve(&req, &conn.shared));
    }
    let shared = conn.shared.clone();
    let admitted = match admit(req, &conn, &target) {
        Ok(a) => a,
        Err(refused) => return refuse::finish(&shared, *refused).await,
    };
    match run(admitted, &conn, &target, busy).await {
        Ok(response) => Ok(response),
        Err(refused) => refuse::finish(&shared, *refused).await,
    }
}

/// Where a request goes: scheme, host, port, path; and whether the port was written.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    tls: bool,
    /// Normalised (see [`policy::normalize_target_host`]); IPv6 literals keep their brackets.
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
        let bad = |message| Err(answer::status_only(StatusCode::BAD_REQUEST, message));
        let uri = req.uri();
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return bad("wxsandbox is a proxy: send absolute-form requests (curl -x), or open http://wxsandbox.cert/ through it");
        };
        if !scheme.eq_ignore_ascii_case("http") {
            return bad("only http:// URLs are forwarded in absolute form; use CONNECT for https");
        }
        let Some(host) = policy::normalize_target_host(authority.host()) else {
            return bad("the request's host is not a valid host name");
        };
        Ok(Target {
            tls: false,
            host,
            port: authority.port_u16().unwrap_or(80),
            explicit_port: authority.port().is_some(),
            path_and_query,
        })
    }

    /// The URL as the mini program wrote it (as far as the proxy can tell).
    pub fn url(&self, websocket: bool) -> String {
        let mut url = format!("{}://{}", self.scheme(websocket), self.host);
        if self.explicit_port {
            url.push_str(&format!(":{}", self.port));
        }
        url.push_str(&self.path_and_query);
        url
    }

    fn scheme(&self, websocket: bool) -> &'static str {
        match (self.tls, websocket) {
            (true, false) => "https",
            (true, true) => "wss",
            (false, false) => "http",
            (false, true) => "ws",
        }
    }

    /// Where the request really goes, as a parsed call URL (for the hint check).
    fn call_url(&self, websocket: bool) -> Option<CallUrl> {
        policy::parse_url(&format!(
            "{}://{}:{}/",
            self.scheme(websocket),
            self.host,
            self.port
        ))
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

/// A call that passed rules 1-5, with everything the later stages need.
pub(crate) struct Admitted<'c> {
    pub head: http::request::Parts,
    /// The request body, until it goes upstream.
    pub body: Option<Incoming>,
    pub app: &'c AppConfig,
    pub api: Api,
    pub url: Arc<str>,
    pub meta: CallMeta,
    pub style: Style,
    pub origin: Option<HeaderValue>,
    pub instance: Arc<Instance>,
    pub clock: Clock,
    pub timeout_ms: u64,
    pub websocket: bool,
}

impl Admitted<'_> {
    /// This call's refusal, on its way out (the body is kept for draining).
    pub fn refused(self, refusal: Refusal) -> Box<Refused> {
        Box::new(Refused {
            expects_continue: refuse::expects_continue(&self.head.headers),
            version: self.head.version,
            meta: self.meta,
            refusal,
            style: self.style,
            origin: self.origin,
            body: self.body,
        })
    }

    /// The refusal of a cut (deadline or background) before the response.
    pub fn cut(self, cut: Cut) -> Box<Refused> {
        let refusal = self.cut_info(CancellationToken::new()).refusal(cut);
        self.refused(refusal)
    }

    pub fn cut_info(&self, kill: CancellationToken) -> CutInfo {
        CutInfo {
            api: self.api,
            url: self.url.clone(),
            timeout_ms: self.timeout_ms,
            grace_ms: u64::try_from(self.app.limits.background_grace.as_millis())
                .unwrap_or(u64::MAX),
            kill,
        }
    }
}

/// Stage 1, admit: head size, the URL (and its hint), the app and API, rules 1-5.
fn admit<'c>(
    req: Request<Incoming>,
    conn: &'c ConnInfo,
    target: &Target,
) -> Result<Admitted<'c>, Box<Refused>> {
    let shared = &conn.shared;
    let websocket = headers::is_websocket_upgrade(req.headers());
    let hint = req
        .headers()
        .get(URL_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let url = hint.clone().unwrap_or_else(|| target.url(websocket));
    let mut meta = CallMeta::new(
        shared,
        conn.client.ip(),
        req.method().as_str(),
        &url,
        req.headers(),
        req.version(),
    );
    let app = identify(&req, conn);
    meta.appid = app.map(|a| a.appid.clone());
    let style = style_of(&req, app, shared);
    let refuse = |req: Request<Incoming>, meta: CallMeta, refusal: Refusal| {
        let version = req.version();
        let expects_continue = refuse::expects_continue(req.headers());
        Box::new(Refused {
            meta,
            refusal,
            style,
            origin: req.headers().get(ORIGIN).cloned(),
            body: Some(req.into_body()),
            version,
            expects_continue,
        })
    };
    let size = head_size(&req);
    let api_guess = if websocket {
        Api::ConnectSocket
    } else {
        Api::Request
    };
    if size > MAX_HEADER_BYTES {
        meta.api = api_guess.as_str();
        let refusal = Refusal::head_too_large(api_guess, &url, size, MAX_HEADER_BYTES);
        return Err(refuse(req, meta, refusal));
    }
    let Some(app) = app else {
        meta.api = api_guess.as_str();
        return Err(refuse(req, meta, policy::unknown_app(api_guess, &url)));
    };
    let api = detect(&req, app, &url, websocket);
    meta.api = api.as_str();
    if let Some(hint) = &hint {
        if let Err(refusal) = check_hint(hint, target, websocket, api) {
            return Err(refuse(req, meta, refusal));
        }
    }
    let call = policy::Call {
        client: conn.client.ip(),
        api,
        url: &url,
        method: req.method().as_str(),
    };
    if let Verdict::Refuse(refusal) = policy::judge(app, &call, shared.switches()) {
        return Err(refuse(req, meta, refusal));
    }
    let Ok(instance) = shared.instances.get(&app.appid, conn.client.ip()) else {
        return Err(refuse(req, meta, policy::unknown_app(api, &url)));
    };
    // Rule 5.
    if instance.phase() != Phase::Foreground {
        return Err(refuse(req, meta, Refusal::background(api, &url)));
    }
    let timeout = policy::call_timeout(get_str(req.headers(), TIMEOUT_HEADER), app, api);
    let (head, body) = req.into_parts();
    Ok(Admitted {
        origin: head.headers.get(ORIGIN).cloned(),
        head,
        body: Some(body),
        app,
        api,
        url: Arc::from(url),
        style,
        clock: Clock::new(meta.arrival + timeout, instance.clone()),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        meta,
        instance,
        websocket,
    })
}

/// The app of a request: its own headers first, then what its tunnel's CONNECT said.
fn identify<'c>(req: &Request<Incoming>, conn: &'c ConnInfo) -> Option<&'c AppConfig> {
    let h = req.headers();
    let tunnel = conn.tunnel.as_ref();
    let hints = AppHints {
        proxy_authorization: get_str(h, "proxy-authorization")
            .or_else(|| tunnel.and_then(|t| t.proxy_authorization.as_deref())),
        appid_header: get_str(h, APPID_HEADER)
            .or_else(|| tunnel.and_then(|t| t.appid_header.as_deref())),
        referer: get_str(h, REFERER.as_str()),
        client: conn.client.ip(),
    };
    policy::identify_app(&conn.shared.config, &hints)
}

/// The API a request stands for.
fn detect(req: &Request<Incoming>, app: &AppConfig, url: &str, websocket: bool) -> Api {
    let h = req.headers();
    let hints = ApiHints {
        is_websocket_upgrade: websocket,
        api_header: get_str(h, API_HEADER),
        method: req.method().as_str(),
        content_type: get_str(h, "content-type"),
    };
    policy::detect_api(app, &hints, url)
}

/// The refusal style of a request (call header, then app, then global).
fn style_of(req: &Request<Incoming>, app: Option<&AppConfig>, shared: &Shared) -> Style {
    let h = req.headers();
    let carries = h
        .keys()
        .any(|k| k.as_str().starts_with(headers::SANDBOX_PREFIX));
    policy::refusal_style(
        get_str(h, REFUSAL_HEADER),
        carries,
        app.and_then(|a| a.refusal),
        shared.refusal_style(),
    )
}

/// `X-Wxsandbox-Url` may only say how the real target was written: same scheme family, host
/// and port. An unparsable hint is judged as it is (rule 1 refuses it with its own text).
fn check_hint(hint: &str, target: &Target, websocket: bool, api: Api) -> Result<(), Refusal> {
    let Some(parsed) = policy::parse_url(hint) else {
        return Ok(());
    };
    let real = target.call_url(websocket);
    if real
        .as_ref()
        .is_some_and(|r| policy::hint_matches(&parsed, r))
    {
        return Ok(());
    }
    let shown = match &real {
        Some(r) => format!("{}://{}:{}", target.scheme(websocket), r.host, target.port),
        None => target.url(websocket),
    };
    Err(Refusal::hint_mismatch(api, hint, &shown))
}

/// Stage 2, run: a slot, the upstream call, decoding; each raced against the call's clock.
async fn run(
    mut a: Admitted<'_>,
    conn: &ConnInfo,
    target: &Target,
    busy: ActivityGuard,
) -> Result<Response<Body>, Box<Refused>> {
    let shared = &conn.shared;
    let Ok(uri) = target.upstream_uri() else {
        let refusal = Refusal::hint_mismatch(a.api, &a.url, "a URL that can't be forwarded");
        return Err(a.refused(refusal));
    };
    let strict = !shared.skip_domain_check();
    let preflight = policy::is_preflight(
        a.head.method.as_str(),
        a.head.headers.contains_key("access-control-request-method"),
    );
    let arraybuffer = get_str(&a.head.headers, RESPONSE_TYPE_HEADER)
        .is_some_and(|v| v.eq_ignore_ascii_case("arraybuffer"));
    prepare_upstream_request(&mut a.head, a.app, uri, a.websocket);
    if a.websocket {
        return ws::relay(a, conn, strict).await;
    }
    // Rule 6: a slot (CORS preflights don't count), FIFO with `overflow: queue`.
    let permit = if preflight {
        None
    } else {
        let instance = a.instance.clone();
        match a.clock.race(instance.http_slot()).await {
            Err(cut) => return Err(a.cut(cut)),
            Ok(Err(_)) => {
                let refusal = Refusal::concurrency(a.api, &a.url, a.app.limits.requests);
                return Err(a.refused(refusal));
            }
            Ok(Ok(permit)) => Some(permit),
        }
    };
    let queue_ms = u64::try_from(a.meta.arrival.elapsed().as_millis()).unwrap_or(u64::MAX);
    // Rule 7: upstream, within the deadline, unless the app goes to the background.
    let request_body = Arc::new(RequestBody::default());
    let head_only = a.head.method == Method::HEAD;
    let Some(incoming) = a.body.take() else {
        let refusal = Refusal::hint_mismatch(a.api, "", "a request without a body");
        return Err(a.refused(refusal));
    };
    let upstream_req = Request::from_parts(
        a.head.clone(),
        body::boxed(Counted::new(incoming, request_body.clone())),
    );
    let client = shared.upstream.client(strict, false);
    let response = match a.clock.race(client.request(upstream_req)).await {
        Err(cut) => return Err(a.cut(cut)),
        Ok(Err(e)) => return Err(upstream_failed(a, &e, &request_body)),
        Ok(Ok(response)) => response.map(body::boxed),
    };
    let mut response = response;
    headers::strip_hop_by_hop(response.headers_mut(), false);
    if !arraybuffer && !preflight {
        response = match a.clock.race(decode::decode_response(response)).await {
            Err(cut) => return Err(a.cut(cut)),
            Ok(Err(detail)) => {
                let refusal = Refusal::charset(a.api, &a.url, detail);
                return Err(a.refused(refusal));
            }
            Ok(Ok(r)) => r,
        };
    }
    let live = Live {
        shared: shared.clone(),
        end: End {
            status: Some(response.status().as_u16()),
            queue_ms,
            response_headers: response.headers().clone(),
            ..End::default()
        },
        meta: a.meta.clone(),
        request_body,
        permit,
        body: body::empty(),
        expected: if head_only {
            Some(0)
        } else {
            headers::content_length(response.headers())
        },
        activity: busy,
    };
    Ok(deliver(a, live, response, conn))
}

/// The upstream failed: the server's fault, or the client's own broken request body.
fn upstream_failed(
    a: Admitted<'_>,
    err: &hyper_util::client::legacy::Error,
    request_body: &RequestBody,
) -> Box<Refused> {
    if request_body
        .client_error
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        let refusal = Refusal::bad_request_body(a.api, &a.url, &err.to_string());
        return a.refused(refusal);
    }
    let failure = classify_client_error(err);
    let refusal = Refusal::net(a.api, &a.url, failure.rule, &failure.net);
    warn!(app = %a.app.appid, api = a.api.as_str(), url = %a.url, rule = refusal.rule.as_str(),
        error = %failure, "upstream failed");
    a.refused(refusal)
}

/// Stage 3, deliver: the response goes to the client under the call's watchdog.
fn deliver(
    a: Admitted<'_>,
    mut live: Live,
    response: Response<Body>,
    conn: &ConnInfo,
) -> Response<Body> {
    let (parts, body) = response.into_parts();
    if live.expected == Some(0) || http_body::Body::is_end_stream(&body) {
        // Nothing to stream (HEAD, 204, 304, empty): the call is over.
        live.permit.take();
        let Live {
            shared, meta, end, ..
        } = live;
        record(&shared, meta, crate::calllog::Outcome::Ok, None, end);
        return Response::from_parts(parts, body);
    }
    live.body = body;
    let kill = current_stream_kill().unwrap_or_else(|| conn.activity.close.clone());
    let cut = a.cut_info(kill);
    Response::from_parts(parts, track(live, a.clock, cut))
}

/// Rewrite an admitted request for the upstream: absolute URI, HTTP/1.1 semantics (ALPN decides
/// h2 upstream), no hop-by-hop or sandbox headers, the platform's Referer.
fn prepare_upstream_request(
    head: &mut http::request::Parts,
    app: &AppConfig,
    uri: Uri,
    websocket: bool,
) {
    let from_h2 = head.version == Version::HTTP_2;
    head.uri = uri;
    head.version = Version::HTTP_11;
    let h = &mut head.headers;
    headers::strip_hop_by_hop(h, websocket);
    headers::strip_sandbox_headers(h);
    if from_h2 {
        headers::join_cookies(h);
    }
    // hyper answers the client's `Expect: 100-continue` itself when the body is first read.
    h.remove(http::header::EXPECT);
    h.insert(REFERER, app.referer.clone());
}
