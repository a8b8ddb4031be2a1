//! One call's life after its verdict: the record it leaves in the call log, the clock that races
//! every wait against its deadline and the background cut, and, once the response head is out,
//! the watchdog that ends the call at its deadline or cut even when the client stops reading.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::calllog::{Headers, Outcome, Record};
use crate::instances::{CallCut, CutBy, Instance, NetCut};
use crate::policy::{Api, Refusal};
use crate::proxy::conn::ActivityGuard;
use crate::proxy::quiet::{self, QuietSleep};
use crate::state::Shared;
use crate::web::body::{Body, BoxError};

/// What is known of a call when it arrives.
#[derive(Debug, Clone)]
pub(crate) struct CallMeta {
    pub id: u64,
    pub ts: std::time::SystemTime,
    pub arrival: Instant,
    pub appid: Option<Arc<str>>,
    pub client: IpAddr,
    pub api: &'static str,
    pub method: Cow<'static, str>,
    /// Shared with the call's later stages and its record.
    pub url: Arc<str>,
    pub request_headers: Headers,
    pub http_version: &'static str,
    /// The network profile the call runs under, once its instance is known.
    pub network: Option<Arc<str>>,
}

impl CallMeta {
    pub fn new(
        shared: &Shared,
        client: IpAddr,
        method: &http::Method,
        url: Arc<str>,
        headers: &HeaderMap,
        version: http::Version,
    ) -> Self {
        // Formatted only when served (/api/log, /api/har): calls outnumber reads.
        let ts = std::time::SystemTime::now();
        CallMeta {
            id: shared.log.next_id(),
            ts,
            arrival: Instant::now(),
            appid: None,
            client,
            api: "request",
            method: method_name(method),
            url,
            request_headers: Headers::capture(headers),
            http_version: version_name(version),
            network: None,
        }
    }
}

/// A method's name: no copy for the standard ones.
fn method_name(method: &http::Method) -> Cow<'static, str> {
    use http::Method;
    let name = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        _ => return Cow::Owned(method.as_str().to_owned()),
    };
    Cow::Borrowed(name)
}

/// HAR's name of an HTTP version (`Version`'s `Debug`, without formatting per call).
fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// How a call ended, for its record.
#[derive(Debug, Default)]
pub(crate) struct End {
    pub status: Option<u16>,
    pub queue_ms: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub response_headers: Headers,
}

/// Push the call's record.
pub(crate) fn record(
    shared: &Shared,
    meta: CallMeta,
    outcome: Outcome,
    refusal: Option<&Refusal>,
    end: End,
) {
    // Everything but a completed call or a client that went away counts for --fail-on-refusal.
    if !matches!(outcome, Outcome::Ok | Outcome::Aborted) {
        shared.count_refusal();
    }
    let duration_ms = u64::try_from(meta.arrival.elapsed().as_millis()).unwrap_or(u64::MAX);
    shared.log.push(Record {
        id: meta.id,
        ts: meta.ts,
        appid: meta.appid,
        client: meta.client,
        api: meta.api,
        method: meta.method,
        url: meta.url,
        outcome,
        // What the client was sent: nothing for a refusal that failed at the transport.
        status: end.status,
        errno: refusal.map(|r| r.errno),
        errmsg: refusal.map(|r| r.errmsg.clone()),
        rule: refusal.map(|r| r.rule.as_str()),
        detail: refusal.map(|r| r.detail.clone()),
        queue_ms: end.queue_ms,
        duration_ms,
        bytes_up: end.bytes_up,
        bytes_down: end.bytes_down,
        network: meta.network,
        request_headers: meta.request_headers,
        response_headers: end.response_headers,
        http_version: meta.http_version,
    });
}

/// The outcome of a refusal, by its rule.
pub(crate) fn outcome_of(refusal: &Refusal) -> Outcome {
    use crate::policy::Rule;
    match refusal.rule {
        Rule::Timeout => Outcome::Timeout,
        // The platform cancelled the call in flight, as the background does.
        Rule::Interrupted | Rule::NetworkChange => Outcome::Interrupted,
        Rule::Upstream | Rule::Tls => Outcome::UpstreamError,
        Rule::ClientError => Outcome::Aborted,
        _ => Outcome::Refused,
    }
}

