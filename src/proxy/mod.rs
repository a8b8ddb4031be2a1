//! The proxy's I/O: the accept loop, one task per client connection, CONNECT and interception,
//! forwarding, WebSocket relays and raw tunnels. Decisions come from [`crate::policy`].
//!
//! ```text
//! accept ─ clients CIDR? ─ HTTP/1.1 ─┬─ absolute-form http:// ─────────────── forward
//!                                    └─ CONNECT ─ judge_connect ─ 200 ─ peek ─┬─ TLS: mitm ─ h1/h2 ─ forward / ws
//!                                                                              └─ other: tunnel (tcp list)
//! ```

use crate::upstream::kept::Kept;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn, Instrument};

use crate::proxy::conn::{Activity, ConnSlot, Deadlines};
use crate::state::Shared;

mod admit;
mod call;
mod conn;
mod connect;
pub mod decode;
pub mod forward;
pub mod headers;
mod mitm;
mod quiet;
mod refuse;
pub mod rewind;
mod seen;
mod shape;
mod tunnel;
mod ws;
pub mod wsframes;

/// Largest request head accepted (outer and inner, HTTP/1.1 and HTTP/2); larger gets 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// What hyper itself buffers for a head: above [`MAX_HEADER_BYTES`], so that the proxy sees a
/// too-large head and answers it with its refusal instead of hyper's bare 431.
pub const HYPER_HEADER_BUFFER: usize = 4 * MAX_HEADER_BYTES;

/// One client connection.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub shared: Arc<Shared>,
    pub client: SocketAddr,
    /// Set inside an intercepted CONNECT tunnel.
    pub tunnel: Option<TunnelInfo>,
    pub activity: Arc<Activity>,
    /// Its place under `proxy.max_connections`.
    pub slot: Arc<ConnSlot>,
    /// Inside a tunnel: the upstream connection its HTTP/1.1 calls go over.
    pub kept: Kept,
    /// The instance its last call ran in (see [`crate::instances::Instances::get_via`]).
    pub last_instance: crate::instances::LastInstance,
}

impl ConnInfo {
    /// The deadlines of this connection, from the config.
    pub fn deadlines(&self) -> Deadlines {
        let config = self.shared.config();
        let p = &config.proxy;
        Deadlines {
            first: p.header_timeout,
            idle: p.idle_timeout,
        }
    }
}

/// What the CONNECT said: where, and who (phones authenticate on the CONNECT only).
#[derive(Debug, Clone)]
pub(crate) struct TunnelInfo {
    /// Normalised once (lower-case, no trailing dot, IPv6 in brackets): judged and routed alike.
    pub host: String,
    pub port: u16,
    pub proxy_authorization: Option<String>,
    /// The user name of `proxy_authorization`, decoded once for every call in the tunnel.
    pub proxy_user: Option<String>,
    pub appid_header: Option<String>,
    /// `https://host[:port]` as parsed for the policy, once for every call in the tunnel.
    pub call_url: Option<crate::policy::CallUrl>,
    /// `host[:port]`, the Host header of every call in the tunnel.
    pub host_header: Option<http::HeaderValue>,
}

/// Accept clients until shutdown. Connections from outside `proxy.clients` are closed at once;
/// beyond `proxy.max_connections`, new ones get a one-line refusal and are closed.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let token = shared.shutdown.token.clone();
    let slots = Arc::new(Semaphore::new(shared.config().proxy.max_connections));
    let last_warning = AtomicU64::new(0);
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                if !shared
                    .config()
                    .proxy
                    .clients
                    .iter()
                    .any(|net| net.contains(&peer.ip()))
                {
                    debug!(client.addr = %peer, "closed: client outside proxy.clients");
                    continue;
                }
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    refuse_over_capacity(&stream, peer, &shared, &last_warning);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                // A debug span: entered on every poll of the connection when enabled, so it
                // costs nothing at the default level (call lines name their client anyway).
                let span = tracing::debug_span!("conn", client.addr = %peer);
                let slot = Arc::new(ConnSlot(permit));
                shared
                    .shutdown
                    .tracker
                    .spawn(serve_connection(stream, peer, shared.clone(), slot).instrument(span));
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

/// The answer of a connection over `proxy.max_connections`: written without waiting (the
/// socket's buffer takes it), then the connection is closed. Logged at most once a second.
fn refuse_over_capacity(stream: &TcpStream, peer: SocketAddr, shared: &Shared, last: &AtomicU64) {
    const BODY: &str = r#"{"error":"wxsandbox: too many client connections (proxy.max_connections); retry when one closes"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    let now = shared.started.elapsed().as_secs();
    if last.swap(now, Ordering::Relaxed) != now {
        warn!(client.addr = %peer, limit = shared.config().proxy.max_connections,
            "refused a client connection: proxy.max_connections are open");
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

async fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    shared: Arc<Shared>,
    slot: Arc<ConnSlot>,
) {
    let token = shared.shutdown.token.clone();
    let conn = Arc::new(ConnInfo {
        shared,
        client,
        tunnel: None,
        activity: Arc::new(Activity::default()),
        slot,
        kept: Kept::default(),
        last_instance: Default::default(),
    });
    let deadlines = conn.deadlines();
    let activity = conn.activity.clone();
    let service_conn = conn.clone();
    let service = service_fn(move |req| connect::outer(req, service_conn.clone()));
    let connection = http1::Builder::new()
        .preserve_header_case(true)
        .title_case_headers(true)
        .max_buf_size(HYPER_HEADER_BUFFER)
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.first)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    conn::drive(
        connection,
        |c| c.graceful_shutdown(),
        &activity,
        deadlines,
        &token,
    )
    .await;
}
