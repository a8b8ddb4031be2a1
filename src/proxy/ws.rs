//! WebSocket (`connectSocket`): a socket slot (5 per instance), the upstream handshake within
//! the call's timeout and before the client gets its 101, then a byte-exact relay of both
//! upgraded streams (frames, extensions and close codes pass as sent). When the app's background
//! grace runs out, the client gets a close frame 1000 "interrupted" between two frames, and the
//! upstream is closed too.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::sleep_until;
use tracing::{debug, warn, Instrument};

use crate::calllog::Outcome;
use crate::instances::SlotError;
use crate::policy::Refusal;
use crate::proxy::body::{self, Body};
use crate::proxy::call::{record, End};
use crate::proxy::forward::{refuse, Admitted, Call};
use crate::proxy::upstream::classify_client_error;
use crate::proxy::wsframes::{close_frame, FrameTracker};
use crate::proxy::{headers, ConnInfo};
use crate::shutdown::Shutdown;

/// After the cut, how long the relay waits for the frame being relayed to end before it closes
/// the connection without a close frame.
const CUT_FRAME_WAIT: Duration = Duration::from_secs(1);
/// The close code and reason a socket gets when the app's background grace runs out.
const INTERRUPTED: (u16, &str) = (1000, "interrupted");
const BUFFER: usize = 16 * 1024;

pub(crate) async fn relay(
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    admitted: &Admitted<'_>,
    strict: bool,
    call: Call,
) -> Response<Body> {
    let shared = &conn.shared;
    let Call {
        instance,
        deadline,
        timeout_ms,
        meta,
    } = call;
    let origin = admitted.origin.as_ref();
    let url = admitted.url.as_str();
    let permit = match instance.socket_slot() {
        Ok((permit, _task_id)) => permit,
        Err(SlotError::SocketsFull { limit, task_id }) => {
            return refuse(
                shared,
                meta,
                &Refusal::socket_concurrency(url, task_id, limit),
                origin,
            );
        }
        // `socket_slot` only reports sockets; HTTP slots are not asked for here.
        Err(SlotError::HttpFull { limit }) => {
            return refuse(
                shared,
                meta,
                &Refusal::socket_concurrency(url, 0, limit),
                origin,
            );
        }
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let upstream = shared.upstream.client(strict, true);
    let api = admitted.api;
    let grace_ms =
        u64::try_from(admitted.app.limits.background_grace.as_millis()).unwrap_or(u64::MAX);
    let result = tokio::select! {
        biased;
        () = instance.cut() => return refuse(shared, meta, &Refusal::interrupted(api, url, grace_ms), origin),
        () = sleep_until(deadline) => return refuse(shared, meta, &Refusal::timeout(api, url, timeout_ms), origin),
        result = upstream.request(req.map(body::boxed)) => result,
    };
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            let failure = classify_client_error(&e);
            let refusal = Refusal::net(api, url, failure.rule, &failure.net);
            warn!(app = %admitted.app.appid, url = %url, rule = refusal.rule.as_str(), error = %failure,
                "websocket upstream failed");
            return refuse(shared, meta, &refusal, origin);
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status().as_u16();
        record(
            shared,
            meta,
            Outcome::Ok,
            None,
            End {
                status: Some(status),
                ..End::default()
            },
        );
        let mut response = response.map(body::boxed);
        headers::strip_hop_by_hop(response.headers_mut(), false);
        return response;
    }
    let server_upgrade = hyper::upgrade::on(&mut response);
    let span = tracing::debug_span!("websocket", url = %url);
    let shared_task = shared.clone();
    shared.shutdown.tracker.spawn(
        async move {
            let (client, server) = match tokio::join!(client_upgrade, server_upgrade) {
                (Ok(c), Ok(s)) => (c, s),
                (Err(e), _) | (_, Err(e)) => {
                    debug!(error = %e, "websocket upgrade failed");
                    record(
                        &shared_task,
                        meta,
                        Outcome::Aborted,
                        None,
                        End {
                            status: Some(101),
                            ..End::default()
                        },
                    );
                    return;
                }
            };
            let cut = async move { instance.cut().await };
            let (outcome, up, down) =
                pump(client, server, cut, &shared_task.shutdown, permit).await;
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
            record(&shared_task, meta, outcome, None, end);
        }
        .instrument(span),
    );
    // The 101 with the upstream's Sec-WebSocket-Accept: the client's key went upstream unchanged.
    let (parts, _) = response.into_parts();
    let mut to_client = Response::from_parts(parts, body::empty());
    headers::strip_hop_by_hop(to_client.headers_mut(), true);
    to_client
}

