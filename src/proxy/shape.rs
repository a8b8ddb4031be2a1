//! Network shaping (I/O side of [`crate::policy::network`]): bodies and relayed bytes wait on
//! their instance's token buckets, so every call of an instance shares its bandwidth. Nothing
//! here is used for a link that doesn't shape (`online`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use crate::instances::Link;
use crate::policy::{network, Refusal};
use crate::proxy::admit::Admitted;
use crate::proxy::refuse::Refused;
use crate::state::Shared;
use crate::web::body::{self, Body, BoxError};

/// Shape `body` in a direction (down: to the client) when the link limits it; else as it is.
pub(crate) fn body(inner: Body, link: &Arc<Link>, down: bool) -> Body {
    if !link.shapes(down) {
        return inner;
    }
    body::boxed(Shaped {
        inner,
        link: link.clone(),
        down,
        rest: Bytes::new(),
        ready: None,
        sleep: None,
    })
}

/// A body whose data frames are cut into pieces, each sent once the bucket allows it.
struct Shaped {
    inner: Body,
    link: Arc<Link>,
    down: bool,
    /// What is left of the frame being sent.
    rest: Bytes,
    /// The piece being waited for.
    ready: Option<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl HttpBody for Shaped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            if let Some(piece) = this.ready.take() {
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if !this.rest.is_empty() {
                let n = this.rest.len().min(this.link.chunk(this.down));
                let piece = this.rest.split_to(n);
                let wait = this.link.reserve(this.down, n);
                if wait.is_zero() {
                    return Poll::Ready(Some(Ok(Frame::data(piece))));
                }
                this.ready = Some(piece);
                this.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                continue;
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.ready.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held = (self.rest.len() + self.ready.as_ref().map_or(0, Bytes::len)) as u64;
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint.set_lower(inner.lower().saturating_add(held));
        hint
    }
}

/// Write `bytes` to `to` at the link's rate in a direction (a relay's write).
pub(crate) async fn write<W: AsyncWrite + Unpin>(
    to: &mut W,
    bytes: &[u8],
    link: &Link,
    down: bool,
) -> std::io::Result<()> {
    if !link.shapes(down) {
        return to.write_all(bytes).await;
    }
    for piece in bytes.chunks(link.chunk(down)) {
        let wait = link.reserve(down, piece.len());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        to.write_all(piece).await?;
    }
    Ok(())
}

/// The network before the upstream: an offline link fails the call at once; otherwise its
/// round-trip latency, and for a lost call a stall until the clock ends it (its timeout, or a
/// cut). Raced against the call's clock; nothing is waited for on a link that doesn't shape.
pub(crate) async fn travel(a: &mut Admitted<'_>, shared: &Shared) -> Result<(), Box<Refused>> {
    let profile = a.link.profile;
    if profile.is_online() {
        return Ok(());
    }
    if profile.offline {
        let refusal = Refusal::offline(a.api, &a.url);
        return Err(a.refused(refusal));
    }
    let lost = profile.loss > 0.0 && network::is_lost(shared.instances.draw(), profile.loss);
    let delay = async {
        tokio::time::sleep(profile.latency()).await;
        if lost {
            std::future::pending::<()>().await;
        }
    };
    match a.clock.race(delay).await {
        Ok(()) => Ok(()),
        Err(cut) => Err(a.cut(cut)),
    }
}

/// `tokio::io::copy_bidirectional` at the link's rates (down: `b` to `a`); the plain copy when
/// the link shapes neither direction. Returns the bytes copied up (`a` to `b`) and down.
pub(crate) async fn copy_bidirectional<A, B>(
    a: &mut A,
    b: &mut B,
    link: &Link,
) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if !link.shapes(true) && !link.shapes(false) {
        return tokio::io::copy_bidirectional(a, b).await;
    }
    let (mut a_rd, mut a_wr) = tokio::io::split(a);
    let (mut b_rd, mut b_wr) = tokio::io::split(b);
    tokio::try_join!(
        copy_one(&mut a_rd, &mut b_wr, link, false),
        copy_one(&mut b_rd, &mut a_wr, link, true),
    )
}

/// One direction until EOF (then the writer is shut down), each chunk at the link's rate.
async fn copy_one<R, W>(from: &mut R, to: &mut W, link: &Link, down: bool) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(total);
        }
        write(to, &buf[..n], link, down).await?;
        to.flush().await?;
        total += n as u64;
    }
}
