//! A tunnel's own upstream connection. An intercepted HTTP/1.1 connection sends one call at a
//! time, always to the host its CONNECT named: it keeps the upstream connection its first call
//! opened (or the one opened ahead at its CONNECT) and sends the next calls over it, with no
//! shared pool to check out from and return to, and no task per call waiting for the connection
//! to be idle again. An HTTP/2 client's tunnel uses the connection opened ahead the same way while
//! it is free; its calls that overlap go through the shared pool, and it opens no other.
//!
//! At most [`KEPT_MAX`] connections are kept at once (idle tunnels must not hold an upstream
//! connection each); a tunnel beyond that and plain-HTTP proxy requests use the shared pools.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::oneshot;
use tracing::debug;

use super::{classify_error, ConnectError, Upstream};
use crate::web::body::Body;

/// Upstream connections kept by tunnels, all tunnels together.
pub const KEPT_MAX: usize = 128;

/// The upstream connection of one tunnel, when it keeps one.
#[derive(Default)]
pub struct Kept {
    conn: Mutex<Option<KeptConn>>,
    /// The connection being opened ahead of the first call ([`Kept::open_ahead`]): that call
    /// waits for it rather than opening another.
    ahead: Mutex<Option<Ahead>>,
}

/// A connection being opened ahead, and the clients it is opened with.
struct Ahead {
    upstream: Arc<Upstream>,
    strict: bool,
    opened: oneshot::Receiver<Result<KeptConn, ConnectError>>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept").finish_non_exhaustive()
    }
}

struct KeptConn {
    sender: Sender,
    /// The clients it was made for: a reload or the skip switch retires it.
    upstream: Arc<Upstream>,
    strict: bool,
    /// Where it goes (parsed once): HTTP/2 requests name it.
    authority: Authority,
    /// The same, as compared at every call (an `Authority` parses its host at each look).
    host: Box<str>,
    port: u16,
    _place: Place,
}

enum Sender {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

impl Sender {
    fn is_ready(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_ready(),
            Sender::Http2(s) => s.is_ready(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }
}

impl KeptConn {
    fn new(
        sender: Sender,
        upstream: Arc<Upstream>,
        strict: bool,
        host: &str,
        port: u16,
        place: Place,
    ) -> KeptConn {
        KeptConn {
            sender,
            upstream,
            strict,
            authority: authority(host, port),
            host: host.into(),
            port,
            _place: place,
        }
    }

