//! The proxy's I/O: the accept loop, one task per client connection, CONNECT and interception,
//! forwarding, WebSocket relays and raw tunnels. Decisions come from [`crate::policy`].
//!
//! ```text
//! accept ─ clients CIDR? ─ HTTP/1.1 ─┬─ absolute-form http:// ─────────────── forward
//!                                    └─ CONNECT ─ judge_connect ─ 200 ─ peek ─┬─ TLS: mitm ─ h1/h2 ─ forward / ws
//!                                                                              └─ other: tunnel (tcp list)
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn, Instrument};

use crate::state::Shared;

pub mod answer;
pub mod body;
mod call;
pub mod certpage;
mod connect;
pub mod decode;
pub mod forward;
pub mod headers;
mod mitm;
pub mod rewind;
mod tunnel;
pub mod upstream;
mod ws;
pub mod wsframes;

/// A client has this long to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head accepted; larger gets 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// One client connection.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub shared: Arc<Shared>,
    pub client: SocketAddr,
    /// Set inside an intercepted CONNECT tunnel.
    pub tunnel: Option<TunnelInfo>,
}

/// What the CONNECT said: where, and who (phones authenticate on the CONNECT only).
#[derive(Debug, Clone)]
pub(crate) struct TunnelInfo {
    /// Lower-case; IPv6 literals keep their brackets.
    pub host: String,
    pub port: u16,
    pub proxy_authorization: Option<String>,
    pub appid_header: Option<String>,
}

/// Accept clients until shutdown. Connections from outside `proxy.clients` are closed at once.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let token = shared.shutdown.token.clone();
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                if !shared
                    .config
                    .proxy
                    .clients
                    .iter()
                    .any(|net| net.contains(&peer.ip()))
                {
                    debug!(client.addr = %peer, "closed: client outside proxy.clients");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let span = tracing::info_span!("conn", client.addr = %peer);
                shared
                    .shutdown
                    .tracker
                    .spawn(serve_connection(stream, peer, shared.clone()).instrument(span));
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                // Out of file descriptors and the like: don't spin, don't give up.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn serve_connection(stream: TcpStream, client: SocketAddr, shared: Arc<Shared>) {
    let token = shared.shutdown.token.clone();
    let conn = Arc::new(ConnInfo {
        shared,
        client,
        tunnel: None,
    });
    let service = service_fn(move |req| forward::handle(req, conn.clone()));
    let connection = http1::Builder::new()
        .preserve_header_case(true)
        .title_case_headers(true)
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!(error = %e, "client connection ended with an error");
            }
        }
        () = token.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
