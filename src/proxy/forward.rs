//! One call, in named stages: **admit** (which app, which API, the URL as judged, rules 1-5)
//! → **run** (slot, upstream, decoding, each raced against the call's clock) → **deliver**
//! (the response under a watchdog) → **record** (once, by whoever ends the call).
//! A refusal at any stage leaves through `refuse::finish`.
//!
//! Used for plain-HTTP proxy requests (absolute-form) and for every request inside an
//! intercepted TLS tunnel (origin-form over HTTP/1.1, or HTTP/2).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use http::header::{HOST, REFERER};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::calllog::Headers;
use crate::instances::Link;
use crate::policy::{self, Refusal};
use crate::proxy::admit::{admit, Admitted, Target, RESPONSE_TYPE_HEADER};
use crate::proxy::call::{
    read_ready, record, track, Clock, Counted, CutInfo, End, Live, Ready, RequestBody,
};
use crate::proxy::conn::{current_stream_kill, ActivityGuard};
use crate::proxy::headers::{self, head_size};
use crate::proxy::refuse::{self, Refused};
use crate::proxy::{decode, shape, ws, ConnInfo, MAX_HEADER_BYTES};
use crate::upstream::kept::{self, SendError};
use crate::upstream::{classify_client_error, ConnectError, Upstream};
use crate::web::body::{self, Body, BoxError, IntoBody};
use crate::web::certpage;

