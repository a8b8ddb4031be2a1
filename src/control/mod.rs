//! The control port (`control.listen`): health, the CA for download, state and switches.
//!
//! | method, path | what |
//! |---|---|
//! | `GET /healthz` | 200 `ok` |
//! | `GET /ca.pem`, `GET /ca.crt` | the CA, PEM and DER |
//! | `GET /ca.mobileconfig` | the CA in an Apple configuration profile |
//! | `GET /` | the dashboard (assets compiled in) |
//! | `GET /api/state` | the skip switch, the refusal style, every app instance with its counts and network, each app's DNS prefetch results, the network profiles |
//! | `POST /api/apps/{appid}/background`, `.../foreground`, `.../network-change` | optional `?client=IP` |
//! | `PUT /api/apps/{appid}/network` | body `{"profile":"3g","client":"IP"}` (client optional) |
//! | `PUT /api/skip-domain-check` | body `{"enabled":bool}` |
//! | `PUT /api/refusal` | body `{"style":"auto"|"fail"|"answer"}` (`sandbox.refusal` at run time) |
//! | `GET /api/log?limit=N&appid=&outcome=&q=` | the latest calls, newest first |
//! | `GET /api/events` | the same, live (server-sent events) |
//! | `GET /api/har` | the ring as HAR 1.2 |
//! | `GET /metrics` | Prometheus text |
//! | `GET /api/openapi.json` | this API in OpenAPI 3.1 (`src/control/openapi.json`, compiled in) |
//!
//! Before routing, every request is checked (SPEC section 6): its `Host` must name this control
//! address (the bound `ip:port` or the connection's local address, with or without the port),
//! `localhost` or a loopback IP, against DNS rebinding; a mutation (anything but GET and HEAD) must
//! not carry a cross-site `Origin` (`null` included) nor a `Content-Type` other than
//! `application/json`, against CSRF. Refusals are 403 `{"error": "..."}`. Then mutations need
//! `Authorization: Bearer {control.token}` when a token is set.
//!
//! `/api/log` and `/api/har` stream: their bodies are written a chunk at a time from a snapshot of
//! the ring's (shared, already compact) entries, never held whole.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, warn, Instrument};

mod config_api;
mod dashboard;
mod export;
mod handle;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::stream;
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::broadcast::error::RecvError;

use crate::calllog::Entry;
use crate::config::RefusalStyle;
use crate::instances::NetworkError;
use crate::state::Shared;
use crate::web::answer::status_only;
use crate::web::body::{full, Body};
use crate::web::certpage;
pub use handle::Handle;

/// The control API described in OpenAPI 3.1 (`GET /api/openapi.json`); tests/openapi.rs keeps
/// it and the router above in step.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Largest request body the control API reads.
const MAX_BODY: usize = 64 * 1024;

/// Serve the control API until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let shared = Handle::new(shared);
    let token = shared.shutdown().token.clone();
    let bound = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "control accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let shared = shared.clone();
        // The addresses a Host may name: the bound one, and this connection's own (the
        // interface it came in on when bound to 0.0.0.0 or ::).
        let own: Arc<[SocketAddr]> = bound.into_iter().chain(stream.local_addr().ok()).collect();
        let span = tracing::debug_span!("control", client.addr = %peer);
        shared.clone().shutdown().tracker.spawn(
            async move {
                let token = shared.shutdown().token.clone();
                let service = service_fn(move |req| route(req, shared.clone(), own.clone()));
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(crate::web::HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    result = conn.as_mut() => if let Err(e) = result { debug!(error = %e, "control connection error") },
                    () = token.cancelled() => { conn.as_mut().graceful_shutdown(); let _ = conn.await; }
                }
            }
            .instrument(span),
        );
    }
}

