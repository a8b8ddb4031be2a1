//! A creation quota over a sliding window: `wx.createTCPSocket` allows at most 20 sockets
//! created per 5 minutes per app instance (SPEC section 3, rule 4). Pure: the clock is passed in
//! as milliseconds from any fixed origin, so tables can test it without a runtime.

use std::collections::VecDeque;

/// The creation times (ms) still inside the window, oldest first; never more than the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingWindow {
    times: VecDeque<u64>,
}

impl SlidingWindow {
    /// Take one creation at `now_ms` if fewer than `limit` were taken in the `window_ms` before
    /// it (a creation at `t` counts while `now_ms < t + window_ms`).
    ///
    /// # Errors
    /// The quota is used up: how many ms until the oldest creation leaves the window.
    pub fn try_take(&mut self, now_ms: u64, limit: usize, window_ms: u64) -> Result<(), u64> {
        while self
            .times
            .front()
            .is_some_and(|t| t.saturating_add(window_ms) <= now_ms)
        {
            self.times.pop_front();
        }
        // A limit lowered since (a reload): drop the oldest beyond it, they can't matter.
        while self.times.len() > limit {
            self.times.pop_front();
        }
        if self.times.len() < limit {
            self.times.push_back(now_ms);
            return Ok(());
        }
        let oldest = self.times.front().copied().unwrap_or(now_ms);
        Err(oldest
            .saturating_add(window_ms)
            .saturating_sub(now_ms)
            .max(1))
    }

    /// Creations inside the window as of the last take.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod try_take {
        use super::*;

        /// A take at a time, and what it gives.
        type Take = (u64, Result<(), u64>);

        /// (name, limit, window, the takes in order) → expected result of each take.
        #[test]
        fn table() {
            let ok = Ok(());
            let rows: &[(&str, usize, u64, &[Take])] = &[
                (
                    "the limit passes, one more waits for the oldest",
                    3,
                    100,
                    &[(0, ok), (10, ok), (20, ok), (30, Err(70)), (99, Err(1))],
                ),
                (
                    "the oldest leaves exactly at t + window",
                    3,
                    100,
                    &[
                        (0, ok),
                        (10, ok),
                        (20, ok),
                        (100, ok),
                        (101, Err(9)),
                        (110, ok),
                    ],
                ),
                (
                    "the window slides: old takes never come back",
                    2,
                    50,
                    &[
                        (0, ok),
                        (1, ok),
                        (2, Err(48)),
                        (50, ok),
                        (51, ok),
                        (52, Err(48)),
                        (200, ok),
                        (200, ok),
                        (200, Err(50)),
                    ],
                ),
                (
                    "refusals take nothing",
                    1,
                    10,
                    &[
                        (0, ok),
                        (5, Err(5)),
                        (9, Err(1)),
                        (10, ok),
                        (19, Err(1)),
                        (20, ok),
                    ],
                ),
                (
                    "a clock that steps back counts the take, no underflow",
                    2,
                    100,
                    &[(1000, ok), (500, ok), (400, Err(700))],
                ),
                (
                    "limit 0 refuses everything",
                    0,
                    100,
                    &[(0, Err(100)), (1000, Err(100))],
                ),
                (
                    "a window as long as u64 saturates",
                    1,
                    u64::MAX,
                    &[(0, ok), (u64::MAX - 1, Err(1))],
                ),
            ];
            for (name, limit, window, takes) in rows {
                let mut w = SlidingWindow::default();
                for (i, (now, want)) in takes.iter().enumerate() {
                    assert_eq!(
                        w.try_take(*now, *limit, *window),
                        *want,
                        "{name}: take {i} at {now}"
                    );
                    assert!(
                        w.len() <= *limit,
                        "{name}: the window is bounded by the limit"
                    );
                }
            }
        }

        #[test]
        fn the_platforms_20_in_5_minutes() {
            let mut w = SlidingWindow::default();
            for now in 0..20 {
                assert_eq!(w.try_take(now, 20, 300_000), Ok(()), "take {now}");
            }
            assert_eq!(w.try_take(20, 20, 300_000), Err(299_980));
            assert_eq!(w.try_take(299_999, 20, 300_000), Err(1));
            assert_eq!(w.try_take(300_000, 20, 300_000), Ok(()));
            assert_eq!(w.try_take(300_000, 20, 300_000), Err(1));
        }

        #[test]
        fn a_lowered_limit_is_applied_to_what_was_kept() {
            let mut w = SlidingWindow::default();
            for now in 0..5 {
                assert_eq!(w.try_take(now, 5, 100), Ok(()));
            }
            // Only the newest 2 still matter; the oldest of them (t=3) frees the next slot.
            assert_eq!(w.try_take(10, 2, 100), Err(93));
            assert_eq!(w.len(), 2);
        }
    }
}