/// The service of every request that is a call (absolute-form, or inside a tunnel).
///
/// Not an `async fn` (which keeps its arguments twice): hyper moves this future into its
/// connection's slot for every request, so it is kept small, with the call's stages boxed.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
pub(crate) fn call(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> impl Future<Output = Result<Response<Body>, BoxError>> {
    async move {
        let busy = conn.activity.begin();
        let target = match Target::of(&req, &conn) {
            Ok(t) => t,
            Err(response) => return Ok(response),
        };
        if target.host == certpage::CERT_HOST && head_size(&req) <= MAX_HEADER_BYTES {
            return Ok(certpage::serve(&req, &conn.shared.ca));
        }
        let shared = conn.shared.clone();
        let config = shared.config();
        // The admitted call on the heap: not held in this future, nor twice by `run`.
        let admitted = admit(req, &conn, &config, &target).map(Box::new);
        let admitted = match admitted {
            Ok(a) => a,
            Err(refused) => return Box::pin(refuse::finish(&shared, *refused)).await,
        };
        match Box::pin(run(admitted, &conn, &target, busy)).await {
            Ok(response) => Ok(response),
            Err(refused) => Box::pin(refuse::finish(&shared, *refused)).await,
        }
    }
}

/// Stage 2, run: the upstream request is prepared, then slot, upstream and decoding.
async fn run(
    mut a: Box<Admitted<'_>>,
    conn: &ConnInfo,
    target: &Target<'_>,
    busy: ActivityGuard,
) -> Result<Response<Body>, Box<Refused>> {
    let uri = upstream_uri(&mut a, conn, target)?;
    let strict = !conn.shared.skip_domain_check();
    let plan = Plan::of(&a);
    prepare_upstream_request(&mut a, uri, target);
    if a.link.profile.offline {
        let refusal = Refusal::offline(a.api, &a.url);
        return Err(a.refused(refusal));
    }
    if a.websocket {
        // Boxed: rare, and larger than the rest of a call.
        return Box::pin(ws::relay(*a, conn, strict)).await;
    }
    let permit = take_slot(&mut a, plan.preflight).await?;
    shape::travel(&mut a, &conn.shared).await?;
    let queue_ms = u64::try_from(a.meta.arrival.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut request_body = None;
    let response = send_upstream(&mut a, conn, strict, &mut request_body).await?;
    let calling = Calling {
        queue_ms,
        request_body,
        permit,
        busy,
    };
    if plan.decode && decode::may_decode(response.headers()) {
        let decoded = decode(&mut a, response.map(body::boxed)).await?;
        return Ok(respond(*a, decoded, plan, calling, conn));
    }
    // The upstream's body as it is (unboxed): a small one is read whole at once.
    Ok(respond(*a, response, plan, calling, conn))
}

/// What a call holds until its response goes out.
struct Calling {
    queue_ms: u64,
    request_body: Option<Arc<RequestBody>>,
    permit: Option<OwnedSemaphorePermit>,
    busy: ActivityGuard,
}

/// The response head goes out; the call ends now or when its body has.
fn respond<B>(
    a: Admitted<'_>,
    response: Response<B>,
    plan: Plan,
    calling: Calling,
    conn: &ConnInfo,
) -> Response<Body>
where
    B: IntoBody,
    B::Error: Into<BoxError>,
{
    // The transport's kill switch is looked up only for a response that streams (a small one
    // is over before it would be needed; a token's clone takes its lock).
    let cut = a.cut_info_later();
    let Admitted {
        meta, link, clock, ..
    } = a;
    let live = Live {
        shared: conn.shared.clone(),
        end: End {
            status: Some(response.status().as_u16()),
            queue_ms: calling.queue_ms,
            response_headers: Headers::capture(response.headers()),
            ..End::default()
        },
        meta,
        request_body: calling.request_body,
        permit: calling.permit,
        body: body::empty(),
        replay: VecDeque::new(),
        // The length hyper framed the body by (a Content-Length it obeys), or the decoder's.
        expected: if plan.head_only {
            Some(0)
        } else {
            http_body::Body::size_hint(response.body()).exact()
        },
        activity: calling.busy,
    };
    deliver(live, response, &link, clock, cut, conn)
}

/// The URI the upstream request carries: origin form over a tunnel's kept connection, else
/// absolute (the pools dial what it names; a WebSocket goes through the upgrade pool).
fn upstream_uri(
    a: &mut Admitted<'_>,
    conn: &ConnInfo,
    target: &Target<'_>,
) -> Result<Uri, Box<Refused>> {
    if conn.tunnel.is_some() && !a.websocket {
        return Ok(kept::origin_form(&a.head.uri));
    }
    target.upstream_uri().map_err(|_| {
        let refusal = Refusal::hint_mismatch(a.api, &a.url, "a URL that can't be forwarded");
        a.refused(refusal)
    })
}

/// What the request asks of the later stages, read before its head is rewritten.
struct Plan {
    /// A CORS preflight: no slot, no decoding.
    preflight: bool,
    /// BOM and charset handling (not for `arraybuffer`).
    decode: bool,
    head_only: bool,
}

impl Plan {
    fn of(a: &Admitted<'_>) -> Plan {
        let h = &a.head.headers;
        let preflight = policy::is_preflight(a.head.method.as_str(), a.marks.cors_preflight);
        let arraybuffer = a
            .marks
            .ours(h, RESPONSE_TYPE_HEADER)
            .is_some_and(|v| v.eq_ignore_ascii_case("arraybuffer"));
        Plan {
            preflight: preflight || a.webview,
            decode: !arraybuffer && !preflight && !a.webview,
            head_only: a.head.method == Method::HEAD,
        }
    }
}

/// Rule 6: a slot (CORS preflights don't count), FIFO with `overflow: queue`.
async fn take_slot(
    a: &mut Admitted<'_>,
    preflight: bool,
) -> Result<Option<OwnedSemaphorePermit>, Box<Refused>> {
    if preflight {
        return Ok(None);
    }
    // A free slot is taken at once: nothing to race (the next wait checks the clock first).
    if let Some(permit) = a.instance.try_http_slot() {
        return Ok(Some(permit));
    }
    let instance = a.instance.clone();
    match a.clock.race(instance.http_slot()).await {
        Ok(Ok(permit)) => Ok(Some(permit)),
        Ok(Err(_)) => {
            let refusal = Refusal::concurrency(a.api, &a.url, a.app.limits.requests);
            Err(a.refused(refusal))
        }
        Err(cut) => Err(a.cut(cut)),
    }
}

/// Rule 7: upstream, within the deadline, unless the app goes to the background.
async fn send_upstream(
    a: &mut Admitted<'_>,
    conn: &ConnInfo,
    strict: bool,
    request_body: &mut Option<Arc<RequestBody>>,
) -> Result<Response<Incoming>, Box<Refused>> {
    let Some(incoming) = a.body.take() else {
        let refusal = Refusal::hint_mismatch(a.api, "", "a request without a body");
        return Err(a.refused(refusal));
    };
    // A body known to be empty (a GET's) has nothing to count: none goes, as none came.
    let counted = if http_body::Body::is_end_stream(&incoming) {
        body::empty()
    } else {
        let count = request_body.insert(Arc::new(RequestBody::default()));
        body::boxed(Counted::new(incoming, count.clone()))
    };
    // The head goes upstream as it is (refusals from here on need only `a.version`).
    let head = std::mem::replace(&mut a.head, Request::new(()).into_parts().0);
    let upstream_req = Request::from_parts(head, shape::body(counted, &a.link, false));
    let upstream = conn.shared.upstream();
    match a
        .clock
        .race(send(conn, &upstream, strict, a.version, upstream_req))
        .await
    {
        Ok(Ok(mut response)) => {
            headers::strip_hop_by_hop(response.headers_mut(), false);
            Ok(response)
        }
        Ok(Err((failure, message))) => {
            let client_error = request_body.as_ref().is_some_and(|b| b.client_error());
            Err(upstream_failed(a, failure, &message, client_error))
        }
        Err(cut) => Err(a.cut(cut)),
    }
}

/// A call in a tunnel goes over the tunnel's kept upstream connection (the one opened ahead at
/// its CONNECT, at first); an HTTP/2 client's call that finds it busy, a plain-HTTP proxy
/// request and a call with no place to keep one go through the shared pool. A failure comes
/// classified, with its own words.
/// (Not an `async fn`, which would keep `req` twice: see [`kept::Kept::send`].)
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
fn send<'a>(
    conn: &'a ConnInfo,
    upstream: &'a Arc<Upstream>,
    strict: bool,
    version: Version,
    req: Request<Body>,
) -> impl Future<Output = Result<Response<Incoming>, (ConnectError, String)>> + 'a {
    async move {
        let req = match &conn.tunnel {
            Some(tunnel) => {
                // An HTTP/1.1 client sends one call at a time: its tunnel may open and keep a
                // connection of its own. An HTTP/2 client's calls overlap: the pool takes those
                // that find the kept one busy.
                let may_open = version != Version::HTTP_2;
                let (host, port) = (&tunnel.host, tunnel.port);
                match conn
                    .kept
                    .send(upstream, strict, host, port, req, may_open)
                    .await
                {
                    Err(SendError::Full(req)) => req,
                    Ok(response) => return Ok(response),
                    Err(e) => return Err((e.classify(), e.to_string())),
                }
            }
            None => req,
        };
        let client = upstream.client(strict, false);
        client
            .request(req)
            .await
            .map_err(|e| (classify_client_error(&e), e.to_string()))
    }
}

