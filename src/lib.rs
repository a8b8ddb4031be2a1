//! wxsandbox: a local HTTPS/WSS forward proxy that puts the WeChat mini program network sandbox
//! between a client (phone, simulator, H5 build, test harness) and the internet.
//!
//! # Layout
//!
//! Data flows one way: **config → policy → proxy / control**.
//!
//! - [`config`]: the YAML file, loaded into raw serde structs and validated into typed values
//!   (bounded reads; every finding with file, line and rule; the project-folder import).
//! - [`policy`]: pure decisions (no I/O, no clock): which app, which API, the URL as browsers
//!   parse it, rules 1-4, the CONNECT-level check, web-view navigations, the timeout, the
//!   refusal style, and what a refusal looks like.
//! - [`tls`]: the local CA and leaf cache (client side), the upstream TLS client and its audit.
//! - [`proxy`]: the I/O: accept loop and connection deadlines (`conn`), CONNECT (`connect`),
//!   interception (`mitm`), a call's stages (`admit`, with `seen`'s one pass over the request
//!   head, → `forward` → `call`'s watchdog), refusals
//!   (`refuse`), WebSocket (`ws`, `wsframes`), TCP tunnels (`tunnel`), network shaping
//!   (`shape`), response decoding (`decode`), header hygiene (`headers`), a tunnel's first
//!   bytes replayed (`rewind`), rare waits polled only once they may have fired (`quiet`).
//! - [`upstream`]: the upstream clients and connectors (DNS, `upstream.map`, the proxy's own
//!   sockets refused, TLS with the audit), swapped whole on reload; a tunnel's own kept
//!   upstream connection (`kept`).
//! - [`web`]: HTTP plumbing below proxy and control: the body type, answers and refusal pages,
//!   the CA page (`http://wxsandbox.cert/`).
//! - [`control`]: the control API, dashboard, config endpoints and CA download on
//!   `control.listen`; it sees the proxy through a narrow [`control::Handle`].
//! - [`instances`]: app instances (appid, client IP): slots, queue, background phase, network;
//!   what calls in flight wait for to be cut (`cuts`).
//! - [`calllog`]: the call log ring (bounded in count and bytes, each record written into the
//!   memory of the one it evicts), live feed and counters.
//! - [`state`]: what connections and the control API share (config and upstream, swapped
//!   whole on reload; switches; CA; log; instances).
//! - [`reload`]: config edits without a restart (file watch, SIGHUP, endpoint).
//! - [`resend`]: one record for a refused call a browser resends by itself.
//! - [`check_cert`]: the `check-cert` command. [`cli`]: the command line. [`telemetry`]: logs.
//! - [`prefetch`]: the DNS prefetch of each app's `domains.dns_prefetch` hosts, at start and
//!   on every config reload.
//! - [`shutdown`]: one cancellation token and one task tracker for a bounded drain.

pub mod calllog;
pub mod check_cert;
pub mod cli;
pub mod config;
pub mod control;
pub mod instances;
pub mod policy;
pub mod prefetch;
pub mod proxy;
pub mod reload;
pub mod resend;
pub mod shutdown;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::state::Shared;
use crate::tls::ca::{CaError, CertificateAuthority};
use crate::tls::leaf::{LeafCache, DEFAULT_CAPACITY};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    #[error("upstream trust: {0}")]
    Trust(#[from] tls::audit::AuditError),
    #[error("can't listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("control.listen {0} is not a loopback address: set control.token (or --token) so that nobody else can flip switches")]
    ControlWithoutToken(SocketAddr),
}

/// A running proxy: its bound addresses and the handle that stops it.
#[derive(Debug)]
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub control_addr: SocketAddr,
    pub shared: Arc<Shared>,
}

impl Running {
    /// Stop accepting, ask every connection to finish, and wait at most `grace`;
    /// `false` when some were still running.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.shared.shutdown.trigger();
        self.shared.shutdown.drain(grace).await
    }
}

/// Make or load the CA, bind both ports and serve. Everything that can fail does so before any
/// port is bound, except binding itself.
///
/// # Errors
/// The CA can't be made or loaded, a trust file is bad, or a port can't be bound.
pub async fn start(config: Config) -> Result<Running, StartError> {
    if !config.control.listen.ip().is_loopback() && config.control.token.is_none() {
        return Err(StartError::ControlWithoutToken(config.control.listen));
    }
    let ca = CertificateAuthority::load_or_create(&config.ca.dir)?;
    let leaves = LeafCache::new(&ca, DEFAULT_CAPACITY)?;
    let mut config = config;
    config.proxy.max_connections = fit_descriptors(config.proxy.max_connections);
    let upstream = upstream::Upstream::new(&config.upstream)?;
    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let proxy_listener = bind("proxy", config.proxy.listen).await?;
    let control_listener = bind("control", config.control.listen).await?;
    let proxy_addr = proxy_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            what: "proxy",
            addr: config.proxy.listen,
            source,
        })?;
    let control_addr = control_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            what: "control",
            addr: config.control.listen,
            source,
        })?;
    upstream.forbid(vec![proxy_addr, control_addr]);
    let shutdown = Shutdown::new();
    let shared = Arc::new(Shared::new(config, ca, leaves, upstream, shutdown.clone()));
    shutdown
        .tracker
        .spawn(proxy::serve(proxy_listener, shared.clone()));
    shutdown
        .tracker
        .spawn(control::serve(control_listener, shared.clone()));
    let prefetching = shared.clone();
    shutdown
        .tracker
        .spawn(async move { prefetching.prefetch_dns().await });
    Ok(Running {
        proxy_addr,
        control_addr,
        shared,
    })
}

/// Raise the open-files limit to its hard limit, and keep the connection cap well under it
/// (each client connection may hold an upstream socket too).
fn fit_descriptors(wanted: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let room = usize::try_from(limit.saturating_sub(128) / 2).unwrap_or(usize::MAX);
    let cap = wanted.min(room.max(16));
    if cap < wanted {
        tracing::warn!(
            proxy.max_connections = wanted,
            open_files = limit,
            using = cap,
            "proxy.max_connections lowered to fit the open-files limit"
        );
    }
    cap
}
