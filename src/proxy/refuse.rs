//! How a refused call ends, in one place: logged, recorded once, then answered (status,
//! `X-Wxsandbox-*`, JSON) or failed at the transport (no HTTP response: the HTTP/1.1
//! connection closes, the HTTP/2 stream is reset), as its style says (SPEC section 4).
//! A request body still arriving is read and thrown away first (bounded), so an HTTP/1.1
//! client that is still uploading reads the answer instead of a reset.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Response, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::info;

use crate::policy::{Refusal, Style};
use crate::proxy::call::{outcome_of, record, CallMeta, End};
use crate::state::Shared;
use crate::web::answer;
use crate::web::body::{Body, BoxError};

/// At most this much of a refused request's body is read and discarded.
pub const DRAIN_BYTES: u64 = 4 * 1024 * 1024;
/// For at most this long.
pub const DRAIN_TIME: Duration = Duration::from_secs(3);

/// A refused call, on its way out.
pub(crate) struct Refused {
    pub meta: CallMeta,
    pub refusal: Refusal,
    pub style: Style,
    pub origin: Option<HeaderValue>,
    /// The request body, when the proxy still holds it.
    pub body: Option<Incoming>,
    /// The request's HTTP version and whether it expects `100 Continue`.
    pub version: Version,
    pub expects_continue: bool,
    /// Calls started on the connection before this one (0: its first).
    pub earlier_calls: u64,
}

/// The error a service returns to fail a call at the transport.
#[derive(Debug, thiserror::Error)]
#[error("refused by the sandbox: {0}")]
pub struct TransportFail(pub String);

/// Log, record, and answer or fail a refused call.
pub(crate) async fn finish(shared: &Shared, refused: Refused) -> Result<Response<Body>, BoxError> {
    let Refused {
        meta,
        refusal,
        style,
        origin,
        body,
        version,
        expects_continue,
        earlier_calls,
    } = refused;
    let http1 = version <= Version::HTTP_11;
    if style == Style::Fail && http1 {
        let key = format!("{} {}", meta.method, refusal.url);
        if earlier_calls == 0 && shared.resends.is_resend(meta.client, &key) {
            tracing::debug!(url = %refusal.url, "a client resent a refused call: not recorded twice");
            return fail(
                body.filter(|b| !expects_continue && !b.is_end_stream()),
                refusal,
            )
            .await;
        }
        if earlier_calls > 0 {
            shared.resends.expect(meta.client, &key);
        }
    }
    info!(app = meta.appid.as_deref().unwrap_or("-"), client = %meta.client, api = refusal.api.as_str(),
        url = %refusal.url, rule = refusal.rule.as_str(), errmsg = %refusal.errmsg,
        style = if style == Style::Fail { "fail" } else { "answer" }, "refused");
    let appid = meta.appid.clone();
    let end = End {
        status: (style == Style::Answer).then_some(refusal.status),
        ..End::default()
    };
    record(shared, meta, outcome_of(&refusal), Some(&refusal), end);
    // Only an HTTP/1.1 client still sending a body needs it read (HTTP/2 resets one stream).
    let pending =
        body.filter(|b| version <= Version::HTTP_11 && !expects_continue && !b.is_end_stream());
    match style {
        Style::Fail => fail(pending, refusal).await,
        Style::Answer => {
            let response = answer::refusal(&refusal, appid.as_deref(), origin.as_ref());
            Ok(match pending {
                Some(body) => response.map(|answer| DrainAfter::body(answer, body)),
                None => response,
            })
        }
    }
}

/// Fail at the transport, after reading what the client is still sending (bounded).
async fn fail(pending: Option<Incoming>, refusal: Refusal) -> Result<Response<Body>, BoxError> {
    if let Some(body) = pending {
        drain(body).await;
    }
    Err(Box::new(TransportFail(refusal.errmsg)))
}

/// Read and discard a body, bounded in bytes and time.
pub async fn drain(mut body: Incoming) {
    let read = async {
        let mut seen = 0u64;
        while seen <= DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => {
                    seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

/// An answer that, once sent, reads the rest of the request body (bounded) before it ends, so
/// hyper keeps the HTTP/1.1 connection open until the client has finished sending.
struct DrainAfter {
    answer: Body,
    request: Option<Incoming>,
    seen: u64,
    until: Pin<Box<tokio::time::Sleep>>,
}

impl DrainAfter {
    fn body(answer: Body, request: Incoming) -> Body {
        DrainAfter {
            answer,
            request: Some(request),
            seen: 0,
            until: Box::pin(tokio::time::sleep(DRAIN_TIME)),
        }
        .boxed_unsync()
    }
}

impl HttpBody for DrainAfter {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.answer).poll_frame(cx) {
            Poll::Ready(None) => {}
            other => return other,
        }
        while let Some(request) = this.request.as_mut() {
            if this.seen > DRAIN_BYTES || this.until.as_mut().poll(cx).is_ready() {
                this.request = None;
                break;
            }
            match Pin::new(request).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                Poll::Ready(_) => this.request = None,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.request.is_none() && self.answer.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown on purpose: with an exact length hyper would stop polling after the answer
        // and never read the rest of the request.
        SizeHint::default()
    }
}
