//! The upstream side: a connector that applies `upstream.map`, dials TCP with TCP_NODELAY,
//! speaks TLS with the strict (audited) or lax client config, and reports failures as the
//! platform's network errors; and the pooled hyper clients built on it.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{MapTarget, UpstreamConfig};
use crate::policy::{NetError, Rule};
use crate::tls::audit::{classify_handshake_error, Alpn, AuditError, FirstRecord, UpstreamTls};
use crate::web::body::Body;

pub mod kept;

/// How long a TCP connect to the upstream may take before it counts as failed. The call's own
/// timeout (rule 7) is usually shorter and wins.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle pooled connections are closed after this.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed upstream connection, classified: rule `upstream` (TCP, DNS) or `tls` (the audit).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:net::{} ({})", .net.code, .net.name, .net.detail)]
pub struct ConnectError {
    pub rule: Rule,
    pub net: NetError,
}

impl ConnectError {
    fn upstream(code: i32, name: &'static str, detail: String) -> Self {
        ConnectError {
            rule: Rule::Upstream,
            net: NetError { code, name, detail },
        }
    }

    /// Classify a TCP-level io error.
    pub fn from_io(err: &io::Error, what: &str) -> Self {
        let (code, name) = match err.kind() {
            io::ErrorKind::ConnectionRefused => (-102, "ERR_CONNECTION_REFUSED"),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                (-101, "ERR_CONNECTION_RESET")
            }
            io::ErrorKind::ConnectionAborted => (-103, "ERR_CONNECTION_ABORTED"),
            io::ErrorKind::TimedOut => (-118, "ERR_CONNECTION_TIMED_OUT"),
            io::ErrorKind::UnexpectedEof => (-324, "ERR_EMPTY_RESPONSE"),
            _ => (-104, "ERR_CONNECTION_FAILED"),
        };
        Self::upstream(code, name, format!("{what}: {err}"))
    }
}

/// The stream to an upstream server: plain TCP or TLS over TCP (watched for the server's first
/// record, to classify a handshake failure as Chromium does).
#[derive(Debug)]
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<FirstRecord<TcpStream>>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Plain(_) => Connected::new(),
            UpstreamStream::Tls(s) => {
                if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

/// Where a host is really dialed, after `upstream.map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dial_host: String,
    pub dial_port: u16,
    pub tls: bool,
}

/// `upstream.map` plus the default: the URL's own host and port.
#[derive(Debug, Default)]
pub struct HostMap {
    map: HashMap<String, MapTarget>,
}

impl HostMap {
    pub fn new(entries: &[(String, MapTarget)]) -> Self {
        HostMap {
            map: entries.iter().cloned().collect(),
        }
    }

    /// The route to `host:port`; `tls` says whether the URL's scheme wants TLS. The host is
    /// looked up as the policy judges it (and as the map's keys are kept): ASCII lower-case,
    /// trailing dot removed, so `API.example.com.` routes like `api.example.com`.
    pub fn route(&self, host: &str, port: u16, tls: bool) -> Route {
        // One dot, as `normalize_host` does: a host the policy judged as `api.example.com`
        // must never be dialed anywhere else.
        let key = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        match self.map.get(&key) {
            Some(MapTarget::PlainHttp { host, port }) => Route {
                dial_host: host.clone(),
                dial_port: *port,
                tls: false,
            },
            Some(MapTarget::Tls { host, port }) => Route {
                dial_host: host.clone(),
                dial_port: *port,
                tls,
            },
            None => Route {
                dial_host: host.to_owned(),
                dial_port: port,
                tls,
            },
        }
    }
}