pin_project! {
    /// Counts the bytes of a request body as the upstream reads them, and remembers whether the
    /// client's own body was broken (a bad chunk size), so that is not blamed on the server.
    pub(crate) struct Counted<B> {
        #[pin]
        inner: B,
        count: Arc<RequestBody>,
    }
}

/// What the upstream read of a request body.
#[derive(Debug, Default)]
pub(crate) struct RequestBody {
    pub bytes: AtomicU64,
    /// The client's body ended with an error (malformed framing, connection lost).
    pub client_error: AtomicBool,
}

impl RequestBody {
    /// Bytes the upstream read.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The client's body ended with an error.
    pub fn client_error(&self) -> bool {
        self.client_error.load(Ordering::Relaxed)
    }
}

impl<B> Counted<B> {
    pub fn new(inner: B, count: Arc<RequestBody>) -> Self {
        Counted { inner, count }
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.count
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(_))) => this.count.client_error.store(true, Ordering::Relaxed),
            _ => {}
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a call was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    Timeout,
    Interrupted,
    /// The instance's network changed while the call was in flight.
    NetworkChange,
    /// The instance went offline (or was offline when the call began).
    Offline,
}

impl From<NetCut> for Cut {
    fn from(cut: NetCut) -> Cut {
        match cut {
            NetCut::Change => Cut::NetworkChange,
            NetCut::Offline => Cut::Offline,
        }
    }
}

/// The refusal of a socket or tunnel the network cut.
pub(crate) fn net_refusal(cut: NetCut, api: Api, url: &str) -> Refusal {
    match cut {
        NetCut::Change => Refusal::network_change(api, url),
        NetCut::Offline => Refusal::offline(api, url),
    }
}

/// A call's deadline, its instance's background cut and its network cut: one timer and two
/// cut futures per call, shared by every wait (queue, upstream, decoding) and then by the
/// watchdog.
pub(crate) struct Clock {
    /// Looked at only once elapsed: a call's future is polled at each wake of its task.
    deadline: Pin<Box<QuietSleep>>,
    cut: Option<CallCut>,
}

impl Clock {
    /// `instance`: whose background and network cuts end the call; `None` for a call they
    /// don't cut (a CORS preflight).
    pub fn new(deadline: Instant, instance: Option<Arc<Instance>>) -> Self {
        Clock {
            deadline: Box::pin(quiet::sleep(tokio::time::sleep_until(deadline))),
            cut: instance.map(|i| i.call_cut()),
        }
    }

    /// Run `fut` unless the call is cut or times out first.
    ///
    /// A plain future rather than an `async fn` around `select!`: that form stored `fut` twice
    /// (its argument and the macro's copy), and every call moved the doubled state through each
    /// stage that awaits it.
    pub fn race<F: Future>(&mut self, fut: F) -> Race<'_, F> {
        Race { clock: self, fut }
    }

    /// Resolves when the call is to be cut.
    async fn fired(&mut self) -> Cut {
        match self.race(std::future::pending::<()>()).await {
            Err(cut) => cut,
            Ok(()) => Cut::Timeout,
        }
    }
}

pin_project! {
    /// [`Clock::race`]: the cut first, then the deadline, then `fut` (the order a cut call's
    /// record needs when several are ready at once).
    pub(crate) struct Race<'c, F> {
        clock: &'c mut Clock,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Race<'_, F> {
    type Output = Result<F::Output, Cut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(cut) = this.clock.cut.as_mut() {
            if let Poll::Ready(by) = Pin::new(cut).poll(cx) {
                return Poll::Ready(Err(match by {
                    CutBy::Background => Cut::Interrupted,
                    CutBy::Network(net) => net.into(),
                }));
            }
        }
        if this.clock.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Cut::Timeout));
        }
        this.fut.poll(cx).map(Ok)
    }
}

