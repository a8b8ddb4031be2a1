//! One call's life after its verdict: the record it leaves in the call log, and the response
//! body that holds the call's slot, watches its deadline and the background cut, and counts bytes.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::calllog::{Outcome, Record};
use crate::policy::Refusal;
use crate::proxy::body::BoxError;
use crate::state::Shared;

/// What is known of a call when it arrives.
#[derive(Debug, Clone)]
pub(crate) struct CallMeta {
    pub id: u64,
    pub ts: time::OffsetDateTime,
    pub arrival: Instant,
    pub appid: Option<String>,
    pub client: IpAddr,
    pub api: &'static str,
    pub method: String,
    pub url: String,
    pub request_headers: HeaderMap,
    pub http_version: String,
}

impl CallMeta {
    pub fn new(
        shared: &Shared,
        client: IpAddr,
        method: &str,
        url: &str,
        headers: &HeaderMap,
        version: http::Version,
    ) -> Self {
        // Formatted only when served (/api/log, /api/har): calls outnumber reads.
        let ts = time::OffsetDateTime::now_utc();
        CallMeta {
            id: shared.log.next_id(),
            ts,
            arrival: Instant::now(),
            appid: None,
            client,
            api: "request",
            method: method.to_owned(),
            url: url.to_owned(),
            request_headers: headers.clone(),
            http_version: format!("{version:?}"),
        }
    }
}

/// How a call ended, for its record.
#[derive(Debug, Default)]
pub(crate) struct End {
    pub status: Option<u16>,
    pub queue_ms: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub response_headers: HeaderMap,
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
        status: refusal.map(|r| r.status).or(end.status),
        errno: refusal.map(|r| r.errno),
        errmsg: refusal.map(|r| r.errmsg.clone()),
        rule: refusal.map(|r| r.rule.as_str()),
        detail: refusal.map(|r| r.detail.clone()),
        queue_ms: end.queue_ms,
        duration_ms,
        bytes_up: end.bytes_up,
        bytes_down: end.bytes_down,
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
        Rule::Interrupted => Outcome::Interrupted,
        Rule::Upstream | Rule::Tls => Outcome::UpstreamError,
        _ => Outcome::Refused,
    }
}

pin_project! {
    /// Counts the bytes of a request body as the upstream reads them.
    pub(crate) struct Counted<B> {
        #[pin]
        inner: B,
        count: Arc<AtomicU64>,
    }
}

impl<B> Counted<B> {
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Self {
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
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
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

/// The pieces a tracked response needs to finish its call.
pub(crate) struct Tracking {
    pub shared: Arc<Shared>,
    pub meta: CallMeta,
    pub end: End,
    pub bytes_up: Arc<AtomicU64>,
    /// The call's slot: released when the body ends or is dropped (client gone).
    pub permit: Option<OwnedSemaphorePermit>,
    pub deadline: Option<Pin<Box<Sleep>>>,
    pub cut: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Tracking {
    fn finish(mut self, outcome: Outcome) {
        self.permit.take();
        self.end.bytes_up = self.bytes_up.load(Ordering::Relaxed);
        let refusal = None;
        record(&self.shared, self.meta, outcome, refusal, self.end);
    }
}

pin_project! {
    /// A response body that finishes its call: records it once (ok when fully sent, aborted when
    /// the client went away, timeout/interrupted when cut) and releases its slot.
    pub(crate) struct Tracked<B> {
        #[pin]
        inner: B,
        tracking: Option<Tracking>,
    }

    impl<B> PinnedDrop for Tracked<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(tracking) = this.tracking.take() {
                tracking.finish(Outcome::Aborted);
            }
        }
    }
}

impl<B> Tracked<B> {
    pub fn new(inner: B, tracking: Tracking) -> Self {
        Tracked {
            inner,
            tracking: Some(tracking),
        }
    }
}

impl<B> HttpBody for Tracked<B>
where
    B: HttpBody<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let Some(tracking) = this.tracking.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        if tracking
            .cut
            .as_mut()
            .is_some_and(|cut| cut.as_mut().poll(cx).is_ready())
        {
            if let Some(t) = this.tracking.take() {
                t.finish(Outcome::Interrupted);
            }
            return Poll::Ready(Some(Err(
                "interrupted: the app went to the background".into()
            )));
        }
        if tracking
            .deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready())
        {
            if let Some(t) = this.tracking.take() {
                t.finish(Outcome::Timeout);
            }
            return Poll::Ready(Some(
                Err("timeout while the response was being sent".into()),
            ));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    tracking.end.bytes_down += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(t) = this.tracking.take() {
                    t.finish(Outcome::UpstreamError);
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if let Some(t) = this.tracking.take() {
                    t.finish(Outcome::Ok);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Until the call is recorded, make hyper poll to the end, so the record is "ok".
        self.tracking.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
