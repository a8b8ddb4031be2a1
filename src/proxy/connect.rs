//! CONNECT: parse the authority, refuse what no list could allow (before anything is minted or
//! relayed), answer 200, then peek at the first bytes: TLS is intercepted, anything else is a
//! raw TCP socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tracing::{debug, Instrument};

use crate::policy::{self, Api, AppHints, Refusal, Verdict};
use crate::proxy::body::{empty, Body};
use crate::proxy::call::{outcome_of, record, CallMeta, End};
use crate::proxy::forward::APPID_HEADER;
use crate::proxy::headers::{get_str, head_size};
use crate::proxy::rewind::Rewind;
use crate::proxy::{answer, certpage, mitm, tunnel, ConnInfo, TunnelInfo, MAX_HEADER_BYTES};
use crate::state::Shared;

/// How long to wait for the client's first bytes in a tunnel. A client that says nothing first
/// (a server-first TCP protocol) gets a raw tunnel after this.
pub const PEEK_TIMEOUT: Duration = Duration::from_millis(500);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

pub(crate) fn handle(req: Request<Incoming>, conn: Arc<ConnInfo>) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return answer::status_only(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let Some(port) = authority.port_u16() else {
        return answer::status_only(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    // Normalised once: the same value is judged, minted for and routed (no trailing dot).
    let Some(host) = policy::normalize_target_host(authority.host()) else {
        return answer::status_only(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    if port == 0 {
        return answer::status_only(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    }
    let h = req.headers();
    let tunnel = TunnelInfo {
        host: host.clone(),
        port,
        proxy_authorization: get_str(h, "proxy-authorization").map(str::to_owned),
        appid_header: get_str(h, APPID_HEADER).map(str::to_owned),
    };
    debug!(target = %authority, authenticated = tunnel.proxy_authorization.is_some(), "CONNECT");
    let shared = conn.shared.clone();
    let size = head_size(&req);
    if size > MAX_HEADER_BYTES {
        let url = format!("https://{host}:{port}");
        let refusal = Refusal::head_too_large(Api::Request, &url, size, MAX_HEADER_BYTES);
        let meta = CallMeta::new(&shared, conn.client.ip(), "CONNECT", &url, h, req.version());
        return refuse_connect(&shared, meta, &refusal);
    }
    if host != certpage::CERT_HOST {
        let hints = AppHints {
            proxy_authorization: tunnel.proxy_authorization.as_deref(),
            appid_header: tunnel.appid_header.as_deref(),
            referer: None,
            client: conn.client.ip(),
        };
        // Without an app yet, the inner requests are identified (Referer, header) and judged.
        if let Some(app) = policy::identify_app(&shared.config, &hints) {
            if let Verdict::Refuse(refusal) =
                policy::judge_connect(app, conn.client.ip(), &host, port, shared.switches())
            {
                let mut meta = CallMeta::new(
                    &shared,
                    conn.client.ip(),
                    "CONNECT",
                    &refusal.url,
                    h,
                    req.version(),
                );
                meta.appid = Some(app.appid.clone());
                meta.api = refusal.api.as_str();
                return refuse_connect(&shared, meta, &refusal);
            }
        }
    }
    let on_upgrade = hyper::upgrade::on(req);
    let span = tracing::debug_span!("tunnel", target.host = %host, target.port = port);
    shared.shutdown.tracker.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => serve_tunnel(TokioIo::new(upgraded), conn, tunnel).await,
                Err(e) => debug!(error = %e, "CONNECT upgrade failed"),
            }
        }
        .instrument(span),
    );
    Response::new(empty())
}

/// A refusal known at the CONNECT: always answered (clients treat a refused tunnel as a
/// network error, whatever the style), logged and recorded.
fn refuse_connect(shared: &Shared, meta: CallMeta, refusal: &Refusal) -> Response<Body> {
    tracing::info!(app = meta.appid.as_deref().unwrap_or("-"), client = %meta.client,
        api = refusal.api.as_str(), url = %refusal.url, rule = refusal.rule.as_str(),
        errmsg = %refusal.errmsg, "refused at CONNECT");
    let response = answer::refusal(refusal, meta.appid.as_deref(), None);
    let end = End {
        status: Some(refusal.status),
        ..End::default()
    };
    record(shared, meta, outcome_of(refusal), Some(refusal), end);
    response
}

async fn serve_tunnel(
    mut io: TokioIo<hyper::upgrade::Upgraded>,
    conn: Arc<ConnInfo>,
    tunnel: TunnelInfo,
) {
    let mut first = vec![0u8; 4096];
    let n = match tokio::time::timeout(PEEK_TIMEOUT, io.read(&mut first)).await {
        Ok(Ok(0)) => return,
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            debug!(error = %e, "tunnel read failed");
            return;
        }
        Err(_) => 0,
    };
    first.truncate(n);
    let is_tls = first.first() == Some(&TLS_HANDSHAKE);
    let io = Rewind::new(Bytes::from(first), io);
    if is_tls {
        mitm::serve(io, conn, tunnel).await;
    } else {
        tunnel::relay_tcp(io, &conn, &tunnel).await;
    }
}
