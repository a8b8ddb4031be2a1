//! Stage 1 of a call, **admit**: where the request goes ([`Target`]), the URL as judged (the
//! `X-Wxsandbox-Url` hint may only say how that same target was written), which app and API,
//! the refusal style, and rules 1-5. What passes is an [`Admitted`] call that every later
//! stage uses; nothing is parsed twice.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::config::Scheme;
use crate::config::{AppConfig, Config};
use crate::instances::{Instance, Link, Phase};
use crate::policy::{self, Api, ApiHints, AppHints, CallUrl, Refusal, Style, Verdict, WebView};
use crate::proxy::call::{CallMeta, Clock, Cut, CutInfo};
use crate::proxy::headers;
use crate::proxy::refuse::Refused;
pub(crate) use crate::proxy::seen::Marks;
use crate::proxy::seen::{text, Seen};
use crate::proxy::{ConnInfo, MAX_HEADER_BYTES};
use crate::web::answer;
use crate::web::body::Body;

/// Header: the exact URL string given to `wx.request`, judged instead of the request's URL.
pub const URL_HEADER: HeaderName = HeaderName::from_static("x-wxsandbox-url");
/// Header: names the app.
pub const APPID_HEADER: HeaderName = HeaderName::from_static("x-wxsandbox-appid");
/// Header: names the API (`request`, `uploadFile`, `downloadFile`).
pub const API_HEADER: HeaderName = HeaderName::from_static("x-wxsandbox-api");
/// Header: the call's timeout in ms (else `network_timeout` of the API, else 60 s).
pub const TIMEOUT_HEADER: HeaderName = HeaderName::from_static("x-wxsandbox-timeout");
/// Header: `arraybuffer` leaves the response bytes alone (no BOM or charset handling).
pub const RESPONSE_TYPE_HEADER: HeaderName = HeaderName::from_static("x-wxsandbox-response-type");
/// Header: `fail` or `answer`, this call's refusal style.
pub const REFUSAL_HEADER: HeaderName = HeaderName::from_static("x-wxsandbox-refusal");

/// Header: this call's network profile (a preset or custom name) instead of its instance's;
/// an unknown name is ignored.
pub const NETWORK_HEADER: HeaderName = HeaderName::from_static("x-wxsandbox-network");

/// Where a request goes: scheme, host, port, path; and whether the port was written. A
/// tunnel's calls borrow what its CONNECT said (host, parsed URL, Host header), made once.
#[derive(Debug, Clone)]
pub(crate) struct Target<'c> {
    tls: bool,
    /// Normalised (see [`policy::normalize_target_host`]); IPv6 literals keep their brackets.
    pub host: Cow<'c, str>,
    pub port: u16,
    explicit_port: bool,
    path_and_query: PathAndQuery,
    /// A tunnel's `https://host[:port]`, parsed at its CONNECT.
    parsed: Option<&'c CallUrl>,
    /// `host[:port]` as the upstream Host header names it (the port when not the scheme's).
    pub host_header: Option<Cow<'c, HeaderValue>>,
}

