//! CONNECT: parse the authority, refuse what no list could allow (before anything is minted or
//! relayed), answer 200, then peek at the first bytes: TLS is intercepted, anything else is a
//! raw TCP socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::{debug, Instrument};

use crate::config::AppConfig;
use crate::instances::Phase;
use crate::policy::{self, Api, AppHints, Refusal, Verdict};
use crate::proxy::admit::APPID_HEADER;
use crate::proxy::call::{outcome_of, record, CallMeta, End};
use crate::proxy::forward;
use crate::proxy::headers::{get_str, head_size};
use crate::proxy::rewind::Rewind;
use crate::proxy::{mitm, tunnel, ConnInfo, TunnelInfo, MAX_HEADER_BYTES};
use crate::state::Shared;
use crate::upstream::kept::Kept;
use crate::web::body::BoxError;
use crate::web::body::{empty, Body};
use crate::web::{answer, certpage};

/// How long to wait for the client's first bytes in a tunnel. A client that says nothing first
/// (a server-first TCP protocol) gets a raw tunnel after this.
pub const PEEK_TIMEOUT: Duration = Duration::from_millis(500);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// The service of the outer connection: CONNECT, or an absolute-form request.
pub(crate) async fn outer(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Result<Response<Body>, BoxError> {
    if req.method() == Method::CONNECT {
        let _busy = conn.activity.begin();
        return Ok(handle(req, conn));
    }
    forward::call(req, conn).await
}

pub(crate) fn handle(req: Request<Incoming>, conn: Arc<ConnInfo>) -> Response<Body> {
    let Some((host, port)) = authority(&req) else {
        return answer::status_only(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let h = req.headers();
    let proxy_authorization = get_str(h, http::header::PROXY_AUTHORIZATION);
    let tunnel = TunnelInfo {
        call_url: policy::tunnel_url(&host, port),
        host_header: crate::proxy::admit::host_header(&host, port, true),
        host,
        port,
        proxy_user: proxy_authorization.and_then(policy::proxy_user),
        proxy_authorization: proxy_authorization.map(str::to_owned),
        appid_header: get_str(h, APPID_HEADER).map(str::to_owned),
    };
    debug!(target.host = %tunnel.host, target.port = port,
        authenticated = tunnel.proxy_authorization.is_some(), "CONNECT");
    // Who the CONNECT says it is, once, for its verdict and for opening ahead.
    let config = conn.shared.config();
    let app = policy::identify_app(&config, &hints(&conn, &tunnel));
    if let Some(refusal) = judge(&req, &conn, &tunnel, app) {
        return refusal;
    }
    let on_upgrade = hyper::upgrade::on(req);
    let span = tracing::debug_span!("tunnel", target.host = %tunnel.host, target.port = port);
    let shared = conn.shared.clone();
    // The upstream connection, opened now when it may be: its handshake runs while the 200
    // goes out and the client's own handshake is under way.
    let kept = Kept::default();
    if opens_ahead(&conn, &tunnel, app) {
        let strict = !shared.skip_domain_check();
        let within = conn.deadlines().first;
        let (host, port) = (tunnel.host.clone(), tunnel.port);
        kept.open_ahead(shared.upstream(), strict, host, port, within);
    }
    shared.shutdown.tracker.spawn(
        async move {
            // Mint the leaf now, while the 200 goes out and the ClientHello comes in.
            if let Err(e) = conn.shared.leaves.server_config(&tunnel.host) {
                debug!(error = %e, "could not mint a leaf ahead of the handshake");
            }
            if let Some((io, read_past)) = client_socket(on_upgrade).await {
                serve_tunnel(io, read_past, conn, tunnel, kept).await;
            }
        }
        .instrument(span),
    );
    Response::new(empty())
}

/// Open the tunnel's upstream connection ahead of its first call? When the CONNECT names the
/// app, the policy lets this host be opened ahead ([`policy::may_open_ahead`]), and the app's
/// instance on this client is already running, in the foreground and online (a call it could
/// not make gets no connection).
fn opens_ahead(conn: &ConnInfo, tunnel: &TunnelInfo, app: Option<&AppConfig>) -> bool {
    let shared = &conn.shared;
    let Some(app) = app else {
        return false;
    };
    // The CA page is the proxy's own: nothing upstream to open.
    if tunnel.host == certpage::CERT_HOST
        || !policy::may_open_ahead(app, &tunnel.host, tunnel.port, shared.switches())
    {
        return false;
    }
    shared
        .instances
        .find(&app.appid, conn.client.ip())
        .is_some_and(|i| i.phase() == Phase::Foreground && i.link().profile.is_online())
}

/// What the CONNECT says of its app.
fn hints<'t>(conn: &ConnInfo, tunnel: &'t TunnelInfo) -> AppHints<'t> {
    AppHints {
        proxy_authorization: None,
        tunnel_user: tunnel.proxy_user.as_deref(),
        appid_header: tunnel.appid_header.as_deref(),
        referer: None,
        client: conn.client.ip(),
    }
}

/// The CONNECT's host (normalised once: judged, minted for and routed alike) and port.
fn authority(req: &Request<Incoming>) -> Option<(String, u16)> {
    let authority = req.uri().authority()?;
    let port = authority.port_u16().filter(|p| *p != 0)?;
    let host = policy::normalize_target_host(authority.host())?;
    Some((host, port))
}

/// The refusals known at the CONNECT: a head over the limit, and an authority no API of the
/// identified app could allow. Without an app yet, the inner requests are identified
/// (Referer, header) and judged one by one.
fn judge(
    req: &Request<Incoming>,
    conn: &ConnInfo,
    tunnel: &TunnelInfo,
    app: Option<&AppConfig>,
) -> Option<Response<Body>> {
    let shared = &conn.shared;
    let (host, port) = (&tunnel.host, tunnel.port);
    let meta = |url: &str| {
        CallMeta::new(
            shared,
            conn.client.ip(),
            &Method::CONNECT,
            Arc::from(url),
            req.headers(),
            req.version(),
        )
    };
    let size = head_size(req);
    if size > MAX_HEADER_BYTES {
        let url = format!("https://{host}:{port}");
        let refusal = Refusal::head_too_large(Api::Request, &url, size, MAX_HEADER_BYTES);
        return Some(refuse_connect(shared, meta(&url), &refusal));
    }
    if host == certpage::CERT_HOST {
        return None;
    }
    let app = app?;
    let verdict = policy::judge_connect(app, conn.client.ip(), host, port, shared.switches());
    let Verdict::Refuse(refusal) = verdict else {
        return None;
    };
    // A tunnel may carry a web-view page to any host: judged request by request.
    if !app.business_domains.is_empty() && refusal.rule != policy::Rule::ForbiddenHost {
        return None;
    }
    let mut meta = meta(&refusal.url);
    meta.appid = Some(app.id.clone());
    meta.api = refusal.api.as_str();
    Some(refuse_connect(shared, meta, &refusal))
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

/// The client's own socket back from hyper once the 200 is out, with what hyper read past the
/// CONNECT: every read and write of the tunnel then goes to it directly, not through the
/// upgrade's boxed stream and its rewinding reader.
async fn client_socket(on_upgrade: hyper::upgrade::OnUpgrade) -> Option<(TcpStream, Bytes)> {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            debug!(error = %e, "CONNECT upgrade failed");
            return None;
        }
    };
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => Some((parts.io.into_inner(), parts.read_buf)),
        Err(_) => {
            tracing::error!("CONNECT upgrade is not the accepted TCP stream");
            None
        }
    }
}