/// Relay both directions until both ends close, the cut, or shutdown. Returns the outcome and the
/// bytes relayed up (client → server) and down.
async fn pump(
    client: Upgraded,
    server: Upgraded,
    cut: impl std::future::Future<Output = ()>,
    shutdown: &Shutdown,
    permit: OwnedSemaphorePermit,
) -> (Outcome, u64, u64) {
    let (mut client_rd, mut client_wr) = tokio::io::split(TokioIo::new(client));
    let (mut server_rd, mut server_wr) = tokio::io::split(TokioIo::new(server));
    let (mut up_buf, mut down_buf) = (vec![0u8; BUFFER], vec![0u8; BUFFER]);
    let (mut up_frames, mut down_frames) = (FrameTracker::default(), FrameTracker::default());
    let (mut up, mut down) = (0u64, 0u64);
    let mut client_open = true;
    tokio::pin!(cut);
    let outcome = loop {
        tokio::select! {
            read = client_rd.read(&mut up_buf), if client_open => match read {
                Ok(0) | Err(_) => {
                    client_open = false;
                    let _ = server_wr.shutdown().await;
                }
                Ok(n) => {
                    up_frames.feed(&up_buf[..n]);
                    up += n as u64;
                    if server_wr.write_all(&up_buf[..n]).await.is_err() || server_wr.flush().await.is_err() {
                        break Outcome::Ok;
                    }
                }
            },
            read = server_rd.read(&mut down_buf) => match read {
                Ok(0) | Err(_) => {
                    // The server closed: the socket is over, whatever the client does next.
                    let _ = client_wr.shutdown().await;
                    break Outcome::Ok;
                }
                Ok(n) => {
                    down_frames.feed(&down_buf[..n]);
                    down += n as u64;
                    if client_wr.write_all(&down_buf[..n]).await.is_err() || client_wr.flush().await.is_err() {
                        break Outcome::Ok;
                    }
                }
            },
            () = &mut cut => break Outcome::Interrupted,
            () = shutdown.token.cancelled() => break Outcome::Aborted,
        }
    };
    if outcome == Outcome::Interrupted {
        // Finish the frame being relayed to the client, then close both sides with 1000.
        let finish = async {
            while !down_frames.at_boundary() {
                match server_rd.read(&mut down_buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => {
                        // Only the rest of the current frame goes out; what follows is dropped.
                        down_frames.feed(&down_buf[..n]);
                        if client_wr.write_all(&down_buf[..n]).await.is_err() {
                            return false;
                        }
                    }
                }
            }
            true
        };
        if tokio::time::timeout(CUT_FRAME_WAIT, finish)
            .await
            .unwrap_or(false)
        {
            let _ = client_wr
                .write_all(&close_frame(INTERRUPTED.0, INTERRUPTED.1, false))
                .await;
        }
        let _ = client_wr.flush().await;
        let _ = client_wr.shutdown().await;
        if up_frames.at_boundary() {
            let _ = server_wr
                .write_all(&close_frame(INTERRUPTED.0, INTERRUPTED.1, true))
                .await;
        }
        let _ = server_wr.shutdown().await;
    }
    drop(permit);
    (outcome, up, down)
}