    /// Made for these clients and this authority.
    fn made_for(&self, upstream: &Arc<Upstream>, strict: bool, host: &str, port: u16) -> bool {
        self.strict == strict
            && Arc::ptr_eq(&self.upstream, upstream)
            && self.port == port
            && *self.host == *host
    }
}

/// One of the [`KEPT_MAX`] places, held while a connection is kept.
struct Place(Arc<AtomicUsize>);

impl Place {
    fn take(count: &Arc<AtomicUsize>) -> Option<Place> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < KEPT_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(count.clone()))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a call sent over a kept connection failed.
#[derive(Debug)]
pub enum SendError {
    /// No place left to keep a connection: send it through the pool instead.
    Full(Request<Body>),
    /// The connection could not be made (classified).
    Connect(ConnectError),
    /// The connection failed while the call was on it.
    Http(hyper::Error),
}

impl SendError {
    /// The failure as the platform's network error.
    pub fn classify(&self) -> ConnectError {
        match self {
            SendError::Full(_) => ConnectError::from_io(
                &std::io::Error::other("no upstream connection"),
                "upstream connection",
            ),
            SendError::Connect(e) => e.clone(),
            SendError::Http(e) => classify_error(e),
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("no upstream connection"),
            SendError::Connect(e) => e.fmt(f),
            SendError::Http(e) => e.fmt(f),
        }
    }
}

impl Kept {
    /// Send `req` (its URI in origin form, `/path?query`) to `https://host:port` over the kept
    /// connection (or the one being opened ahead), else over a new one that is kept from then on
    /// when `may_open`. An HTTP/2 client's tunnel doesn't open: its calls overlap, and those that
    /// find the kept connection busy go to the shared pool.
    ///
    /// # Errors
    /// The connection can't be made or fails; [`SendError::Full`] gives the request back (its
    /// URI absolute, for the shared pool): no place to keep a new connection, or not `may_open`.
    ///
    /// Not an `async fn`: that keeps its arguments twice (as given, and moved into the body),
    /// and every call moves this future through the stages above it.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice"
    )]
    pub fn send<'a>(
        &'a self,
        upstream: &'a Arc<Upstream>,
        strict: bool,
        host: &'a str,
        port: u16,
        req: Request<Body>,
        may_open: bool,
    ) -> impl Future<Output = Result<Response<Incoming>, SendError>> + 'a {
        async move {
            let kept = match self.take(upstream, strict, host, port) {
                Some(kept) => Some(kept),
                None => self.opened_ahead(upstream, strict, host, port).await?,
            };
            let req = match kept {
                Some(kept) => match self.send_on(kept, req).await {
                    Ok(response) => return Ok(response),
                    // Not sent (the server closed the idle connection): on a new one.
                    Err(Unsent(req)) => *req,
                    Err(Failed(e)) => return Err(SendError::Http(e)),
                },
                None => req,
            };
            if !may_open {
                return Err(SendError::Full(for_the_pool(req, host, port)));
            }
            // Boxed: only a tunnel's first call (or one after the server closed) opens; the
            // calls on a kept connection need not carry its room through the stages above.
            Box::pin(self.send_new(upstream, strict, host, port, req)).await
        }
    }

    /// Send over a new connection, kept from then on when there is a place for it.
    async fn send_new(
        &self,
        upstream: &Arc<Upstream>,
        strict: bool,
        host: &str,
        port: u16,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let Some(place) = Place::take(&upstream.kept) else {
            return Err(SendError::Full(for_the_pool(req, host, port)));
        };
        let sender = open(upstream, strict, host, port)
            .await
            .map_err(SendError::Connect)?;
        let kept = KeptConn::new(sender, upstream.clone(), strict, host, port, place);
        match self.send_on(kept, req).await {
            Ok(response) => Ok(response),
            Err(Unsent(_)) => Err(SendError::Connect(ConnectError::upstream(
                -324,
                "ERR_EMPTY_RESPONSE",
                "the server closed the new connection before the request".to_owned(),
            ))),
            Err(Failed(e)) => Err(SendError::Http(e)),
        }
    }

    /// The kept connection, when it is ready and made for these clients.
    fn take(
        &self,
        upstream: &Arc<Upstream>,
        strict: bool,
        host: &str,
        port: u16,
    ) -> Option<KeptConn> {
        let mut slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = slot.take()?;
        if !kept.made_for(upstream, strict, host, port) || kept.sender.is_closed() {
            return None;
        }
        if kept.sender.is_ready() {
            return Some(kept);
        }
        // Busy (an HTTP/2 client's other call, its response still streaming): it stays.
        *slot = Some(kept);
        None
    }

    /// Start opening the tunnel's connection now, before its first call (the CONNECT named a
    /// host the policy lets it open ahead: [`crate::policy::may_open_ahead`]). Nothing is
    /// started without a free place; the attempt is given up after `within`.
    pub fn open_ahead(
        &self,
        upstream: Arc<Upstream>,
        strict: bool,
        host: String,
        port: u16,
        within: Duration,
    ) {
        let Some(place) = Place::take(&upstream.kept) else {
            return;
        };
        let (tx, opened) = oneshot::channel();
        *self.ahead.lock().unwrap_or_else(PoisonError::into_inner) = Some(Ahead {
            upstream: upstream.clone(),
            strict,
            opened,
        });
        tokio::spawn(async move {
            let opened = tokio::time::timeout(within, open(&upstream, strict, &host, port)).await;
            let Ok(opened) = opened else {
                debug!("upstream connection opened ahead timed out");
                return;
            };
            let kept =
                opened.map(|sender| KeptConn::new(sender, upstream, strict, &host, port, place));
            // The tunnel may be gone already: the connection (and its place) goes with it.
            let _ = tx.send(kept);
        });
    }

    /// The connection opened ahead, once it is there, when it fits this call (a reload or the
    /// skip switch in between retires it); its failure is this call's. `Ok(None)`: nothing was
    /// opened ahead (or it was given up), the call opens its own.
    async fn opened_ahead(
        &self,
        upstream: &Arc<Upstream>,
        strict: bool,
        host: &str,
        port: u16,
    ) -> Result<Option<KeptConn>, SendError> {
        let ahead = self
            .ahead
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(ahead) = ahead else {
            return Ok(None);
        };
        let same_clients = ahead.strict == strict && Arc::ptr_eq(&ahead.upstream, upstream);
        match ahead.opened.await {
            // Unused yet: its first request may go before its task reports it ready (and
            // when the server closed it meanwhile, the request comes back unsent).
            Ok(Ok(kept)) => Ok(kept.made_for(upstream, strict, host, port).then_some(kept)),
            // The attempt this call would have made, with the same clients, failed.
            Ok(Err(e)) if same_clients => Err(SendError::Connect(e)),
            Ok(Err(_)) | Err(_) => Ok(None),
        }
    }

    /// Send over `kept`, and keep it for the next call once the response head is in.
    /// (Not an `async fn`, as [`Kept::send`].)
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice"
    )]
    fn send_on(
        &self,
        mut kept: KeptConn,
        mut req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, Outcome>> + '_ {
        async move {
            let sent = match &mut kept.sender {
                Sender::Http1(s) => s.try_send_request(req).await,
                Sender::Http2(s) => {
                    *req.uri_mut() = absolute(&kept.authority, req.uri());
                    *req.version_mut() = Version::HTTP_2;
                    s.try_send_request(req).await
                }
            };
            match sent {
                Ok(response) => {
                    *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(kept);
                    Ok(response)
                }
                Err(mut e) => match e.take_message() {
                    Some(mut req) => {
                        // Back in origin form (HTTP/2 made it absolute), for a new connection.
                        *req.uri_mut() = origin_form(req.uri());
                        Err(Unsent(Box::new(req)))
                    }
                    None => Err(Failed(e.into_error())),
                },
            }
        }
    }
}

