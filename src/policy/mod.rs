//! Policy: how the WeChat client judges a call (SPEC section 3, rules 1-4) and what a refused
//! call gets (SPEC section 4). Pure decisions: no I/O, no clock, no tokio. Everything it needs
//! is passed in; the proxy does the I/O and asks.

use std::net::IpAddr;

use crate::config::AppConfig;

mod decide;
mod identify;
mod judge;
pub mod network;
mod quota;
mod refusal;
#[cfg(test)]
mod tests;
mod url;
mod webview;

/// The mini program API a call stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Request,
    UploadFile,
    DownloadFile,
    /// `wx.connectSocket` (a WebSocket upgrade).
    ConnectSocket,
    /// `wx.createTCPSocket` (a CONNECT tunnel whose first bytes are not TLS).
    Tcp,
    /// A `<web-view>` page: its navigations (business domains) and what the page loads.
    WebView,
}

impl Api {
    /// The name used in errMsg (`request:fail ...`, `createSocketTask:fail ...`).
    pub fn errmsg_name(self) -> &'static str {
        match self {
            Api::Request => "request",
            Api::UploadFile => "uploadFile",
            Api::DownloadFile => "downloadFile",
            Api::ConnectSocket => "createSocketTask",
            Api::Tcp => "createTCPSocket",
            Api::WebView => "web-view",
        }
    }

    /// The name used in logs and the control API (`request`, `connectSocket`, `tcp`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Request => "request",
            Api::UploadFile => "uploadFile",
            Api::DownloadFile => "downloadFile",
            Api::ConnectSocket => "connectSocket",
            Api::Tcp => "tcp",
            Api::WebView => "webview",
        }
    }

    /// HTTP calls share the 10 request slots; sockets have their own 5.
    pub fn is_http(self) -> bool {
        matches!(self, Api::Request | Api::UploadFile | Api::DownloadFile)
    }
}

/// Which row of the refusal table (SPEC section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    InvalidUrl,
    DomainList,
    ForbiddenHost,
    TcpPort,
    /// More `wx.createTCPSocket` sockets created in the window than the platform allows.
    TcpQuota,
    Appid,
    Background,
    Interrupted,
    Concurrency,
    Timeout,
    Upstream,
    Tls,
    Charset,
    /// The instance has no network (profile `offline`).
    Offline,
    /// The instance's network changed: every call in flight was cancelled.
    NetworkChange,
    /// The client's own request was broken (e.g. its chunked body): its fault, not a refusal.
    ClientError,
    /// A web-view navigation outside the business domains.
    BusinessDomain,
}

impl Rule {
    /// The `X-Wxsandbox-Rule` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::InvalidUrl => "invalid-url",
            Rule::DomainList => "domain-list",
            Rule::ForbiddenHost => "forbidden-host",
            Rule::TcpPort => "tcp-port",
            Rule::TcpQuota => "tcp-quota",
            Rule::Appid => "appid",
            Rule::Background => "background",
            Rule::Interrupted => "interrupted",
            Rule::Concurrency => "concurrency",
            Rule::Timeout => "timeout",
            Rule::Upstream => "upstream",
            Rule::Tls => "tls",
            Rule::Charset => "charset",
            Rule::Offline => "offline",
            Rule::NetworkChange => "network-change",
            Rule::ClientError => "client-error",
            Rule::BusinessDomain => "business-domain",
        }
    }
}

/// A refused call: everything the refusal answer of SPEC section 4 carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub errno: i64,
    pub errmsg: String,
    pub rule: Rule,
    pub api: Api,
    /// The URL as judged.
    pub url: String,
    /// Which list was searched and the nearest entry, or which check failed and how to fix it.
    pub detail: String,
}

/// A Chromium-style network error, as the platform reports upstream failures
/// (`-102:net::ERR_CONNECTION_REFUSED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetError {
    pub code: i32,
    /// e.g. `ERR_CONNECTION_REFUSED`.
    pub name: &'static str,
    /// What happened and how to fix it.
    pub detail: String,
}

impl Refusal {
    // Constructors for the rows that are decided at run time (the proxy calls them).

    /// 503/600003 `{api}:fail interrupted`, rule background: a call made in the background.
    pub fn background(api: Api, url: &str) -> Refusal {
        Refusal::new(
            503,
            600003,
            format!("{}:fail interrupted", api.errmsg_name()),
            Rule::Background,
            api,
            url,
            "the app instance is in the background; calls made in the background fail at once"
                .to_owned(),
        )
    }