async fn route(
    req: Request<Incoming>,
    shared: Handle,
    own: Arc<[SocketAddr]>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mutation = !matches!(method, Method::GET | Method::HEAD);
    if let Err(why) = guard(&req, &own, mutation) {
        debug!(method = %method, path = %path, reason = %why, "control request refused");
        return Ok(json(
            StatusCode::FORBIDDEN,
            serde_json::json!({ "error": why }).to_string(),
        ));
    }
    if mutation && !authorized(&req, &shared) {
        let mut response = json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"a Bearer token is required"}"#.to_owned(),
        );
        response
            .headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return Ok(response);
    }
    let response = match (method, path.as_str()) {
        (Method::GET, "/healthz") => status_only(StatusCode::OK, "ok"),
        (Method::GET, "/ca.pem") => certpage::ca_pem(shared.ca()),
        (Method::GET, "/ca.crt") => certpage::ca_der(shared.ca()),
        (Method::GET, "/ca.mobileconfig") => certpage::ca_mobileconfig(shared.ca()),
        (Method::GET, "/" | "/index.html") => dashboard::page(),
        (Method::GET, "/qr.svg") => dashboard::qr_svg(&req),
        (Method::GET, "/api/state") => json(StatusCode::OK, state_json(&shared)),
        (Method::GET, "/api/openapi.json") => json(StatusCode::OK, OPENAPI.to_owned()),
        (Method::PUT, "/api/skip-domain-check") => set_skip(req, &shared).await,
        (Method::PUT, "/api/refusal") => set_refusal(req, &shared).await,
        (Method::GET, "/api/config") => config_api::get(&shared),
        (Method::POST, "/api/config/reload") => config_api::reload(&shared),
        (Method::GET, "/api/log") => log(&req, &shared),
        (Method::GET, "/api/events") => events(&shared),
        (Method::GET, "/api/har") => {
            let mut r = json_stream(
                export::har_head(),
                shared.log().snapshot(),
                export::har_entry,
                export::HAR_TAIL,
            );
            r.headers_mut().insert(
                http::header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"wxsandbox.har\""),
            );
            r
        }
        (Method::GET, "/metrics") => {
            let mut r = status_only(StatusCode::OK, "");
            *r.body_mut() = full(export::metrics(&shared));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (Method::PUT, p) if p.starts_with("/api/apps/") => set_network(req, p, &shared).await,
        (Method::POST, p) if p.starts_with("/api/apps/") => phase(&req, p, &shared),
        _ => status_only(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(response)
}

fn authorized<B>(req: &Request<B>, shared: &Handle) -> bool {
    let config = shared.config();
    let Some(token) = &config.control.token else {
        return true;
    };
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_json(req: Request<Incoming>) -> Result<serde_json::Value, String> {
    let bytes: Bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("can't read the body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("the body is not JSON: {e}"))
}

async fn set_skip(req: Request<Incoming>, shared: &Handle) -> Response<Body> {
    let enabled = match read_json(req).await {
        Ok(v) => v.get("enabled").and_then(serde_json::Value::as_bool),
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": e }).to_string(),
            )
        }
    };
    let Some(enabled) = enabled else {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"expected {\"enabled\":true|false}"}"#.to_owned(),
        );
    };
    shared.set_skip_domain_check(enabled);
    tracing::info!(skip_domain_check = enabled, "skip switch flipped");
    json(
        StatusCode::OK,
        serde_json::json!({ "skip_domain_check": enabled }).to_string(),
    )
}

/// `PUT /api/refusal` with `{"style":"auto"|"fail"|"answer"}`: the global refusal style
/// (`sandbox.refusal`) from now on; a call's header and an app's `refusal:` still come first.
async fn set_refusal(req: Request<Incoming>, shared: &Handle) -> Response<Body> {
    let style = match read_json(req).await {
        Ok(v) => v
            .get("style")
            .and_then(serde_json::Value::as_str)
            .and_then(|s| match s {
                "auto" | "fail" | "answer" => RefusalStyle::parse(s),
                _ => None,
            }),
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": e }).to_string(),
            )
        }
    };
    let Some(style) = style else {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"expected {\"style\":\"auto\"|\"fail\"|\"answer\"}"}"#.to_owned(),
        );
    };
    shared.set_refusal_style(style);
    tracing::info!(refusal = style.as_str(), "refusal style switched");
    json(
        StatusCode::OK,
        serde_json::json!({ "refusal": style.as_str() }).to_string(),
    )
}