/// How sending over a kept connection went wrong.
enum Outcome {
    /// The request never left: it can go on a new connection.
    Unsent(Box<Request<Body>>),
    Failed(hyper::Error),
}
use Outcome::{Failed, Unsent};

/// Dial, TLS and the HTTP handshake (HTTP/2 when the server chose it); the connection runs
/// in its own task until its sender is dropped or the server closes it.
async fn open(
    upstream: &Upstream,
    strict: bool,
    host: &str,
    port: u16,
) -> Result<Sender, ConnectError> {
    let stream = upstream
        .connector(strict)
        .connect_to(host, port, true)
        .await?;
    let h2 = stream.connected().is_negotiated_h2();
    let io = TokioIo::new(stream);
    let failed = |e: hyper::Error| classify_error(&e);
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(failed)?;
        run(conn);
        return Ok(Sender::Http2(sender));
    }
    let (sender, conn) = http1::Builder::new()
        .preserve_header_case(true)
        .title_case_headers(true)
        .handshake(io)
        .await
        .map_err(failed)?;
    run(conn);
    Ok(Sender::Http1(sender))
}

/// Run an upstream connection in its own task until its sender is dropped or the server ends it.
fn run<C>(conn: C)
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "upstream connection ended");
        }
    });
}

/// A request given back for the shared pool, which dials what its URI names.
fn for_the_pool(mut req: Request<Body>, host: &str, port: u16) -> Request<Body> {
    *req.uri_mut() = absolute(&authority(host, port), req.uri());
    req
}

/// `host:port` as a URI names it.
fn authority(host: &str, port: u16) -> Authority {
    Authority::try_from(format!("{host}:{port}"))
        .unwrap_or_else(|_| Authority::from_static("invalid"))
}

/// `https://host:port/path?query`, for HTTP/2 and the shared pool (no text made or parsed).
fn absolute(authority: &Authority, origin: &Uri) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTPS);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(
        origin
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).unwrap_or_else(|_| origin.clone())
}

/// `uri` in origin form (`/path?query`), as HTTP/1.1 requests go; the Host header is the
/// client's. An origin-form URI (what HTTP/1.1 clients send in a tunnel) is kept as it is.
pub fn origin_form(uri: &Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri.clone();
    }
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many tunnels ask, no more than `KEPT_MAX` connections are kept; a place comes
    /// back when its connection goes.
    #[test]
    fn places_are_bounded_and_given_back() {
        let count = Arc::new(AtomicUsize::new(0));
        let mut held: Vec<Place> = (0..KEPT_MAX)
            .map(|i| Place::take(&count).unwrap_or_else(|| panic!("place {i}")))
            .collect();
        assert!(Place::take(&count).is_none(), "one more than the bound");
        assert_eq!(count.load(Ordering::Acquire), KEPT_MAX);
        held.pop();
        assert!(
            Place::take(&count).is_some(),
            "a freed place is taken again"
        );
        drop(held);
        assert_eq!(count.load(Ordering::Acquire), 0);
    }
}
