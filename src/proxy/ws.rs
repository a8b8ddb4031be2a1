//! WebSocket (`connectSocket`): a socket slot (5 per instance), the upstream handshake within
//! the call's timeout and before the client gets its 101, then a byte-exact relay of both
//! upgraded streams (frames, extensions and close codes pass as sent). When the app's background
//! grace runs out, the client gets a close frame 1000 "interrupted" between two frames, and the
//! upstream is closed too; a network change or going offline closes it the same way with 1001
//! and the errMsg as reason. Relayed bytes are shaped by the instance's network profile.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn, Instrument};

use crate::calllog::Outcome;
use crate::instances::{Link, SlotError};
use crate::policy::Refusal;
use crate::proxy::admit::Admitted;
use crate::proxy::call::{net_refusal, outcome_of, record, End};
use crate::proxy::refuse::Refused;
use crate::proxy::wsframes::{close_frame, FrameTracker};
use crate::proxy::ConnInfo;
use crate::proxy::{headers, shape};
use crate::shutdown::Shutdown;
use crate::state::Shared;
use crate::upstream::classify_client_error;
use crate::web::body::{self, Body};

/// After the cut, how long the relay waits for the frame being relayed to end before it closes
/// the connection without a close frame.
const CUT_FRAME_WAIT: Duration = Duration::from_secs(1);
/// The close code and reason a socket gets when the app's background grace runs out.
const INTERRUPTED: (u16, &str) = (1000, "interrupted");
const BUFFER: usize = 16 * 1024;
/// The close code a socket gets when the network cuts it (its reason is the errMsg).
const NETWORK_CLOSE: u16 = 1001;

/// A socket slot, the upstream handshake (raced against the call's clock), then the 101 to the
/// client and a relay task.
pub(crate) async fn relay(
    mut a: Admitted<'_>,
    conn: &ConnInfo,
    strict: bool,
) -> Result<Response<Body>, Box<Refused>> {
    let permit = match a.instance.socket_slot() {
        Ok((permit, _task_id)) => permit,
        Err(SlotError::SocketsFull { limit, task_id }) => {
            let refusal = Refusal::socket_concurrency(&a.url, task_id, limit);
            return Err(a.refused(refusal));
        }
        // `socket_slot` only reports sockets; HTTP slots are not asked for here.
        Err(SlotError::HttpFull { limit }) => {
            let refusal = Refusal::socket_concurrency(&a.url, 0, limit);
            return Err(a.refused(refusal));
        }
    };
    let Some(body) = a.body.take() else {
        return Err(a.refused(Refusal::socket_concurrency(&a.url, 0, 0)));
    };
    let mut req = Request::from_parts(a.head.clone(), body);
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut response = handshake(&mut a, req, conn, strict).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let end = End {
            status: Some(response.status().as_u16()),
            ..End::default()
        };
        record(&conn.shared, a.meta, Outcome::Ok, None, end);
        let mut response = response.map(body::boxed);
        headers::strip_hop_by_hop(response.headers_mut(), false);
        return Ok(response);
    }
    let server_upgrade = hyper::upgrade::on(&mut response);
    let span = tracing::debug_span!("websocket", url = %a.url);
    let task = relay_task(
        conn.shared.clone(),
        a,
        client_upgrade,
        server_upgrade,
        permit,
    );
    // The socket keeps its client connection's place under `proxy.max_connections`.
    let slot = conn.slot.clone();
    let task = async move {
        task.await;
        drop(slot);
    };
    conn.shared.shutdown.tracker.spawn(task.instrument(span));
    // The 101 with the upstream's Sec-WebSocket-Accept: the client's key went upstream unchanged.
    let (parts, _) = response.into_parts();
    let mut to_client = Response::from_parts(parts, body::empty());
    headers::strip_hop_by_hop(to_client.headers_mut(), true);
    Ok(to_client)
}

/// The upstream handshake, within the call's timeout and before the background cut.
async fn handshake(
    a: &mut Admitted<'_>,
    req: Request<hyper::body::Incoming>,
    conn: &ConnInfo,
    strict: bool,
) -> Result<Response<hyper::body::Incoming>, Box<Refused>> {
    shape::travel(a, &conn.shared).await?;
    let clients = conn.shared.upstream();
    let upstream = clients.client(strict, true);
    match a.clock.race(upstream.request(req.map(body::boxed))).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            let failure = classify_client_error(&e);
            let refusal = Refusal::net(a.api, &a.url, failure.rule, &failure.net);
            warn!(app = %a.app.appid, url = %a.url, rule = refusal.rule.as_str(), error = %failure,
                "websocket upstream failed");
            Err(a.refused(refusal))
        }
        Err(cut) => Err(a.cut(cut)),
    }
}