/// Dial `host:port` with TCP_NODELAY, classifying DNS and TCP failures.
///
/// # Errors
/// The name doesn't resolve or no address accepts the connection.
pub async fn dial(
    host: &str,
    port: u16,
    forbidden: &[SocketAddr],
) -> Result<TcpStream, ConnectError> {
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host_for_lookup, port)).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            return Err(ConnectError::upstream(
                -105,
                "ERR_NAME_NOT_RESOLVED",
                format!("{host} could not be resolved: {e}"),
            ))
        }
    };
    let mut last = None;
    for addr in addrs {
        if is_forbidden(addr, forbidden) {
            last = Some(ConnectError {
                rule: Rule::ForbiddenHost,
                net: NetError {
                    code: -10,
                    name: "ERR_ACCESS_DENIED",
                    detail: format!("{host}:{port} ({addr}) is wxsandbox's own proxy or control port, which no call may reach through the proxy"),
                },
            });
            continue;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Small writes (TLS records, 64 KiB bodies in pieces) must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => {
                last = Some(ConnectError::from_io(
                    &e,
                    &format!("connect to {host}:{port} ({addr})"),
                ))
            }
            Err(_) => {
                last = Some(ConnectError::upstream(
                    -118,
                    "ERR_CONNECTION_TIMED_OUT",
                    format!(
                        "connect to {host}:{port} ({addr}) timed out after {CONNECT_TIMEOUT:?}"
                    ),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        ConnectError::upstream(
            -105,
            "ERR_NAME_NOT_RESOLVED",
            format!("{host} resolved to no address"),
        )
    }))
}

/// Is `addr` one of the proxy's own listening sockets (or reaches it: same port on a loopback
/// or unspecified address when the socket listens on one)?
pub fn is_forbidden(addr: SocketAddr, own: &[SocketAddr]) -> bool {
    let ip = addr.ip().to_canonical();
    own.iter().any(|o| {
        let oip = o.ip().to_canonical();
        o.port() == addr.port()
            && (ip == oip
                || ip.is_unspecified()
                || (ip.is_loopback() && (oip.is_loopback() || oip.is_unspecified())))
    })
}

/// The hyper-util connector: map, dial, TLS (SNI = the original host), audit.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<ConnectorInner>,
}

struct ConnectorInner {
    map: Arc<HostMap>,
    /// The proxy's own sockets (proxy and control ports), never dialed.
    own: Arc<std::sync::OnceLock<Vec<SocketAddr>>>,
    tls: Arc<rustls::ClientConfig>,
    audit: Option<Arc<UpstreamTls>>,
}

impl Connector {
    /// Connect to `host:port` (the URL's authority), TLS when `tls`.
    ///
    /// # Errors
    /// DNS, TCP, TLS handshake or audit failure, classified.
    pub async fn connect_to(
        &self,
        host: &str,
        port: u16,
        tls: bool,
    ) -> Result<UpstreamStream, ConnectError> {
        let route = self.inner.map.route(host, port, tls);
        let own = self.inner.own.get().map_or(&[][..], Vec::as_slice);
        let tcp = dial(&route.dial_host, route.dial_port, own).await?;
        if !route.tls {
            return Ok(UpstreamStream::Plain(tcp));
        }
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name = rustls::pki_types::ServerName::try_from(bare).map_err(|e| {
            ConnectError::upstream(
                -105,
                "ERR_NAME_NOT_RESOLVED",
                format!("{host} is not a valid server name: {e}"),
            )
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.inner.tls.clone());
        let stream = match connector
            .connect(server_name, FirstRecord::new(tcp))
            .into_fallible()
            .await
        {
            Ok(s) => s,
            Err((e, watched)) => {
                let net = classify_handshake_error(&e, watched.alert_first());
                let rule = if is_tls_code(net.code) {
                    Rule::Tls
                } else {
                    Rule::Upstream
                };
                return Err(ConnectError { rule, net });
            }
        };
        if let Some(audit) = &self.inner.audit {
            if let Err(net) = audit.check_session(stream.get_ref().1) {
                return Err(ConnectError {
                    rule: Rule::Tls,
                    net,
                });
            }
        }
        Ok(UpstreamStream::Tls(Box::new(stream)))
    }
}

/// Chromium's certificate and TLS version errors, as opposed to connection errors.
fn is_tls_code(code: i32) -> bool {
    (-299..=-200).contains(&code) || code == -113 || code == -107
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tls = matches!(uri.scheme_str(), Some("https" | "wss"));
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            this.connect_to(&host, port, tls).await.map(TokioIo::new)
        })
    }
}

pub type HttpClient = Client<Connector, Body>;

/// The pooled clients: strict (audited) and lax, each for ordinary calls (h2 or HTTP/1.1 by ALPN)
/// and for WebSocket upgrades (HTTP/1.1 only). Separate pools, so a connection made while the
/// skip switch was on is never reused once it is off.
pub struct Upstream {
    strict: HttpClient,
    strict_ws: HttpClient,
    lax: HttpClient,
    lax_ws: HttpClient,
    strict_connector: Connector,
    lax_connector: Connector,
    own: Arc<std::sync::OnceLock<Vec<SocketAddr>>>,
    map: Arc<HostMap>,
    /// Connections kept by tunnels ([`kept::KEPT_MAX`] at most).
    kept: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

impl Upstream {
    /// # Errors
    /// A trust file can't be read.
    pub fn new(config: &UpstreamConfig) -> Result<Self, AuditError> {
        let tls = Arc::new(UpstreamTls::new(&config.trust)?);
        let map = Arc::new(HostMap::new(&config.map));
        let own = Arc::new(std::sync::OnceLock::new());
        let strict_audit = config.strict_tls;
        let connector = |strict: bool, alpn: Alpn| Connector {
            inner: Arc::new(ConnectorInner {
                map: map.clone(),
                own: own.clone(),
                tls: tls.client_config(strict, alpn),
                audit: strict.then(|| tls.clone()),
            }),
        };
        let strict_connector = connector(strict_audit, Alpn::H2AndHttp11);
        let lax_connector = connector(false, Alpn::H2AndHttp11);
        Ok(Upstream {
            strict: build_client(strict_connector.clone()),
            strict_ws: build_client(connector(strict_audit, Alpn::Http11)),
            lax: build_client(lax_connector.clone()),
            lax_ws: build_client(connector(false, Alpn::Http11)),
            strict_connector,
            lax_connector,
            own,
            map,
            kept: Arc::default(),
        })
    }