/// What a cut call's record says, and how to end its transport.
pub(crate) struct CutInfo {
    pub api: Api,
    pub url: Arc<str>,
    pub timeout_ms: u64,
    pub grace_ms: u64,
    /// Ends the transport: the HTTP/2 stream (reset) or the HTTP/1.1 connection (closed).
    pub kill: CancellationToken,
}

impl CutInfo {
    pub fn refusal(&self, cut: Cut) -> Refusal {
        match cut {
            Cut::Timeout => Refusal::timeout(self.api, &self.url, self.timeout_ms),
            Cut::Interrupted => Refusal::interrupted(self.api, &self.url, self.grace_ms),
            Cut::NetworkChange => Refusal::network_change(self.api, &self.url),
            Cut::Offline => Refusal::offline(self.api, &self.url),
        }
    }
}

/// A call whose response head is out: what finishing it needs.
pub(crate) struct Live {
    pub shared: Arc<Shared>,
    pub meta: CallMeta,
    pub end: End,
    /// What the upstream read of the request body (none for a body known to be empty).
    pub request_body: Option<Arc<RequestBody>>,
    /// The call's slot: released when the call ends, whoever ends it.
    pub permit: Option<OwnedSemaphorePermit>,
    /// The upstream response body (decoded); dropped with the call.
    pub body: Body,
    /// Frames already read from `body` (by [`read_ready`]), handed on first.
    pub replay: VecDeque<Result<Frame<Bytes>, BoxError>>,
    /// `Content-Length` of what the client is sent, when known.
    pub expected: Option<u64>,
    /// Keeps the connection busy (not idle) until the call ends.
    #[allow(dead_code)]
    pub activity: ActivityGuard,
}

/// The call shared by its response body and its watchdog: whoever ends it first records it.
struct CallCtl {
    live: Mutex<Option<(Live, oneshot::Sender<()>)>>,
    /// The body was delivered in full.
    complete: AtomicBool,
    cut: CutInfo,
}

impl CallCtl {
    fn finish(&self, outcome: Outcome) {
        let taken = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((live, _done)) = taken {
            finish_live(live, outcome, None);
        }
    }

    /// The watchdog fired: record the cut, free the slot, end the transport.
    fn cut(&self, cut: Cut) {
        let taken = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some((live, _done)) = taken else { return };
        let refusal = self.cut.refusal(cut);
        tracing::info!(app = live.meta.appid.as_deref().unwrap_or("-"), client = %live.meta.client,
            api = refusal.api.as_str(), url = %refusal.url, rule = refusal.rule.as_str(),
            bytes.down = live.end.bytes_down, "cut mid-response");
        finish_live(live, outcome_of(&refusal), Some(&refusal));
        self.cut.kill.cancel();
    }
}

fn finish_live(mut live: Live, outcome: Outcome, refusal: Option<&Refusal>) {
    live.permit.take();
    live.end.bytes_up = live.request_body.as_ref().map_or(0, |b| b.bytes());
    let Live {
        shared, meta, end, ..
    } = live;
    record(&shared, meta, outcome, refusal, end);
}

/// What of a response body could be read without waiting.
pub(crate) enum Ready {
    /// All of it: a small response usually comes with its head.
    Whole(Bytes),
    /// The first frames (maybe none); the rest is still to come.
    Started(VecDeque<Result<Frame<Bytes>, BoxError>>),
}

/// Read what of `body` is there already (at most two frames), without waiting for more. Any
/// body (the upstream's own, unboxed, or a decoded one).
pub(crate) fn read_ready<B>(body: &mut B) -> Ready
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // The usual small response: one data frame, and the body ends with it (no queue made).
    let first = match Pin::new(&mut *body).poll_frame(&mut cx) {
        Poll::Ready(None) => return Ready::Whole(Bytes::new()),
        Poll::Ready(Some(Ok(frame))) => frame,
        Poll::Ready(Some(Err(e))) => return Ready::Started(VecDeque::from([Err(e.into())])),
        Poll::Pending => return Ready::Started(VecDeque::new()),
    };
    let first = match first.into_data() {
        Ok(data) if body.is_end_stream() => return Ready::Whole(data),
        Ok(data) => Frame::data(data),
        Err(frame) => frame,
    };
    let mut frames = VecDeque::from([Ok(first)]);
    if body.is_end_stream() {
        return whole(frames);
    }
    match Pin::new(&mut *body).poll_frame(&mut cx) {
        Poll::Ready(None) => return whole(frames),
        Poll::Ready(Some(Ok(frame))) => {
            frames.push_back(Ok(frame));
            if body.is_end_stream() {
                return whole(frames);
            }
        }
        Poll::Ready(Some(Err(e))) => frames.push_back(Err(e.into())),
        Poll::Pending => {}
    }
    Ready::Started(frames)
}