    /// 503/600003 `{api}:fail interrupted`, rule interrupted: in flight past the background grace.
    pub fn interrupted(api: Api, url: &str, grace_ms: u64) -> Refusal {
        Refusal::new(
            503,
            600003,
            format!("{}:fail interrupted", api.errmsg_name()),
            Rule::Interrupted,
            api,
            url,
            format!(
                "the call was still in flight {grace_ms} ms after the app went to the background"
            ),
        )
    }

    /// 429/600007: the 11th HTTP call with `overflow: fail`.
    pub fn concurrency(api: Api, url: &str, limit: usize) -> Refusal {
        Refusal::new(429, 600007, format!("{}:fail exceed max task count", api.errmsg_name()), Rule::Concurrency, api, url,
            format!("{limit} request/uploadFile/downloadFile calls are already in flight for this app instance"))
    }

    /// 429/600007: the 6th socket; `task_id` is the socket task number.
    pub fn socket_concurrency(url: &str, task_id: u64, limit: usize) -> Refusal {
        Refusal::new(
            429,
            600007,
            format!("createSocketTask:fail wcwss taskID={task_id} exceed max concurrent count"),
            Rule::Concurrency,
            Api::ConnectSocket,
            url,
            format!("{limit} sockets are already open for this app instance"),
        )
    }

    /// 429/600007 `[TCPSocket] created too much.`: one TCP socket more than `limit` created by
    /// the app instance within `window_ms`; the next is allowed in `wait_ms`. The text is what
    /// the platform throws (research section 1.4); it carries no `{api}:fail` prefix.
    pub fn tcp_quota(url: &str, limit: usize, window_ms: u64, wait_ms: u64) -> Refusal {
        Refusal::new(
            429,
            600007,
            TCP_QUOTA_ERRMSG.to_owned(),
            Rule::TcpQuota,
            Api::Tcp,
            url,
            format!(
                "{limit} TCP sockets were already created by this app instance in the last {} \
                 (limits.tcp_per_5min); the next one can be created in {wait_ms} ms",
                window_text(window_ms)
            ),
        )
    }

    /// 504/5 `{api}:fail timeout`.
    pub fn timeout(api: Api, url: &str, timeout_ms: u64) -> Refusal {
        Refusal::new(
            504,
            5,
            format!("{}:fail timeout", api.errmsg_name()),
            Rule::Timeout,
            api,
            url,
            format!("no response within {timeout_ms} ms (time in the queue counts)"),
        )
    }

    /// 502/600001 for a connection failure (rule upstream) or a TLS audit failure (rule tls);
    /// 403/600002 when the address dialed is one the proxy never reaches (rule forbidden-host).
    pub fn net(api: Api, url: &str, rule: Rule, err: &NetError) -> Refusal {
        if rule == Rule::ForbiddenHost {
            return Refusal::new(
                403,
                600002,
                format!("{}:fail url not in domain list", api.errmsg_name()),
                rule,
                api,
                url,
                err.detail.clone(),
            );
        }
        Refusal::new(
            502,
            600001,
            format!("{}:fail {}:net::{}", api.errmsg_name(), err.code, err.name),
            rule,
            api,
            url,
            err.detail.clone(),
        )
    }

    /// 502/600001 rule offline: the instance has no network. Cronet's (Android) error for a
    /// device without a connection, in the format of the other transport failures.
    pub fn offline(api: Api, url: &str) -> Refusal {
        Refusal::new(
            502,
            600001,
            format!("{}:fail -106:net::ERR_INTERNET_DISCONNECTED", api.errmsg_name()),
            Rule::Offline,
            api,
            url,
            "the app instance's network profile is offline: switch it (PUT /api/apps/{appid}/network) to go online".to_owned(),
        )
    }

    /// 502/600001 rule network-change: the device switched networks (Wi-Fi to cellular) and
    /// WeChat cancelled every running task.
    pub fn network_change(api: Api, url: &str) -> Refusal {
        Refusal::new(
            502,
            600001,
            format!(
                "{}:fail errcode:10011 cronet_error_code:0 error_msg:network change, cancel all task",
                api.errmsg_name()
            ),
            Rule::NetworkChange,
            api,
            url,
            "the network changed while the call was in flight (POST /api/apps/{appid}/network-change); calls made after it pass".to_owned(),
        )
    }

    /// 400/600009 rule invalid-url: `X-Wxsandbox-Url` names another target than the request.
    pub fn hint_mismatch(api: Api, hint: &str, target: &str) -> Refusal {
        Refusal::new(
            400,
            600009,
            format!("{}:fail invalid url \"{hint}\"", api.errmsg_name()),
            Rule::InvalidUrl,
            api,
            hint,
            format!(
                "X-Wxsandbox-Url {hint} names another target than the request, which goes to {target}: the header may only say how the same scheme, host and port were written"
            ),
        )
    }