    /// Where `host:port` is dialed, after `upstream.map` (as every call is routed).
    pub fn route(&self, host: &str, port: u16, tls: bool) -> Route {
        self.map.route(host, port, tls)
    }

    /// The proxy's own listening sockets, which no call may reach (set once, after binding).
    pub fn forbid(&self, own: Vec<SocketAddr>) {
        let _ = self.own.set(own);
    }

    /// The sockets set by [`Upstream::forbid`] (for the clients of a reloaded config).
    pub fn forbidden(&self) -> Vec<SocketAddr> {
        self.own.get().cloned().unwrap_or_default()
    }

    /// The client for a call: `strict` unless the skip switch is on; `websocket` for upgrades.
    pub fn client(&self, strict: bool, websocket: bool) -> &HttpClient {
        match (strict, websocket) {
            (true, false) => &self.strict,
            (true, true) => &self.strict_ws,
            (false, false) => &self.lax,
            (false, true) => &self.lax_ws,
        }
    }

    /// The connector, for raw tunnels.
    pub fn connector(&self, strict: bool) -> &Connector {
        if strict {
            &self.strict_connector
        } else {
            &self.lax_connector
        }
    }
}

/// Idle upstream connections kept per host (`POOL_IDLE_TIMEOUT` closes them sooner).
pub const POOL_MAX_IDLE_PER_HOST: usize = 64;

fn build_client(connector: Connector) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        // Idle upstream connections kept per host: enough for a busy phone's calls and more,
        // not one per tunnel that ever called (1,000 tunnels kept 1,000 TLS sessions idle).
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http1_preserve_header_case(true)
        .http1_title_case_headers(true)
        .build(connector)
}

/// Find our classification in a hyper-util client error, or classify what hyper saw.
pub fn classify_client_error(err: &hyper_util::client::legacy::Error) -> ConnectError {
    classify_error(err)
}

/// Find our classification in an error's chain, or classify what hyper or the socket saw.
pub fn classify_error(err: &(dyn std::error::Error + 'static)) -> ConnectError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return c.clone();
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return ConnectError::upstream(
                    -324,
                    "ERR_EMPTY_RESPONSE",
                    "the server closed the connection without sending a response".to_owned(),
                );
            }
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return ConnectError::from_io(io, "upstream connection");
        }
        source = e.source();
    }
    ConnectError::upstream(
        -101,
        "ERR_CONNECTION_RESET",
        format!("upstream connection failed: {err}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> HostMap {
        HostMap::new(&[
            (
                "api.example.com".to_owned(),
                MapTarget::Tls {
                    host: "127.0.0.1".to_owned(),
                    port: 8443,
                },
            ),
            (
                "plain.example.com".to_owned(),
                MapTarget::PlainHttp {
                    host: "backend".to_owned(),
                    port: 8080,
                },
            ),
        ])
    }

    #[test]
    fn route_normalises_the_host_as_the_policy_does() {
        let map = map();
        let mapped = Route {
            dial_host: "127.0.0.1".to_owned(),
            dial_port: 8443,
            tls: true,
        };
        for host in [
            "api.example.com",
            "api.example.com.",
            "API.Example.COM",
            "Api.Example.Com.",
        ] {
            assert_eq!(map.route(host, 443, true), mapped, "{host}");
        }
        // Two dots are another name (WHATWG keeps them; the policy refuses it as a host).
        assert_ne!(map.route("api.example.com..", 443, true), mapped);
        assert_eq!(
            map.route("PLAIN.example.com.", 443, true),
            Route {
                dial_host: "backend".to_owned(),
                dial_port: 8080,
                tls: false,
            }
        );
        // Unmapped hosts are dialed as given.
        for host in ["other.example.com.", "xapi.example.com", "api.example.co"] {
            assert_eq!(
                map.route(host, 8443, true),
                Route {
                    dial_host: host.to_owned(),
                    dial_port: 8443,
                    tls: true,
                },
                "{host}"
            );
        }
    }
}