impl<'c> Target<'c> {
    pub fn of(req: &Request<Incoming>, conn: &'c ConnInfo) -> Result<Self, Response<Body>> {
        // A CONNECT reaches a call only inside a tunnel (the outer one is `connect::outer`'s):
        // it would ask the tunnel's server for another tunnel (and hyper would hand the
        // connection over as an upgrade that nothing relays). The tunnel already goes to its
        // host, so nothing is forwarded.
        if req.method() == Method::CONNECT {
            return Err(answer::status_only(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT inside a tunnel is not forwarded: the tunnel already goes to its host",
            ));
        }
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        if let Some(tunnel) = &conn.tunnel {
            return Ok(Target {
                tls: true,
                host: Cow::Borrowed(&tunnel.host),
                port: tunnel.port,
                explicit_port: tunnel.port != 443,
                path_and_query,
                parsed: tunnel.call_url.as_ref(),
                host_header: tunnel.host_header.as_ref().map(Cow::Borrowed),
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
        let port = authority.port_u16().unwrap_or(80);
        Ok(Target {
            tls: false,
            host_header: host_header(&host, port, false).map(Cow::Owned),
            host: Cow::Owned(host),
            port,
            explicit_port: authority.port().is_some(),
            path_and_query,
            parsed: None,
        })
    }

    /// The URL as the mini program wrote it (as far as the proxy can tell).
    pub fn url(&self, websocket: bool) -> String {
        let mut url = String::new();
        self.write_url(&mut url, websocket);
        url
    }

    /// [`Target::url`], shared: written in the thread's scratch string, then copied once into
    /// the `Arc` (no `String` made and dropped per call).
    fn shared_url(&self, websocket: bool) -> Arc<str> {
        thread_local! {
            static URL: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        URL.with_borrow_mut(|url| {
            url.clear();
            self.write_url(url, websocket);
            let shared = Arc::from(url.as_str());
            // A long URL's room is not kept for the usual ones.
            if url.capacity() > 16 * 1024 {
                *url = String::new();
            }
            shared
        })
    }

    fn write_url(&self, url: &mut String, websocket: bool) {
        use std::fmt::Write as _;
        let scheme = self.scheme(websocket);
        let path = self.path_and_query.as_str();
        url.reserve(scheme.len() + 3 + self.host.len() + 6 + path.len());
        url.push_str(scheme);
        url.push_str("://");
        url.push_str(&self.host);
        if self.explicit_port {
            let _ = write!(url, ":{}", self.port);
        }
        url.push_str(path);
    }

    /// [`Target::url`] as parsed for the policy: a tunnel's was parsed at its CONNECT.
    fn parsed_url(&self, websocket: bool) -> Option<Cow<'c, CallUrl>> {
        match self.parsed {
            Some(tunnel) if !websocket => Some(Cow::Borrowed(tunnel)),
            Some(tunnel) => Some(Cow::Owned(CallUrl {
                scheme: Scheme::Wss,
                ..tunnel.clone()
            })),
            None => policy::parse_url(&self.url(websocket)).map(Cow::Owned),
        }
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
    pub fn upstream_uri(&self) -> Result<Uri, http::Error> {
        let scheme = if self.tls { "https" } else { "http" };
        Ok(Uri::try_from(format!(
            "{scheme}://{}:{}{}",
            self.host,
            self.port,
            self.path_and_query.as_str()
        ))?)
    }
}

/// `host[:port]` as a Host header names it (the port when it is not the scheme's); `None` for
/// a name no header can hold.
pub(crate) fn host_header(host: &str, port: u16, tls: bool) -> Option<HeaderValue> {
    let default = if tls { 443 } else { 80 };
    if port == default {
        HeaderValue::from_str(host).ok()
    } else {
        HeaderValue::try_from(format!("{host}:{port}")).ok()
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
    /// The network the call runs under: its instance's, or its own from `X-Wxsandbox-Network`.
    pub link: Arc<Link>,
    pub clock: Clock,
    pub timeout_ms: u64,
    pub websocket: bool,
    /// Calls started on the connection before this one.
    pub earlier_calls: u64,
    /// Web-view traffic: a browser's page, not a mini program API call (no slot, no cut, no
    /// decoding).
    pub webview: bool,
    /// The client's HTTP version and its `Expect: 100-continue`, as the request came: `head`
    /// is rewritten for the upstream (and moved there), refusals answer the client.
    pub version: http::Version,
    pub expects_continue: bool,
    /// What the request's header names say (read in one pass when it arrived).
    pub marks: Marks,
}

impl Admitted<'_> {
    /// This call's refusal, on its way out (the body is kept for draining).
    pub fn refused(&mut self, refusal: Refusal) -> Box<Refused> {
        Box::new(Refused {
            expects_continue: self.expects_continue,
            version: self.version,
            meta: self.meta.clone(),
            refusal,
            style: self.style,
            origin: self.origin.clone(),
            body: self.body.take(),
            earlier_calls: self.earlier_calls,
        })
    }

    /// The refusal of a cut (deadline or background) before the response.
    pub fn cut(&mut self, cut: Cut) -> Box<Refused> {
        let refusal = self.cut_info(CancellationToken::new()).refusal(cut);
        self.refused(refusal)
    }

    /// [`Admitted::cut_info`] with the kill switch given later (looked up only when needed).
    pub fn cut_info_later(&self) -> impl FnOnce(CancellationToken) -> CutInfo {
        let (api, url, timeout_ms) = (self.api, self.url.clone(), self.timeout_ms);
        let grace = self.app.limits.background_grace.as_millis();
        let grace_ms = u64::try_from(grace).unwrap_or(u64::MAX);
        move |kill| CutInfo {
            api,
            url,
            timeout_ms,
            grace_ms,
            kill,
        }
    }

    pub fn cut_info(&self, kill: CancellationToken) -> CutInfo {
        self.cut_info_later()(kill)
    }
}

/// Stage 1, admit: head size, the URL (and its hint), the app and API, rules 1-5.
pub(crate) fn admit<'c>(
    req: Request<Incoming>,
    conn: &ConnInfo,
    config: &'c Config,
    target: &Target<'_>,
) -> Result<Admitted<'c>, Box<Refused>> {
    let mut arrived = Arrived::read(req, conn, config, target);
    match arrived.verdict(conn, target) {
        Ok((app, api, instance)) => {
            let link = arrived
                .marks
                .ours(arrived.req.headers(), NETWORK_HEADER)
                .and_then(|name| conn.shared.instances.link_for(name))
                .map_or_else(|| instance.link(), Arc::new);
            Ok(arrived.admitted(app, api, instance, link))
        }
        Err(refusal) => Err(arrived.refuse(refusal)),
    }
}

/// What a call that passed rules 1-5 is: its app, its API, its instance.
type Verdicted<'c> = (&'c AppConfig, Api, Arc<Instance>);

/// A request as it arrived: what is read once and used by every later stage.
struct Arrived<'c> {
    req: Request<Incoming>,
    meta: CallMeta,
    /// The URL as judged: the hint when sent, else the request's own.
    url: Arc<str>,
    hint: Option<String>,
    websocket: bool,
    app: Option<&'c AppConfig>,
    style: Style,
    earlier_calls: u64,
    webview: bool,
    marks: Marks,
    /// What its head's fields say, kept from the one pass over them.
    head_bytes: usize,
    page: WebView,
    content_type: Option<HeaderValue>,
    origin: Option<HeaderValue>,
    expects_continue: bool,
}

