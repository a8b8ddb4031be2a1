//! The control port (`control.listen`): health, the CA for download, state and switches.
//!
//! | method, path | what |
//! |---|---|
//! | `GET /healthz` | 200 `ok` |
//! | `GET /ca.pem`, `GET /ca.crt` | the CA, PEM and DER |
//! | `GET /` | the dashboard (assets compiled in) |
//! | `GET /api/state` | the skip switch and every app instance with its counts |
//! | `POST /api/apps/{appid}/background`, `.../foreground` | optional `?client=IP` |
//! | `PUT /api/skip-domain-check` | body `{"enabled":bool}` |
//! | `GET /api/log?limit=N&appid=&outcome=&q=` | the latest calls, newest first |
//! | `GET /api/events` | the same, live (server-sent events) |
//! | `GET /api/har` | the ring as HAR 1.2 |
//! | `GET /metrics` | Prometheus text |
//!
//! Mutations need `Authorization: Bearer {control.token}` when a token is set.

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

mod dashboard;
mod export;

use std::net::IpAddr;
use std::time::Duration;

use futures_util::stream;
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::broadcast::error::RecvError;

use crate::calllog::Record;
use crate::proxy::answer::status_only;
use crate::proxy::body::{full, Body};
use crate::proxy::certpage;
use crate::state::Shared;

/// Largest request body the control API reads.
const MAX_BODY: usize = 64 * 1024;

/// Serve the control API until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let token = shared.shutdown.token.clone();
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
        let span = tracing::debug_span!("control", client.addr = %peer);
        shared.clone().shutdown.tracker.spawn(
            async move {
                let token = shared.shutdown.token.clone();
                let service = service_fn(move |req| route(req, shared.clone()));
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(crate::proxy::HEADER_READ_TIMEOUT)
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

async fn route(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mutation = !matches!(method, Method::GET | Method::HEAD);
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
        (Method::GET, "/ca.pem") => certpage::ca_pem(&shared),
        (Method::GET, "/ca.crt") => certpage::ca_der(&shared),
        (Method::GET, "/" | "/index.html") => dashboard::page(),
        (Method::GET, "/qr.svg") => dashboard::qr_svg(&req),
        (Method::GET, "/api/state") => json(StatusCode::OK, state_json(&shared)),
        (Method::PUT, "/api/skip-domain-check") => set_skip(req, &shared).await,
        (Method::GET, "/api/log") => json(StatusCode::OK, log_json(&req, &shared)),
        (Method::GET, "/api/events") => events(&shared),
        (Method::GET, "/api/har") => {
            let mut r = json(StatusCode::OK, export::har(&shared.log.latest(usize::MAX)));
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
        (Method::POST, p) if p.starts_with("/api/apps/") => phase(&req, p, &shared),
        _ => status_only(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(response)
}

fn authorized<B>(req: &Request<B>, shared: &Shared) -> bool {
    let Some(token) = &shared.config.control.token else {
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

async fn set_skip(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
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

fn state_json(shared: &Shared) -> String {
    serde_json::json!({
        "skip_domain_check": shared.skip_domain_check(),
        "apps": shared.instances.snapshot(),
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

/// `POST /api/apps/{appid}/background|foreground[?client=IP]`.
fn phase<B>(req: &Request<B>, path: &str, shared: &Shared) -> Response<Body> {
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
        "background" => shared.instances.background(appid, client),
        "foreground" => shared.instances.foreground(appid, client),
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

/// Does a record pass `/api/log`'s filters?
fn keep(record: &Record, appid: Option<&str>, outcome: Option<&str>, text: Option<&str>) -> bool {
    appid.is_none_or(|a| record.appid.as_deref() == Some(a))
        && outcome.is_none_or(|o| record.outcome.as_str() == o)
        && text.is_none_or(|t| {
            let t = t.to_lowercase();
            record.url.to_lowercase().contains(&t)
                || record
                    .errmsg
                    .as_deref()
                    .is_some_and(|m| m.to_lowercase().contains(&t))
                || record
                    .detail
                    .as_deref()
                    .is_some_and(|m| m.to_lowercase().contains(&t))
        })
}

fn log_json<B>(req: &Request<B>, shared: &Shared) -> String {
    let limit = query(req, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100);
    let (appid, outcome, text) = (query(req, "appid"), query(req, "outcome"), query(req, "q"));
    let records: Vec<Record> = shared
        .log
        .latest(usize::MAX)
        .into_iter()
        .filter(|r| keep(r, appid.as_deref(), outcome.as_deref(), text.as_deref()))
        .take(limit)
        .collect();
    serde_json::to_string(&records).unwrap_or_else(|_| "[]".to_owned())
}

/// How often an idle event stream gets a comment, so proxies and browsers keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// `GET /api/events`: one `data: {record}` per finished call, until shutdown.
fn events(shared: &Shared) -> Response<Body> {
    let rx = shared.log.subscribe();
    let token = shared.shutdown.token.clone();
    let frames = stream::unfold((rx, token), |(mut rx, token)| async move {
        loop {
            let next = tokio::select! {
                () = token.cancelled() => return None,
                next = tokio::time::timeout(KEEPALIVE, rx.recv()) => next,
            };
            let chunk = match next {
                Err(_) => ": keep-alive\n\n".to_owned(),
                Ok(Ok(record)) => format!(
                    "data: {}\n\n",
                    serde_json::to_string(&record).unwrap_or_default()
                ),
                Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Err(RecvError::Closed)) => return None,
            };
            let frame: Result<Frame<Bytes>, crate::proxy::body::BoxError> =
                Ok(Frame::data(Bytes::from(chunk)));
            return Some((frame, (rx, token)));
        }
    });
    let mut response = Response::new(crate::proxy::body::boxed(StreamBody::new(frames)));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