/// The body of `frames` read to its end: whole when they are all data.
fn whole(mut frames: VecDeque<Result<Frame<Bytes>, BoxError>>) -> Ready {
    if !frames.iter().all(|f| f.as_ref().is_ok_and(Frame::is_data)) {
        return Ready::Started(frames);
    }
    let mut data = frames
        .drain(..)
        .filter_map(|f| f.ok().and_then(|f| f.into_data().ok()));
    let first = data.next().unwrap_or_default();
    match data.next() {
        None => Ready::Whole(first),
        Some(second) => Ready::Whole([first, second].concat().into()),
    }
}

/// Hand the response body to the client under a watchdog: at the deadline or the cut the call
/// ends at once (slot freed, recorded, transport ended), whether or not the client reads.
pub(crate) fn track(live: Live, mut clock: Clock, cut: CutInfo) -> Body {
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let ctl = Arc::new(CallCtl {
        live: Mutex::new(Some((live, done_tx))),
        complete: AtomicBool::new(false),
        cut,
    });
    let watched = ctl.clone();
    tokio::spawn(async move {
        tokio::select! {
            biased;
            _ = done_rx => {}
            cut = clock.fired() => watched.cut(cut),
        }
    });
    http_body_util::BodyExt::boxed_unsync(Tracked { ctl })
}

/// The response body of a tracked call.
struct Tracked {
    ctl: Arc<CallCtl>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Dropped before the end: the client went away (or the stream was reset).
        self.ctl.finish(Outcome::Aborted);
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let ctl = &self.ctl;
        let mut guard = ctl.live.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((live, _)) = guard.as_mut() else {
            if ctl.complete.load(Ordering::Relaxed) {
                return Poll::Ready(None);
            }
            return Poll::Ready(Some(Err("the call was cut (timeout or background)".into())));
        };
        let polled = match live.replay.pop_front() {
            Some(frame) => Poll::Ready(Some(frame)),
            None => Pin::new(&mut live.body).poll_frame(cx),
        };
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    live.end.bytes_down += data.len() as u64;
                }
                (live.replay.is_empty() && live.body.is_end_stream())
                    || live.expected == Some(live.end.bytes_down)
            }
            Poll::Ready(None) => true,
            Poll::Ready(Some(Err(_))) => {
                if let Some((live, _done)) = guard.take() {
                    drop(guard);
                    finish_live(live, Outcome::UpstreamError, None);
                }
                return polled;
            }
            Poll::Pending => false,
        };
        if ended {
            ctl.complete.store(true, Ordering::Relaxed);
            if let Some((live, _done)) = guard.take() {
                drop(guard);
                finish_live(live, Outcome::Ok, None);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ctl.complete.load(Ordering::Relaxed)
    }

    fn size_hint(&self) -> SizeHint {
        let guard = self.ctl.live.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some((live, _)) => {
                // What is read already and still to be handed on counts too.
                let queued: u64 = live
                    .replay
                    .iter()
                    .filter_map(|f| f.as_ref().ok().and_then(Frame::data_ref))
                    .map(|d| d.len() as u64)
                    .sum();
                let rest = live.body.size_hint();
                let mut hint = SizeHint::new();
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(queued));
                }
                hint.set_lower(rest.lower().saturating_add(queued));
                hint
            }
            None => SizeHint::default(),
        }
    }
}