impl<'c> Arrived<'c> {
    fn read(
        req: Request<Incoming>,
        conn: &ConnInfo,
        config: &'c Config,
        target: &Target<'_>,
    ) -> Self {
        let seen = Seen::of(req.headers());
        let websocket = seen.websocket();
        let marks = seen.marks;
        // Non-ASCII bytes are judged too (rule 1 refuses them with their own text).
        let hint = marks
            .sandbox
            .then(|| req.headers().get(URL_HEADER))
            .flatten()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let url: Arc<str> = match &hint {
            Some(hint) => Arc::from(hint.as_str()),
            None => target.shared_url(websocket),
        };
        let mut meta = CallMeta::new(
            &conn.shared,
            conn.client.ip(),
            req.method(),
            url.clone(),
            req.headers(),
            req.version(),
        );
        let h = req.headers();
        let app = identify(&seen, h, conn, config);
        meta.appid = app.map(|a| a.id.clone());
        let style = policy::refusal_style(
            marks.ours(h, REFUSAL_HEADER),
            marks.sandbox,
            app.and_then(|a| a.refusal),
            conn.shared.refusal_style(),
        );
        let page = policy::webview_kind(
            marks.ours(h, API_HEADER),
            text(seen.user_agent),
            text(seen.sec_fetch_dest),
            marks.sec_fetch,
        );
        Arrived {
            head_bytes: headers::head_line_size(&req) + seen.field_bytes,
            page,
            content_type: seen.content_type.cloned(),
            origin: seen.origin.cloned(),
            expects_continue: seen.expects_continue(),
            req,
            meta,
            url,
            hint,
            websocket,
            app,
            style,
            earlier_calls: conn.activity.started().saturating_sub(1),
            webview: false,
            marks,
        }
    }

