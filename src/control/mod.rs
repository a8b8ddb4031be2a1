//! The control port (`control.listen`): health, the CA for download, state and switches.
//!
//! | method, path | what |
//! |---|---|
//! | `GET /healthz` | 200 `ok` |
//! | `GET /ca.pem`, `GET /ca.crt` | the CA, PEM and DER |
//! | `GET /api/state` | the skip switch and the apps |
//! | `PUT /api/skip-domain-check` | body `{"enabled":bool}` |
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
        (Method::GET, "/api/state") => json(StatusCode::OK, state_json(&shared)),
        (Method::PUT, "/api/skip-domain-check") => set_skip(req, &shared).await,
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
    let apps: Vec<serde_json::Value> = shared
        .config
        .apps
        .iter()
        .map(|app| serde_json::json!({ "appid": app.appid, "instances": [] }))
        .collect();
    serde_json::json!({ "skip_domain_check": shared.skip_domain_check(), "apps": apps }).to_string()
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
