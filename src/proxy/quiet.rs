//! Waits that rarely end (a cancellation, a far deadline), polled again only when they may have.
//!
//! `select!` (and a call's race against its clock) poll every branch each time their task wakes,
//! and a connection's task wakes several times per call, for its sockets. A cancellation
//! token's wait takes a lock and a walk of its waiters at every poll, a sleep a look into the
//! timer; the event itself is rare. [`Quiet`] asks a cheap question first (`fired`: is the
//! token cancelled, has the sleep elapsed) and polls the wait only when it says yes, on the
//! first poll, or when the task's waker changed (the wait must hold the current one).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pin_project! {
    /// See the module: `wait`, polled only when `fired` says it may be ready.
    pub(crate) struct Quiet<F, C> {
        #[pin]
        wait: F,
        fired: C,
        // The waker `wait` holds since its last poll (none before the first).
        waker: Option<Waker>,
    }
}

impl<F: Future, C: Fn(Pin<&mut F>) -> bool> Future for Quiet<F, C> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        if let Some(waker) = this.waker.as_ref() {
            if waker.will_wake(cx.waker()) && !(this.fired)(this.wait.as_mut()) {
                return Poll::Pending;
            }
        }
        let polled = this.wait.poll(cx);
        if polled.is_pending() {
            *this.waker = Some(cx.waker().clone());
        }
        polled
    }
}

/// `token.cancelled()`, polled only once the token says it is cancelled.
pub(crate) fn cancelled(
    token: &CancellationToken,
) -> Quiet<
    WaitForCancellationFuture<'_>,
    impl Fn(Pin<&mut WaitForCancellationFuture<'_>>) -> bool + '_,
> {
    Quiet {
        wait: token.cancelled(),
        fired: move |_: Pin<&mut WaitForCancellationFuture<'_>>| token.is_cancelled(),
        waker: None,
    }
}

/// A [`Sleep`] looked at only once elapsed.
pub(crate) type QuietSleep = Quiet<Sleep, fn(Pin<&mut Sleep>) -> bool>;

/// `sleep`, polled only once it has elapsed.
pub(crate) fn sleep(sleep: Sleep) -> QuietSleep {
    Quiet {
        wait: sleep,
        fired: |s: Pin<&mut Sleep>| s.is_elapsed(),
        waker: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Each wait still ends when its event comes, polled by `select!` among busier branches
    /// (a task woken many times before the event).
    #[tokio::test(start_paused = true)]
    async fn quiet_waits_end_when_their_event_comes() {
        let token = CancellationToken::new();
        let cancel = token.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(1);
        tokio::spawn(async move {
            for i in 0..50 {
                if tx.send(i).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cancel.cancel();
        });
        let wait = cancelled(&token);
        tokio::pin!(wait);
        let (mut woken, mut ended) = (0, false);
        for _ in 0..100 {
            tokio::select! {
                () = &mut wait => { ended = true; break }
                Some(_) = rx.recv() => woken += 1,
                () = tokio::time::sleep(Duration::from_millis(1_000)) => break,
            }
        }
        assert!(ended, "the token's wait ended");
        assert_eq!(
            woken, 50,
            "the token's wait ended after the 50 wake-ups, not before"
        );

        let timer = sleep(tokio::time::sleep(Duration::from_secs(5)));
        tokio::pin!(timer);
        let start = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        let (mut woken, mut ended) = (0, false);
        for _ in 0..1000 {
            tokio::select! {
                () = &mut timer => { ended = true; break }
                _ = ticks.tick() => woken += 1,
            }
        }
        assert!(ended, "the sleep ended");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(woken >= 49, "woken {woken} times before the deadline");
    }
}
