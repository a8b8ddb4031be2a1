//! How calls in flight learn that their instance cut them (the background grace elapsed) or
//! that its network changed. A call waits on every stage (queue, upstream, decoding, the
//! response body) for one of these; a watch receiver per event locks its channel on every
//! poll of every wait. Here a call registers its task once, polls two counters, and every event
//! wakes the registered calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use super::{Instance, NetCut, Phase};

/// An instance's events, counted, and the calls waiting for one.
#[derive(Debug, Default)]
pub(super) struct Cuts {
    /// Bumped when the background grace elapses (the instance's calls are cut).
    background: AtomicU64,
    /// Bumped by each network event (a change, going offline or online).
    network: AtomicU64,
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    next: u64,
    tasks: Vec<(u64, Waker)>,
}

impl Cuts {
    /// The background cut: after the phase is `Cut`.
    pub(super) fn background(&self) {
        self.background.fetch_add(1, Ordering::SeqCst);
        self.wake_all();
    }

    /// A network event: after the instance's network state changed.
    pub(super) fn network(&self) {
        self.network.fetch_add(1, Ordering::SeqCst);
        self.wake_all();
    }

    fn wake_all(&self) {
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, waker) in &waiting.tasks {
            waker.wake_by_ref();
        }
    }

    fn register(&self, key: Option<u64>, waker: &Waker) -> u64 {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = key {
            if let Some(slot) = waiting.tasks.iter_mut().find(|(k, _)| *k == key) {
                slot.1.clone_from(waker);
                return key;
            }
        }
        let key = waiting.next;
        waiting.next += 1;
        waiting.tasks.push((key, waker.clone()));
        key
    }

    fn unregister(&self, key: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = waiting.tasks.iter().position(|(k, _)| *k == key) {
            waiting.tasks.swap_remove(i);
        }
    }
}

/// What cut a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutBy {
    /// The instance stayed in the background past the grace.
    Background,
    Network(NetCut),
}

/// Resolves when the instance cuts the calls in flight when it was made: the background cut
/// (or the instance already cut), a network change after it, the network being or going
/// offline.
#[derive(Debug)]
pub struct CallCut {
    instance: Arc<Instance>,
    background: u64,
    network: u64,
    /// The network's change count when the call began.
    changes: u64,
    /// Registered as this task, under this key.
    registered: Option<(u64, Waker)>,
}

impl CallCut {
    pub(super) fn new(instance: Arc<Instance>) -> CallCut {
        let cuts = &instance.cuts;
        let background = cuts.background.load(Ordering::SeqCst);
        let network = cuts.network.load(Ordering::SeqCst);
        // Already cut: fires at once (as a call that waits for the phase to be `Cut` would).
        let background = if instance.phase() == Phase::Cut {
            background.wrapping_sub(1)
        } else {
            background
        };
        let state = *instance.net.borrow();
        // Offline already: fires at once as well.
        let network = if state.offline {
            network.wrapping_sub(1)
        } else {
            network
        };
        let changes = state.changes;
        CallCut {
            instance,
            background,
            network,
            changes,
            registered: None,
        }
    }

    fn check(&mut self) -> Option<CutBy> {
        let cuts = &self.instance.cuts;
        if cuts.background.load(Ordering::SeqCst) != self.background {
            return Some(CutBy::Background);
        }
        let network = cuts.network.load(Ordering::SeqCst);
        if network != self.network {
            let state = *self.instance.net.borrow();
            if state.offline {
                return Some(CutBy::Network(NetCut::Offline));
            }
            if state.changes != self.changes {
                return Some(CutBy::Network(NetCut::Change));
            }
            // Back online without a change: nothing for this call.
            self.network = network;
        }
        None
    }
}

impl Future for CallCut {
    type Output = CutBy;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CutBy> {
        let this = self.get_mut();
        if let Some(by) = this.check() {
            return Poll::Ready(by);
        }
        let current = this.registered.as_ref();
        if !current.is_some_and(|(_, w)| w.will_wake(cx.waker())) {
            let key = this
                .instance
                .cuts
                .register(current.map(|(k, _)| *k), cx.waker());
            this.registered = Some((key, cx.waker().clone()));
            // An event between the check and the registration: seen now.
            if let Some(by) = this.check() {
                return Poll::Ready(by);
            }
        }
        Poll::Pending
    }
}

impl Drop for CallCut {
    fn drop(&mut self) {
        if let Some((key, _)) = self.registered.take() {
            self.instance.cuts.unregister(key);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::Limits;
    use crate::instances::Link;
    use crate::policy::network::Profile;

    fn instance() -> Arc<Instance> {
        Arc::new(Instance::new(
            "wx0123456789abcdef",
            std::net::IpAddr::from([127, 0, 0, 1]),
            &Limits::default(),
            Phase::Foreground,
            Link::new("online", Profile::default()),
        ))
    }

    fn poll(cut: &mut CallCut) -> Poll<CutBy> {
        Pin::new(cut).poll(&mut Context::from_waker(Waker::noop()))
    }

    fn waiting(instance: &Instance) -> usize {
        instance.cuts.waiting.lock().unwrap().tasks.len()
    }

    /// Each event cuts the calls in flight when it happens, with its reason; a call registers
    /// once however often it is polled, and leaves no waiter behind.
    #[test]
    fn calls_in_flight_see_each_event_and_leave_no_waiter() {
        let i = instance();
        let mut changed = i.call_cut();
        for _ in 0..3 {
            assert!(poll(&mut changed).is_pending());
        }
        assert_eq!(waiting(&i), 1, "one registration for three polls");
        i.network_change();
        assert_eq!(
            poll(&mut changed),
            Poll::Ready(CutBy::Network(NetCut::Change))
        );
        drop(changed);
        assert_eq!(waiting(&i), 0);

        // A call that begins after the change is not cut by it.
        let mut later = i.call_cut();
        assert!(poll(&mut later).is_pending());
        i.set_link(Link::new(
            "offline",
            Profile {
                offline: true,
                ..Profile::default()
            },
        ));
        assert_eq!(
            poll(&mut later),
            Poll::Ready(CutBy::Network(NetCut::Offline))
        );
        // Offline when the call begins: cut at once.
        assert_eq!(
            poll(&mut i.call_cut()),
            Poll::Ready(CutBy::Network(NetCut::Offline))
        );
        i.set_link(Link::new("online", Profile::default()));

        let mut background = i.call_cut();
        assert!(poll(&mut background).is_pending());
        i.phase.send_replace(Phase::Cut);
        i.cuts.background();
        assert_eq!(poll(&mut background), Poll::Ready(CutBy::Background));
        // Already cut when the call begins: cut at once.
        assert_eq!(poll(&mut i.call_cut()), Poll::Ready(CutBy::Background));
        drop((later, background));
        assert_eq!(waiting(&i), 0);
    }
}