/// One app of `GET /api/state`: its instances, and what its DNS prefetch gave.
#[derive(serde::Serialize)]
struct AppState {
    #[serde(flatten)]
    app: crate::instances::AppSnapshot,
    dns_prefetch: Vec<crate::prefetch::PrefetchResult>,
}

fn state_json(shared: &Handle) -> String {
    let apps: Vec<AppState> = shared
        .instances()
        .snapshot()
        .into_iter()
        .map(|app| AppState {
            dns_prefetch: shared.prefetch().get(&app.appid),
            app,
        })
        .collect();
    serde_json::json!({
        "skip_domain_check": shared.skip_domain_check(),
        "refusal": shared.refusal_style().as_str(),
        "apps": apps,
        "network_profiles": shared.config().network.names(),
        "config": shared.reload_status(),
    })
    .to_string()
}

/// A query parameter, percent-decoded.
fn query<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// `PUT /api/apps/{appid}/network` with `{"profile":"3g","client":"IP"}`: the profile of the
/// app's instances (of the one on `client` when given); 400 for an unknown profile, 404 for an
/// unknown app.
async fn set_network(req: Request<Incoming>, path: &str, shared: &Handle) -> Response<Body> {
    let bad = |e: String| {
        json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": e }).to_string(),
        )
    };
    let Some(appid) = path
        .strip_prefix("/api/apps/")
        .and_then(|r| r.strip_suffix("/network"))
        .filter(|a| !a.is_empty() && !a.contains('/'))
    else {
        return status_only(StatusCode::NOT_FOUND, "not found");
    };
    let body = match read_json(req).await {
        Ok(v) => v,
        Err(e) => return bad(e),
    };
    let Some(profile) = body.get("profile").and_then(serde_json::Value::as_str) else {
        return bad(r#"expected {"profile":"3g","client":"IP"} (client optional)"#.to_owned());
    };
    let client = match body.get("client") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_str().and_then(|t| t.parse::<IpAddr>().ok()) {
            Some(ip) => Some(ip.to_canonical()),
            None => return bad(format!("client {v} is not an IP address")),
        },
    };
    match shared.instances().set_network(appid, client, profile) {
        Ok(n) => {
            tracing::info!(app = appid, client = ?client, network = profile, instances = n, "network profile switched");
            json(
                StatusCode::OK,
                serde_json::json!({ "appid": appid, "network": profile, "instances": n })
                    .to_string(),
            )
        }
        Err(NetworkError::UnknownProfile(_)) => bad(format!(
            "no network profile {profile}: name one of {}",
            shared.config().network.names().join(", ")
        )),
        Err(e @ NetworkError::UnknownApp(_)) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": e.to_string() }).to_string(),
        ),
    }
}

/// `POST /api/apps/{appid}/background|foreground|network-change[?client=IP]`.
fn phase<B>(req: &Request<B>, path: &str, shared: &Handle) -> Response<Body> {
    let rest = path.trim_start_matches("/api/apps/");
    let Some((appid, action)) = rest.split_once('/') else {
        return status_only(StatusCode::NOT_FOUND, "not found");
    };
    let client =
        match query(req, "client") {
            None => None,
            Some(text) => match text.parse::<IpAddr>() {
                Ok(ip) => Some(ip.to_canonical()),
                Err(_) => return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({ "error": format!("client={text} is not an IP address") })
                        .to_string(),
                ),
            },
        };
    let result = match action {
        "background" => shared.instances().background(appid, client),
        "foreground" => shared.instances().foreground(appid, client),
        "network-change" => shared.instances().network_change(appid, client),
        _ => return status_only(StatusCode::NOT_FOUND, "not found"),
    };
    match result {
        Ok(n) => {
            tracing::info!(app = appid, client = ?client, state = action, instances = n, "app state changed");
            json(
                StatusCode::OK,
                serde_json::json!({ "appid": appid, "state": action, "instances": n }).to_string(),
            )
        }
        Err(e) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": e.to_string() }).to_string(),
        ),
    }
}