/// Both upgrades, then the relay until the socket ends; the call is recorded once.
fn relay_task(
    shared: Arc<Shared>,
    a: Admitted<'_>,
    client_upgrade: OnUpgrade,
    server_upgrade: OnUpgrade,
    permit: OwnedSemaphorePermit,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (meta, instance, link) = (a.meta, a.instance, a.link);
    let (api, url) = (a.api, a.url);
    // Subscribed now: a network change from the 101 on closes the socket.
    let net = instance.net_cut();
    async move {
        let (client, server) = match tokio::join!(client_upgrade, server_upgrade) {
            (Ok(c), Ok(s)) => (c, s),
            (Err(e), _) | (_, Err(e)) => {
                debug!(error = %e, "websocket upgrade failed");
                let end = End {
                    status: Some(101),
                    ..End::default()
                };
                record(&shared, meta, Outcome::Aborted, None, end);
                return;
            }
        };
        let cut = async move {
            tokio::select! {
                () = instance.cut() => None,
                net = net => Some(net_refusal(net, api, &url)),
            }
        };
        let ends = Ends {
            cut,
            shutdown: &shared.shutdown,
            link: &link,
        };
        let (outcome, up, down, refusal) = pump(client, server, ends, permit).await;
        debug!(
            bytes.up = up,
            bytes.down = down,
            outcome = outcome.as_str(),
            "websocket closed"
        );
        let end = End {
            status: Some(101),
            bytes_up: up,
            bytes_down: down,
            ..End::default()
        };
        record(&shared, meta, outcome, refusal.as_ref(), end);
    }
}

/// What ends a relay besides its ends closing, and the link it is shaped by.
struct Ends<'s, C> {
    /// The cut: `None` for the background's, the refusal for the network's.
    cut: C,
    shutdown: &'s Shutdown,
    link: &'s Link,
}

/// One direction of a relay: what was read, and whether the reader is mid-write.
struct Direction {
    buf: Vec<u8>,
    frames: FrameTracker,
    bytes: u64,
    /// Set while a chunk is being written: a cut then leaves the frame unfinished.
    writing: bool,
}

impl Direction {
    fn new() -> Self {
        Direction {
            buf: vec![0u8; BUFFER],
            frames: FrameTracker::default(),
            bytes: 0,
            writing: false,
        }
    }

    /// Copy one chunk (at the link's rate); `false` when this direction is over (EOF or error).
    async fn step<R, W>(&mut self, from: &mut R, to: &mut W, link: &Link, down: bool) -> bool
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let n = match from.read(&mut self.buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        self.frames.feed(&self.buf[..n]);
        self.bytes += n as u64;
        self.writing = true;
        let ok =
            shape::write(to, &self.buf[..n], link, down).await.is_ok() && to.flush().await.is_ok();
        self.writing = false;
        ok
    }
}

/// Relay both directions until the server closes, an end fails, the cut, or shutdown. Every
/// wait, writes to a client that stopped reading included, gives way to the cut. Returns the
/// outcome, the bytes relayed up (client → server) and down, and the network's refusal.
async fn pump<C>(
    client: Upgraded,
    server: Upgraded,
    ends: Ends<'_, C>,
    permit: OwnedSemaphorePermit,
) -> (Outcome, u64, u64, Option<Refusal>)
where
    C: std::future::Future<Output = Option<Refusal>>,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(TokioIo::new(client));
    let (mut server_rd, mut server_wr) = tokio::io::split(TokioIo::new(server));
    let (mut up, mut down) = (Direction::new(), Direction::new());
    let (cut, link) = (ends.cut, ends.link);
    tokio::pin!(cut);
    let relay = async {
        let mut client_open = true;
        loop {
            tokio::select! {
                more = up.step(&mut client_rd, &mut server_wr, link, false), if client_open => if !more {
                    client_open = false;
                    let _ = server_wr.shutdown().await;
                },
                more = down.step(&mut server_rd, &mut client_wr, link, true) => if !more {
                    // The server closed: the socket is over, whatever the client does next.
                    let _ = client_wr.shutdown().await;
                    return Outcome::Ok;
                },
            }
        }
    };
    let (outcome, refusal) = tokio::select! {
        outcome = relay => (outcome, None),
        refusal = &mut cut => (refusal.as_ref().map_or(Outcome::Interrupted, outcome_of), refusal),
        () = ends.shutdown.token.cancelled() => (Outcome::Aborted, None),
    };
    // The cut frees the slot at once; the goodbye below is bounded.
    drop(permit);
    if outcome != Outcome::Ok && outcome != Outcome::Aborted {
        let close = refusal
            .as_ref()
            .map_or(INTERRUPTED, |r| (NETWORK_CLOSE, r.errmsg.as_str()));
        let goodbye = async {
            if !down.writing && finish_frame(&mut down, &mut server_rd, &mut client_wr).await {
                let _ = client_wr
                    .write_all(&close_frame(close.0, close.1, false))
                    .await;
            }
            let _ = client_wr.flush().await;
            let _ = client_wr.shutdown().await;
            if !up.writing && up.frames.at_boundary() {
                let _ = server_wr
                    .write_all(&close_frame(close.0, close.1, true))
                    .await;
            }
            let _ = server_wr.shutdown().await;
        };
        let _ = tokio::time::timeout(CUT_FRAME_WAIT, goodbye).await;
    }
    (outcome, up.bytes, down.bytes, refusal)
}

/// Relay the rest of the frame being sent to the client (and nothing after it); `true` when
/// the relay is then between two frames.
async fn finish_frame<R, W>(down: &mut Direction, server: &mut R, client: &mut W) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while !down.frames.at_boundary() {
        match server.read(&mut down.buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                down.frames.feed(&down.buf[..n]);
                if client.write_all(&down.buf[..n]).await.is_err() {
                    return false;
                }
            }
        }
    }
    true
}