    /// Rules 1-5, in order; the API is known from the app on.
    fn verdict(&mut self, conn: &ConnInfo, target: &Target<'_>) -> Result<Verdicted<'c>, Refusal> {
        let guess = if self.websocket {
            Api::ConnectSocket
        } else {
            Api::Request
        };
        self.meta.api = guess.as_str();
        if self.head_bytes > MAX_HEADER_BYTES {
            return Err(Refusal::head_too_large(
                guess,
                &self.url,
                self.head_bytes,
                MAX_HEADER_BYTES,
            ));
        }
        let app = self
            .app
            .ok_or_else(|| policy::unknown_app(guess, &self.url))?;
        if let Some(admitted) = self.webview(conn, target, app)? {
            return Ok(admitted);
        }
        let parsed = self.parsed_url(target);
        let hints = ApiHints {
            is_websocket_upgrade: self.websocket,
            api_header: self.marks.ours(self.req.headers(), API_HEADER),
            method: self.req.method().as_str(),
            content_type: text(self.content_type.as_ref()),
        };
        let api = policy::detect_api_parsed(app, &hints, parsed.as_deref());
        self.meta.api = api.as_str();
        if let Some(hint) = &self.hint {
            check_hint(hint, target, self.websocket, api)?;
        }
        let call = policy::Call {
            client: conn.client.ip(),
            api,
            url: &self.url,
            method: self.req.method().as_str(),
        };
        if let Verdict::Refuse(refusal) =
            policy::judge_parsed(app, &call, parsed.as_deref(), conn.shared.switches())
        {
            return Err(refusal);
        }
        let instance = conn
            .shared
            .instances
            .get_via(&conn.last_instance, &app.appid, conn.client.ip())
            .map_err(|_| policy::unknown_app(api, &self.url))?;
        self.meta.network = Some(instance.link().name.clone());
        // Rule 5; a CORS preflight is judged by rules 1-4 only (SPEC section 3, "Browsers").
        let preflight = policy::is_preflight(self.req.method().as_str(), self.marks.cors_preflight);
        if !preflight && instance.phase() != Phase::Foreground {
            return Err(Refusal::background(api, &self.url));
        }
        Ok((app, api, instance))
    }

    /// The URL as judged, parsed once, here (a tunnel's at its CONNECT), for the API's
    /// detection and rules 1-4.
    fn parsed_url<'t>(&self, target: &Target<'t>) -> Option<Cow<'t, CallUrl>> {
        match &self.hint {
            Some(hint) => policy::parse_url(hint).map(Cow::Owned),
            None => target.parsed_url(self.websocket),
        }
    }

    /// Web-view traffic: a navigation is judged by the business domains (and answered with a
    /// page a person can read), what the page loads passes; neither takes a slot.
    fn webview(
        &mut self,
        conn: &ConnInfo,
        target: &Target<'_>,
        app: &'c AppConfig,
    ) -> Result<Option<Verdicted<'c>>, Refusal> {
        let kind = self.page;
        // Only an app with business domains can have a web-view page: for the others, what
        // claims to be a page's own request is judged as the API call it is (the marks are the
        // client's to send, so they must not lift the request lists of an app without pages).
        let no_pages = kind == WebView::Subresource && app.business_domains.is_empty();
        if kind == WebView::No || self.websocket || no_pages {
            return Ok(None);
        }
        self.meta.api = Api::WebView.as_str();
        if let Some(hint) = &self.hint {
            check_hint(hint, target, false, Api::WebView)?;
        }
        if kind == WebView::Navigation {
            if let Verdict::Refuse(refusal) =
                policy::judge_navigation(app, &self.url, conn.shared.switches())
            {
                // A person is looking at it: the refusal page, whatever the style.
                self.style = Style::Answer;
                return Err(refusal);
            }
        }
        let instance = conn
            .shared
            .instances
            .get_via(&conn.last_instance, &app.appid, conn.client.ip())
            .map_err(|_| policy::unknown_app(Api::WebView, &self.url))?;
        self.webview = true;
        Ok(Some((app, Api::WebView, instance)))
    }

    fn admitted(
        self,
        app: &'c AppConfig,
        api: Api,
        instance: Arc<Instance>,
        link: Arc<Link>,
    ) -> Admitted<'c> {
        let mut meta = self.meta;
        meta.network = Some(link.name.clone());
        let timeout_header = self.marks.ours(self.req.headers(), TIMEOUT_HEADER);
        let timeout = policy::call_timeout(timeout_header, app, api);
        let preflight = policy::is_preflight(self.req.method().as_str(), self.marks.cors_preflight);
        let cut_by = (!preflight && !self.webview).then(|| instance.clone());
        let (head, body) = self.req.into_parts();
        Admitted {
            version: head.version,
            expects_continue: self.expects_continue,
            origin: self.origin,
            head,
            body: Some(body),
            app,
            api,
            url: self.url,
            style: self.style,
            clock: Clock::new(meta.arrival + timeout, cut_by),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            meta,
            instance,
            link,
            websocket: self.websocket,
            earlier_calls: self.earlier_calls,
            webview: self.webview,
            marks: self.marks,
        }
    }

    fn refuse(self, refusal: Refusal) -> Box<Refused> {
        Box::new(Refused {
            version: self.req.version(),
            expects_continue: self.expects_continue,
            origin: self.origin,
            body: Some(self.req.into_body()),
            meta: self.meta,
            refusal,
            style: self.style,
            earlier_calls: self.earlier_calls,
        })
    }
}

/// The app of a request: its own headers first, then what its tunnel's CONNECT said.
fn identify<'c>(
    seen: &Seen<'_>,
    h: &http::HeaderMap,
    conn: &ConnInfo,
    config: &'c Config,
) -> Option<&'c AppConfig> {
    let tunnel = conn.tunnel.as_ref();
    let hints = AppHints {
        proxy_authorization: text(seen.proxy_authorization),
        tunnel_user: tunnel.and_then(|t| t.proxy_user.as_deref()),
        appid_header: seen
            .marks
            .ours(h, APPID_HEADER)
            .or_else(|| tunnel.and_then(|t| t.appid_header.as_deref())),
        referer: text(seen.referer),
        client: conn.client.ip(),
    };
    policy::identify_app(config, &hints)
}

/// `X-Wxsandbox-Url` may only say how the real target was written: same scheme family, host
/// and port. An unparsable hint is judged as it is (rule 1 refuses it with its own text).
fn check_hint(hint: &str, target: &Target<'_>, websocket: bool, api: Api) -> Result<(), Refusal> {
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