/// Does a record pass `/api/log`'s filters? (`text` is lower-case.)
fn keep(record: &Entry, appid: Option<&str>, outcome: Option<&str>, text: Option<&str>) -> bool {
    appid.is_none_or(|a| record.appid.as_deref() == Some(a))
        && outcome.is_none_or(|o| record.outcome.as_str() == o)
        && text.is_none_or(|t| {
            record.url.to_lowercase().contains(t)
                || record
                    .errmsg
                    .as_deref()
                    .is_some_and(|m| m.to_lowercase().contains(t))
                || record
                    .detail
                    .as_deref()
                    .is_some_and(|m| m.to_lowercase().contains(t))
        })
}

/// `GET /api/log?limit=N&appid=&outcome=&q=`: the latest matching records, newest first, as a
/// streamed JSON array.
fn log<B>(req: &Request<B>, shared: &Handle) -> Response<Body> {
    let limit = query(req, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100);
    let (appid, outcome) = (query(req, "appid"), query(req, "outcome"));
    let text = query(req, "q").map(|t| t.to_lowercase());
    let records: Vec<Arc<Entry>> = if appid.is_none() && outcome.is_none() && text.is_none() {
        shared.log().latest(limit)
    } else {
        shared
            .log()
            .latest(usize::MAX)
            .into_iter()
            .filter(|r| keep(r, appid.as_deref(), outcome.as_deref(), text.as_deref()))
            .take(limit)
            .collect()
    };
    json_stream(String::from("["), records, write_record, "]")
}

fn write_record(record: &Entry, out: &mut Vec<u8>) {
    // Plain data with string keys: serialising it can't fail.
    let _ = serde_json::to_writer(out, record);
}

/// Bytes a streamed chunk holds, about.
const CHUNK: usize = 32 * 1024;

