//! One client connection's life, whatever it speaks: how many calls are in flight on it, when
//! it last did something, the deadlines that close it when it says nothing (first request, idle
//! keep-alive), and the switch that closes it at once (a call cut mid-response on HTTP/1.1).
//!
//! Also the executor of HTTP/2 streams: each stream runs in its own task with a token that
//! ends it, so one call can be reset (RST_STREAM) without touching the others.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::proxy::quiet;

/// A client connection's place under `proxy.max_connections`, held by every part of it (the
/// outer connection, its tunnel, the intercepted connection inside).
#[derive(Debug)]
pub(crate) struct ConnSlot(#[allow(dead_code)] pub OwnedSemaphorePermit);

/// What one connection is doing, for its deadlines.
#[derive(Debug)]
pub(crate) struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Calls started on this connection.
    started: AtomicU64,
    /// Milliseconds after `born` of the last call's start or end.
    last_ms: AtomicU64,
    /// Cancelled to drop the connection at once.
    pub close: CancellationToken,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            close: CancellationToken::new(),
        }
    }
}

impl Activity {
    /// A call starts; it ends when the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        // No touch (a clock read): the last activity counts only with no call in flight, and
        // the guard's drop, which ends this call, touches before it counts the call out.
        ActivityGuard(self.clone())
    }

    /// Calls started on this connection so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection is to be closed if nothing happens before: `None` while a call is
    /// in flight. Before the first call, the sooner of `first` and `idle`.
    fn deadline(&self, first: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        if self.started.load(Ordering::Relaxed) == 0 {
            return Some(self.born + first.min(idle));
        }
        Some(self.born + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle)
    }
}

/// One call in flight on a connection.
#[derive(Debug)]
pub(crate) struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The deadlines of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// The first request must arrive within this (TLS handshake and head included).
    pub first: Duration,
    /// A connection with no call in flight is closed after this.
    pub idle: Duration,
}

impl Deadlines {
    /// An HTTP/1.1 connection's: between calls, the next head must come within `first` (the
    /// head timeout), and the connection goes after `idle` at the latest. A client reads no
    /// answer before its head is whole, so this is the head deadline, kept by the connection's
    /// one timer: hyper's `header_read_timeout` does the same with a timer armed and dropped
    /// for every request (a boxed sleep in the timer wheel per call).
    pub fn http1(self) -> Deadlines {
        Deadlines {
            first: self.first,
            idle: self.idle.min(self.first),
        }
    }
}

/// How long a connection asked to shut down gracefully (idle, shutdown) may take.
const GRACEFUL_WAIT: Duration = Duration::from_secs(2);

/// Drive a hyper connection until it ends, it is idle too long, its close switch flips, or
/// the proxy shuts down. `graceful` asks it to finish (GOAWAY, or close when idle).
pub(crate) async fn drive<C, E>(
    mut connection: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    deadlines: Deadlines,
    shutdown: &CancellationToken,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    loop {
        let deadline = activity.deadline(deadlines.first, deadlines.idle);
        let wake = deadline.unwrap_or_else(|| Instant::now() + deadlines.idle);
        // In this order, without a random start (a draw per wake): the connection is the
        // busy branch, the others are quiet waits.
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "client connection ended with an error");
                }
                return;
            }
            () = quiet::cancelled(&activity.close) => {
                debug!("client connection closed: a call on it was cut");
                return;
            }
            () = quiet::cancelled(shutdown) => break,
            () = quiet::sleep(tokio::time::sleep_until(wake)) => {
                // Still idle at its deadline (a call may have started or ended meanwhile).
                if activity
                    .deadline(deadlines.first, deadlines.idle)
                    .is_some_and(|d| d <= Instant::now())
                {
                    debug!("client connection closed: idle");
                    break;
                }
            }
        }
    }
    graceful(connection.as_mut());
    let _ = tokio::time::timeout(GRACEFUL_WAIT, connection).await;
}

tokio::task_local! {
    /// Inside an HTTP/2 stream's task: the token that ends the stream (RST_STREAM).
    static STREAM_KILL: CancellationToken;
}

/// The token that ends the current HTTP/2 stream, when the caller runs in one.
pub(crate) fn current_stream_kill() -> Option<CancellationToken> {
    STREAM_KILL.try_with(CancellationToken::clone).ok()
}

/// Runs each HTTP/2 stream in its own task, ended (and so reset) when its token is cancelled.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let kill = CancellationToken::new();
        let guard = kill.clone();
        tokio::spawn(STREAM_KILL.scope(kill, async move {
            tokio::select! {
                _ = fut => {}
                () = guard.cancelled() => {}
            }
        }));
    }
}
