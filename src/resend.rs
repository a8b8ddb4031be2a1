//! Browsers resend a request by themselves when a reused HTTP/1.1 connection closes without a
//! response (Chromium's `ShouldResendRequest`: reused connection, no headers received). A
//! refusal in `fail` style is exactly that, so one page call would leave two refused records.
//! The first refusal leaves a ticket; the resend (the first request of a new connection, same
//! client, method and URL, within [`WINDOW`]) is refused again but not recorded twice.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How soon after the refusal a resend is expected.
pub const WINDOW: Duration = Duration::from_secs(2);
/// Tickets kept at most (the oldest go first).
const CAPACITY: usize = 256;

#[derive(Debug, Default)]
pub struct Resends {
    tickets: Mutex<VecDeque<(Instant, IpAddr, Box<str>)>>,
}

impl Resends {
    /// A call refused in `fail` style on a reused HTTP/1.1 connection: its resend may follow.
    pub fn expect(&self, client: IpAddr, key: &str) {
        let mut t = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        if t.len() == CAPACITY {
            t.pop_front();
        }
        t.push_back((Instant::now(), client, key.into()));
    }

    /// Is this call the resend of a refusal that left a ticket? The ticket is used up.
    pub fn is_resend(&self, client: IpAddr, key: &str) -> bool {
        let mut t = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        t.retain(|(at, ..)| now.duration_since(*at) <= WINDOW);
        let found = t.iter().position(|(_, c, k)| *c == client && &**k == key);
        found.and_then(|i| t.remove(i)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_matches_once_for_its_client_and_key() {
        let r = Resends::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([10, 0, 0, 1]));
        let b: IpAddr = IpAddr::from([10, 0, 0, 2]);
        r.expect(a, "GET https://x/");
        assert!(!r.is_resend(b, "GET https://x/"));
        assert!(!r.is_resend(a, "GET https://y/"));
        assert!(r.is_resend(a, "GET https://x/"));
        assert!(!r.is_resend(a, "GET https://x/"), "used up");
    }
}