/// A JSON body sent a chunk at a time: `head`, the entries written by `write` and joined by
/// commas, `tail`. Each entry's `Arc` is released once it is written. No Content-Length: chunked.
fn json_stream(
    head: String,
    entries: Vec<Arc<Entry>>,
    write: fn(&Entry, &mut Vec<u8>),
    tail: &'static str,
) -> Response<Body> {
    let mut head = Some(head);
    let mut tail = Some(tail);
    let mut entries = entries.into_iter();
    let mut first = true;
    let chunks = std::iter::from_fn(move || {
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        if let Some(h) = head.take() {
            buf.extend_from_slice(h.as_bytes());
        }
        while buf.len() < CHUNK {
            if let Some(entry) = entries.next() {
                if !first {
                    buf.push(b',');
                }
                first = false;
                write(&entry, &mut buf);
            } else {
                if let Some(t) = tail.take() {
                    buf.extend_from_slice(t.as_bytes());
                }
                break;
            }
        }
        (!buf.is_empty()).then(|| Bytes::from(buf))
    });
    let frames = stream::iter(chunks.map(|b| Ok::<_, crate::web::body::BoxError>(Frame::data(b))));
    let mut response = Response::new(crate::web::body::boxed(StreamBody::new(frames)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// How often an idle event stream gets a comment, so proxies and browsers keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// `GET /api/events`: one `data: {record}` per finished call, until shutdown.
fn events(shared: &Handle) -> Response<Body> {
    let rx = shared.log().subscribe();
    let token = shared.shutdown().token.clone();
    let frames = stream::unfold((rx, token), |(mut rx, token)| async move {
        loop {
            let next = tokio::select! {
                () = token.cancelled() => return None,
                next = tokio::time::timeout(KEEPALIVE, rx.recv()) => next,
            };
            let chunk = match next {
                Err(_) => ": keep-alive\n\n".to_owned(),
                Ok(Ok(record)) => {
                    let mut chunk = String::with_capacity(record.len() + 8);
                    chunk.push_str("data: ");
                    chunk.push_str(&String::from_utf8_lossy(&record));
                    chunk.push_str("\n\n");
                    chunk
                }
                Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Err(RecvError::Closed)) => return None,
            };
            let frame: Result<Frame<Bytes>, crate::web::body::BoxError> =
                Ok(Frame::data(Bytes::from(chunk)));
            return Some((frame, (rx, token)));
        }
    });
    let mut response = Response::new(crate::web::body::boxed(StreamBody::new(frames)));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

/// A header's value for a message, clipped.
fn shown(value: &HeaderValue) -> String {
    crate::calllog::clip_bytes(value.as_bytes(), 200).into()
}

/// A `host[:port]` authority: the host lower-case (an IP literal in its canonical text, IPv6
/// without brackets) and the port. `None` when it isn't one.
fn parse_authority(text: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let ip: std::net::Ipv6Addr = v6.parse().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (ip.to_string(), port)
    } else {
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        };
        if host.is_empty() || host.contains(':') {
            return None;
        }
        let host = match host.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => host.to_ascii_lowercase(),
        };
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// May a request name this host? `localhost` and loopback IPs on any port; one of `own`
/// addresses with its port or none.
fn allowed_host(host: &str, port: Option<u16>, own: &[SocketAddr]) -> bool {
    if host == "localhost" {
        return true;
    }
    let Ok(ip) = host.parse::<IpAddr>() else {
        return false;
    };
    let ip = ip.to_canonical();
    ip.is_loopback()
        || own
            .iter()
            .any(|a| a.ip().to_canonical() == ip && port.is_none_or(|p| p == a.port()))
}

/// The checks of SPEC section 6 made before routing: `Host` against DNS rebinding, and for a
/// mutation `Origin` and `Content-Type` against cross-site requests. `Err` says why.
fn guard<B>(req: &Request<B>, own: &[SocketAddr], mutation: bool) -> Result<(), String> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let (Some(host_value), None) = (hosts.next(), hosts.next()) else {
        return Err("one Host header naming the control address is required".to_owned());
    };
    let refused_host = || {
        format!(
            "Host {} is not this control address, localhost or a loopback IP (DNS rebinding protection)",
            shown(host_value)
        )
    };
    let (host, port) = host_value
        .to_str()
        .ok()
        .and_then(parse_authority)
        .filter(|(h, p)| allowed_host(h, *p, own))
        .ok_or_else(refused_host)?;
    // An absolute-form request target names its host too.
    if let Some(authority) = req.uri().authority() {
        let named = parse_authority(authority.as_str());
        if !named.is_some_and(|(h, p)| allowed_host(&h, p, own)) {
            return Err(format!(
                "{authority} is not this control address, localhost or a loopback IP (DNS rebinding protection)"
            ));
        }
    }
    if !mutation {
        return Ok(());
    }
    for origin in req.headers().get_all(http::header::ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| {
                let rest = o.get(..7).filter(|s| s.eq_ignore_ascii_case("http://"))?;
                parse_authority(&o[rest.len()..])
            })
            .is_some_and(|(h, p)| h == host && p.unwrap_or(80) == port.unwrap_or(80));
        if !same {
            return Err(format!(
                "Origin {} is not this page's origin: cross-site requests can't change anything here",
                shown(origin)
            ));
        }
    }
    for content_type in req.headers().get_all(CONTENT_TYPE) {
        let json = content_type.to_str().ok().is_some_and(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
        if !json {
            return Err(format!(
                "Content-Type {} is not application/json",
                shown(content_type)
            ));
        }
    }
    Ok(())
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