    /// 431/600009 rule invalid-url: a request head over the limit.
    pub fn head_too_large(api: Api, url: &str, size: usize, limit: usize) -> Refusal {
        Refusal::new(
            431,
            600009,
            format!("{}:fail request header too large", api.errmsg_name()),
            Rule::InvalidUrl,
            api,
            url,
            format!("the request head is about {size} bytes; at most {limit} are accepted"),
        )
    }

    /// 400/600009 rule invalid-url: the client's own request body was malformed (a bad chunk
    /// size, a body cut short); the client's fault, not the server's.
    pub fn bad_request_body(api: Api, url: &str, error: &str) -> Refusal {
        Refusal::new(
            400,
            600009,
            format!("{}:fail request body is malformed", api.errmsg_name()),
            Rule::ClientError,
            api,
            url,
            format!("the client's request body could not be read ({error}): check its Content-Length or chunked framing"),
        )
    }

    /// 502/602302: a non-UTF-8 body that can't be converted.
    pub fn charset(api: Api, url: &str, detail: String) -> Refusal {
        Refusal::new(
            502,
            602302,
            format!(
                "{}:fail response data convert to UTF8 fail",
                api.errmsg_name()
            ),
            Rule::Charset,
            api,
            url,
            detail,
        )
    }

    fn new(
        status: u16,
        errno: i64,
        errmsg: String,
        rule: Rule,
        api: Api,
        url: &str,
        detail: String,
    ) -> Refusal {
        Refusal {
            status,
            errno,
            errmsg,
            rule,
            api,
            url: url.to_owned(),
            detail,
        }
    }
}

/// What the platform throws at the 21st `wx.createTCPSocket` within 5 minutes.
pub const TCP_QUOTA_ERRMSG: &str = "[TCPSocket] created too much.";

/// `5 minutes`, `300 ms`: a window as the detail names it.
fn window_text(window_ms: u64) -> String {
    match window_ms {
        60_000 => "minute".to_owned(),
        ms if ms % 60_000 == 0 => format!("{} minutes", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

/// The verdict on a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Refuse(Refusal),
}

/// What the proxy knows about a call when it asks for a verdict.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The client's address (the phone, simulator or browser).
    pub client: IpAddr,
    pub api: Api,
    /// The URL as judged: `X-Wxsandbox-Url` when sent, else the reconstructed request URL
    /// (`https://host/path` for a CONNECT to 443, `https://host:8443/path` otherwise;
    /// `tcp://host:port` for a raw tunnel).
    pub url: &'a str,
    pub method: &'a str,
}

/// The run-time switches a verdict depends on.
#[derive(Debug, Clone, Copy)]
pub struct Switches {
    pub skip_domain_check: bool,
    pub lan_prefix: u8,
}

/// What the request carries that names its app (SPEC section 3, "Which app").
#[derive(Debug, Clone, Copy)]
pub struct AppHints<'a> {
    /// The raw `Proxy-Authorization` header value (`Basic base64(user:pass)`).
    pub proxy_authorization: Option<&'a str>,
    /// The user name of the tunnel's `Proxy-Authorization`, decoded once at the CONNECT: used
    /// when the request carries no `Proxy-Authorization` of its own.
    pub tunnel_user: Option<&'a str>,
    /// `X-Wxsandbox-Appid`.
    pub appid_header: Option<&'a str>,
    /// `Referer` as sent by the client.
    pub referer: Option<&'a str>,
    pub client: IpAddr,
}

/// What the request carries that names its API (SPEC section 3, "Which API").
#[derive(Debug, Clone, Copy)]
pub struct ApiHints<'a> {
    pub is_websocket_upgrade: bool,
    /// `X-Wxsandbox-Api`.
    pub api_header: Option<&'a str>,
    pub method: &'a str,
    pub content_type: Option<&'a str>,
}

/// `https://servicewechat.com/{appid}/{version}/page-frame.html`.
pub fn referer(app: &AppConfig) -> String {
    format!(
        "https://servicewechat.com/{}/{}/page-frame.html",
        app.appid, app.version
    )
}

pub use decide::{call_timeout, is_preflight, refusal_style, Style, DEFAULT_TIMEOUT};
pub use identify::{detect_api, detect_api_parsed, identify_app, proxy_user, unknown_app};
pub use judge::{judge, judge_connect, judge_parsed, may_open_ahead};
pub use quota::SlidingWindow;
pub use url::{hint_matches, normalize_target_host, parse_url, tunnel_url, CallUrl, Host};
pub use webview::{judge_navigation, webview_kind, WebView};
