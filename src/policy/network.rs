//! Network profiles (the DevTools' throttling choices): what a profile is, the built-in presets,
//! the loss roll and the token-bucket arithmetic. Pure: the clock and the random state are passed
//! in; the proxy sleeps and keeps the state.
//!
//! Depends on nothing else in the crate, so the config can name profiles without a cycle.

use std::time::Duration;

/// How a link behaves. `down_kbps`/`up_kbps` are in kbit/s (1 kbit = 1000 bits); 0 means
/// unlimited. `latency_ms` is added once per call (round trip) before the response head.
/// `loss` is the chance (0..=1) that a call stalls until its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Profile {
    pub latency_ms: u64,
    pub down_kbps: u64,
    pub up_kbps: u64,
    pub loss: f64,
    /// No network at all: new calls fail at once, calls in flight and sockets are cut.
    pub offline: bool,
}

/// The built-in profile names, in the order the dashboard lists them.
pub const PRESETS: [&str; 7] = ["online", "offline", "wifi", "4g", "3g", "2g", "gprs"];

/// The name of the profile that shapes nothing.
pub const ONLINE: &str = "online";

impl Profile {
    /// Nothing to shape, delay, drop or refuse: calls are not wrapped.
    pub fn is_online(&self) -> bool {
        !self.offline
            && self.latency_ms == 0
            && self.down_kbps == 0
            && self.up_kbps == 0
            && self.loss <= 0.0
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    const fn shaped(latency_ms: u64, down_kbps: u64, up_kbps: u64) -> Profile {
        Profile {
            latency_ms,
            down_kbps,
            up_kbps,
            loss: 0.0,
            offline: false,
        }
    }
}

/// A built-in profile by name. Figures are Chrome DevTools' throttling presets (WiFi,
/// Regular 4G, Regular 3G, Regular 2G, GPRS); `online` shapes nothing, `offline` has no network.
pub fn preset(name: &str) -> Option<Profile> {
    Some(match name {
        "online" => Profile::default(),
        "offline" => Profile {
            offline: true,
            ..Profile::default()
        },
        "wifi" => Profile::shaped(2, 30_000, 15_000),
        "4g" => Profile::shaped(20, 4_000, 3_000),
        "3g" => Profile::shaped(100, 750, 250),
        "2g" => Profile::shaped(300, 250, 50),
        "gprs" => Profile::shaped(500, 50, 20),
        _ => return None,
    })
}

/// One step of splitmix64: the next state and a well-mixed 64-bit value.
pub fn splitmix64(state: u64) -> (u64, u64) {
    let next = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = next;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (next, z ^ (z >> 31))
}

/// Is a call lost, given the random value drawn for it? `loss` 0 never, 1 always.
pub fn is_lost(draw: u64, loss: f64) -> bool {
    if loss <= 0.0 {
        return false;
    }
    if loss >= 1.0 {
        return true;
    }
    // The top 53 bits as a fraction in [0, 1).
    #[allow(clippy::cast_precision_loss)]
    let fraction = (draw >> 11) as f64 / (1u64 << 53) as f64;
    fraction < loss
}

/// Bytes per second of a rate in kbit/s.
pub fn bytes_per_second(kbps: u64) -> u64 {
    kbps.saturating_mul(1000) / 8
}

/// A token bucket in bytes. Senders reserve what they send (the bucket may go into debt) and
/// wait until the debt is paid back, so senders sharing a bucket share its rate, and the time
/// to send N bytes after an idle spell is (N - burst) / rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Bytes per second; 0 means unlimited.
    rate: u64,
    /// The most tokens an idle bucket holds.
    burst: u64,
    /// Bytes that may go now; negative when senders are waiting.
    tokens: f64,
    /// When `tokens` was last brought up to date (time since the holder's origin).
    at: Duration,
}

/// The burst of a bucket: 10 ms of its rate, at least one 1500-byte packet.
fn burst_of(rate: u64) -> u64 {
    (rate / 100).max(1500)
}