/// BOM and charset handling, raced against the clock.
async fn decode(
    a: &mut Admitted<'_>,
    response: Response<Body>,
) -> Result<Response<Body>, Box<Refused>> {
    match a.clock.race(decode::decode_response(response)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(detail)) => {
            let refusal = Refusal::charset(a.api, &a.url, detail);
            Err(a.refused(refusal))
        }
        Err(cut) => Err(a.cut(cut)),
    }
}

/// The upstream failed: the server's fault, or the client's own broken request body.
fn upstream_failed(
    a: &mut Admitted<'_>,
    failure: ConnectError,
    message: &str,
    client_error: bool,
) -> Box<Refused> {
    if client_error {
        let refusal = Refusal::bad_request_body(a.api, &a.url, message);
        return a.refused(refusal);
    }
    let refusal = Refusal::net(a.api, &a.url, failure.rule, &failure.net);
    warn!(app = %a.app.appid, api = a.api.as_str(), url = %a.url, rule = refusal.rule.as_str(),
        error = %failure, "upstream failed");
    a.refused(refusal)
}

/// Stage 3, deliver: the response goes to the client under the call's watchdog.
fn deliver<B>(
    live: Live,
    response: Response<B>,
    link: &Arc<Link>,
    clock: Clock,
    cut: impl FnOnce(CancellationToken) -> CutInfo,
    conn: &ConnInfo,
) -> Response<Body>
where
    B: IntoBody,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    if live.expected == Some(0) || http_body::Body::is_end_stream(&body) {
        // Nothing to stream (HEAD, 204, 304, empty): the call is over.
        return Response::from_parts(parts, finish_now(live, body::empty()));
    }
    let kill = || current_stream_kill().unwrap_or_else(|| conn.activity.close.clone());
    if link.shapes(true) {
        // Held back by the profile's bandwidth: read through the shaper.
        let shaped = shape::body(body.into_body(), link, true);
        return Response::from_parts(parts, read_or_track(live, shaped, clock, cut, kill));
    }
    Response::from_parts(parts, read_or_track(live, body, clock, cut, kill))
}

