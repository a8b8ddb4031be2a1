//! WebSocket: the upstream handshake completes before the client gets its 101 (so a refused or
//! failed upstream is answered as such), then both upgraded streams are relayed byte for byte,
//! which keeps every frame (text, binary, ping/pong, close codes, extensions) exactly as sent.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::{debug, warn, Instrument};

use crate::policy::Refusal;
use crate::proxy::body::{self, Body};
use crate::proxy::forward::Admitted;
use crate::proxy::upstream::classify_client_error;
use crate::proxy::{answer, headers, ConnInfo};

pub(crate) async fn relay(
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    admitted: &Admitted<'_>,
    strict: bool,
) -> Response<Body> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let upstream = conn.shared.upstream.client(strict, true);
    let mut response = match upstream.request(req.map(body::boxed)).await {
        Ok(r) => r,
        Err(e) => {
            let failure = classify_client_error(&e);
            let refusal = Refusal::net(admitted.api, &admitted.url, failure.rule, &failure.net);
            warn!(app = %admitted.app.appid, url = %admitted.url, rule = refusal.rule.as_str(),
                error = %failure, "websocket upstream failed");
            return answer::refusal(
                &refusal,
                Some(&admitted.app.appid),
                admitted.origin.as_ref(),
            );
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let mut response = response.map(body::boxed);
        headers::strip_hop_by_hop(response.headers_mut(), false);
        return response;
    }
    let server_upgrade = hyper::upgrade::on(&mut response);
    let token = conn.shared.shutdown.token.clone();
    let span = tracing::info_span!("websocket", url = %admitted.url);
    conn.shared.shutdown.tracker.spawn(
        async move {
            let (client, server) = match tokio::join!(client_upgrade, server_upgrade) {
                (Ok(c), Ok(s)) => (c, s),
                (Err(e), _) | (_, Err(e)) => {
                    debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
            tokio::select! {
                result = tokio::io::copy_bidirectional(&mut client, &mut server) => match result {
                    Ok((up, down)) => debug!(bytes.up = up, bytes.down = down, "websocket closed"),
                    Err(e) => debug!(error = %e, "websocket ended with an error"),
                },
                () = token.cancelled() => debug!("websocket closed by shutdown"),
            }
        }
        .instrument(span),
    );
    // The 101 with the upstream's Sec-WebSocket-Accept: the client's key went upstream unchanged.
    let (parts, _) = response.into_parts();
    let mut to_client = Response::from_parts(parts, body::empty());
    headers::strip_hop_by_hop(to_client.headers_mut(), true);
    to_client
}