impl Bucket {
    /// A full bucket for `kbps` (0: unlimited) at `now`.
    pub fn new(kbps: u64, now: Duration) -> Bucket {
        let rate = bytes_per_second(kbps);
        let burst = burst_of(rate);
        #[allow(clippy::cast_precision_loss)]
        let tokens = burst as f64;
        Bucket {
            rate,
            burst,
            tokens,
            at: now,
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.rate == 0
    }

    /// The largest piece a sender should reserve at once: 20 ms of the rate, 1 KiB to 16 KiB.
    pub fn chunk(&self) -> usize {
        usize::try_from((self.rate / 50).clamp(1024, 16 * 1024)).unwrap_or(16 * 1024)
    }

    /// Reserve `n` bytes at `now`; returns how long the sender waits before sending them.
    #[allow(clippy::cast_precision_loss)]
    pub fn take(&mut self, n: u64, now: Duration) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let rate = self.rate as f64;
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * rate).min(self.burst as f64);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn presets_are_named_like_the_devtools_choices() {
        let table: [(&str, u64, u64, u64, bool); 7] = [
            ("online", 0, 0, 0, false),
            ("offline", 0, 0, 0, true),
            ("wifi", 2, 30_000, 15_000, false),
            ("4g", 20, 4_000, 3_000, false),
            ("3g", 100, 750, 250, false),
            ("2g", 300, 250, 50, false),
            ("gprs", 500, 50, 20, false),
        ];
        for (name, latency, down, up, offline) in table {
            let p = preset(name).unwrap_or_else(|| panic!("no preset {name}"));
            assert_eq!(
                (p.latency_ms, p.down_kbps, p.up_kbps, p.offline),
                (latency, down, up, offline),
                "{name}"
            );
            assert_eq!(p.is_online(), name == "online", "{name}");
            assert!(PRESETS.contains(&name));
        }
        assert_eq!(preset("5g"), None);
        assert_eq!(preset("3G"), None, "names are exact");
    }

    #[test]
    fn is_online_only_when_nothing_is_shaped() {
        let cases = [
            (Profile::default(), true),
            (Profile::shaped(1, 0, 0), false),
            (Profile::shaped(0, 1, 0), false),
            (Profile::shaped(0, 0, 1), false),
            (
                Profile {
                    loss: 0.1,
                    ..Profile::default()
                },
                false,
            ),
        ];
        for (p, online) in cases {
            assert_eq!(p.is_online(), online, "{p:?}");
        }
    }

    #[test]
    fn loss_is_deterministic_for_a_seed_and_near_its_rate() {
        let run = |seed: u64, loss: f64| {
            let mut state = seed;
            (0..10_000)
                .filter(|_| {
                    let (next, draw) = splitmix64(state);
                    state = next;
                    is_lost(draw, loss)
                })
                .count()
        };
        assert_eq!(run(7, 0.3), run(7, 0.3), "same seed, same losses");
        assert_ne!(run(7, 0.3), run(8, 0.3), "another seed, other losses");
        for (loss, lo, hi) in [(0.0, 0, 0), (1.0, 10_000, 10_000), (0.25, 2300, 2700)] {
            let lost = run(42, loss);
            assert!((lo..=hi).contains(&lost), "loss {loss}: {lost} of 10000");
        }
    }

    #[test]
    fn bucket_waits_are_bytes_over_rate() {
        // 1000 kbit/s = 125 000 B/s, burst 1500 B.
        // (kbps, [(bytes, at ms)], expected waits in ms)
        type Case = (u64, &'static [(u64, u64)], &'static [u64]);
        let cases: [Case; 4] = [
            (1000, &[(1500, 0)], &[0]),
            (1000, &[(1500, 0), (12_500, 0)], &[0, 100]),
            (1000, &[(1500, 0), (12_500, 0), (12_500, 0)], &[0, 100, 200]),
            // Idle long enough to refill only the burst, not more.
            (1000, &[(126_500, 0), (1500, 5000)], &[1000, 0]),
        ];
        for (kbps, takes, waits) in cases {
            let mut b = Bucket::new(kbps, Duration::ZERO);
            let got: Vec<u64> = takes
                .iter()
                .map(|(n, at)| {
                    let w = b.take(*n, ms(*at));
                    u64::try_from(w.as_millis()).unwrap_or(u64::MAX)
                })
                .collect();
            assert_eq!(got, waits.to_vec(), "{kbps} kbps, {takes:?}");
        }
    }

    #[test]
    fn a_shared_bucket_takes_total_bytes_over_rate() {
        // Ten senders of 25 600 bytes each at 1000 kbit/s: the last waits ~2.05 s, not 0.2 s.
        let mut b = Bucket::new(1000, Duration::ZERO);
        let last = (0..10).map(|_| b.take(25_600, ms(0))).last();
        let last = last.map_or(0, |d| d.as_millis());
        assert!((2030..=2060).contains(&last), "{last} ms");
    }

    #[test]
    fn unlimited_buckets_never_wait_and_chunks_follow_the_rate() {
        let mut b = Bucket::new(0, Duration::ZERO);
        assert!(b.is_unlimited());
        assert_eq!(b.take(u64::MAX, Duration::ZERO), Duration::ZERO);
        assert_eq!(Bucket::new(50, Duration::ZERO).chunk(), 1024);
        assert_eq!(Bucket::new(1000, Duration::ZERO).chunk(), 2500);
        assert_eq!(Bucket::new(30_000, Duration::ZERO).chunk(), 16 * 1024);
    }
}
