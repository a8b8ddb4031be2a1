//! TLS interception: read the ClientHello, show a leaf for its SNI (or the CONNECT host when
//! there is none, e.g. an IP), then serve HTTP/1.1 or HTTP/2 (by ALPN) inside. The handshake
//! has the first-request deadline; the connection then has the idle deadline.

use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{debug, warn};

use crate::proxy::conn::{self, Activity, StreamExecutor};
use crate::proxy::{forward, ConnInfo, TunnelInfo, HYPER_HEADER_BUFFER};
use crate::upstream::kept::Kept;

/// HTTP/2 keep-alive: a PING this often on a connection, answered within the timeout.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// `kept`: the tunnel's upstream connection (maybe being opened already, see `connect`).
pub(crate) async fn serve<IO>(io: IO, conn: Arc<ConnInfo>, tunnel: TunnelInfo, kept: Kept)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let deadlines = conn.deadlines();
    let first = deadlines.first.min(deadlines.idle);
    let tls = match tokio::time::timeout(first, handshake(io, &conn, &tunnel.host)).await {
        Ok(Some(tls)) => tls,
        Ok(None) => return,
        Err(_) => {
            debug!("TLS handshake with the client timed out");
            return;
        }
    };
    // An HTTP/2 client's calls use the kept connection (the one opened ahead) while it is free;
    // those that overlap go through the shared pool (`forward::send`).
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let inner = Arc::new(ConnInfo {
        shared: conn.shared.clone(),
        client: conn.client,
        tunnel: Some(tunnel),
        activity: Arc::new(Activity::default()),
        slot: conn.slot.clone(),
        kept,
        last_instance: Default::default(),
    });
    let token = inner.shared.shutdown.token.clone();
    let activity = inner.activity.clone();
    let service = service_fn(move |req| forward::call(req, inner.clone()));
    let io = TokioIo::new(tls);
    if h2 {
        let mut builder = auto::Builder::new(StreamExecutor);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(HYPER_HEADER_BUFFER).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(H2_PING_INTERVAL))
            .keep_alive_timeout(H2_PING_TIMEOUT);
        let connection = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        let graceful = |c: Pin<&mut _>| auto::UpgradeableConnection::graceful_shutdown(c);
        conn::drive(connection, graceful, &activity, deadlines, &token).await;
        return;
    }
    // ALPN chose HTTP/1.1 (or nothing): hyper's HTTP/1.1 server itself, without the version
    // sniffing (and the rewinding reader on every read) of the automatic one.
    let connection = http1::Builder::new()
        // A response's header names reach the client as the server wrote them (a mini program
        // reads `res.header` by name, as production gives it); hyper lower-cases them.
        .preserve_header_case(true)
        .title_case_headers(true)
        .max_buf_size(HYPER_HEADER_BUFFER)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let graceful = |c: Pin<&mut _>| http1::UpgradeableConnection::graceful_shutdown(c);
    // HTTP/1.1's head deadline is the connection's (no timer armed per request by hyper).
    conn::drive(connection, graceful, &activity, deadlines.http1(), &token).await;
}

/// The ClientHello, a leaf for its SNI (or the CONNECT host), the handshake.
async fn handshake<IO>(io: IO, conn: &ConnInfo, host: &str) -> Option<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
        .await
        .map_err(|e| debug!(error = %e, "not a TLS ClientHello"))
        .ok()?;
    let sni = start.client_hello().server_name().map(str::to_owned);
    let name = sni.as_deref().unwrap_or(host);
    let config = conn
        .shared
        .leaves
        .server_config(name)
        .map_err(|e| warn!(error = %e, tls.sni = %name, "could not mint a leaf certificate"))
        .ok()?;
    // Usually the client doesn't trust the CA yet: tell the log reader how to fix it.
    start.into_stream(config).await.map_err(|e| {
        debug!(error = %e, tls.sni = %name, "TLS handshake with the client failed (does it trust the wxsandbox CA?)");
    }).ok()
}