/// Serve a tunnel: its first bytes (what hyper read past the CONNECT, else one read) say TLS
/// (intercepted) or not (relayed as TCP), and are replayed to whichever reads it.
async fn serve_tunnel(
    mut io: TcpStream,
    read_past: Bytes,
    conn: Arc<ConnInfo>,
    tunnel: TunnelInfo,
    kept: Kept,
) {
    let first = if read_past.is_empty() {
        match first_bytes(&mut io).await {
            Some(first) => first,
            None => return,
        }
    } else {
        read_past
    };
    let is_tls = first.first() == Some(&TLS_HANDSHAKE);
    let io = Rewind::new(first, io);
    if is_tls {
        mitm::serve(io, conn, tunnel, kept).await;
    } else {
        tunnel::relay_tcp(io, &conn, &tunnel).await;
    }
}

/// The tunnel's first read, within [`PEEK_TIMEOUT`]: nothing when the client sent nothing by
/// then (a protocol whose server speaks first); `None` when it closed or the read failed.
async fn first_bytes(io: &mut TcpStream) -> Option<Bytes> {
    let mut first = vec![0u8; 4096];
    let n = match tokio::time::timeout(PEEK_TIMEOUT, io.read(&mut first)).await {
        Ok(Ok(0)) => return None,
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            debug!(error = %e, "tunnel read failed");
            return None;
        }
        Err(_) => 0,
    };
    first.truncate(n);
    Some(Bytes::from(first))
}