/// The response body: all there (a small response comes with its head), the call is over once
/// hyper has it, with no watchdog; else it streams under the call's watchdog.
fn read_or_track<B>(
    mut live: Live,
    mut body: B,
    clock: Clock,
    cut: impl FnOnce(CancellationToken) -> CutInfo,
    // An HTTP/2 stream is reset alone; an HTTP/1.1 call's connection is closed.
    kill: impl FnOnce() -> CancellationToken,
) -> Body
where
    B: IntoBody,
    B::Error: Into<BoxError>,
{
    match read_ready(&mut body) {
        Ready::Whole(data) => {
            live.end.bytes_down = data.len() as u64;
            finish_now(live, body::full(data))
        }
        Ready::Started(frames) => {
            live.body = body.into_body();
            live.replay = frames;
            track(live, clock, cut(kill()))
        }
    }
}

/// The call is over with `body` (all there): slot freed, recorded.
fn finish_now(mut live: Live, body: Body) -> Body {
    live.permit.take();
    live.end.bytes_up = live.request_body.as_ref().map_or(0, |b| b.bytes());
    let Live {
        shared, meta, end, ..
    } = live;
    record(&shared, meta, crate::calllog::Outcome::Ok, None, end);
    body
}

/// Rewrite an admitted request for the upstream: absolute URI, HTTP/1.1 semantics (ALPN decides
/// h2 upstream), no hop-by-hop or sandbox headers, the platform's Referer.
fn prepare_upstream_request(a: &mut Admitted<'_>, uri: Uri, target: &Target<'_>) {
    let (app, websocket, marks) = (a.app, a.websocket, a.marks);
    let (sandbox_headers, expect, hop_by_hop) = (marks.sandbox, marks.expect, marks.hop_by_hop);
    let head = &mut a.head;
    let from_h2 = head.version == Version::HTTP_2;
    head.uri = uri;
    head.version = Version::HTTP_11;
    let h = &mut head.headers;
    // The one pass over the head saw whether there is anything to strip (phones send none).
    if hop_by_hop || websocket {
        headers::strip_hop_by_hop(h, websocket);
    }
    if sandbox_headers {
        headers::strip_sandbox_headers(h);
    }
    if from_h2 {
        headers::join_cookies(h);
    }
    // hyper answers the client's `Expect: 100-continue` itself when the body is first read.
    if expect {
        h.remove(http::header::EXPECT);
    }
    h.insert(REFERER, app.referer.clone());
    // The host the call was judged for, not the one the client wrote: a shared server (a CDN)
    // picks its site by Host, so a client's own would take the call to a host no list allows.
    if let Some(host) = &target.host_header {
        h.insert(HOST, host.as_ref().clone());
    }
}
