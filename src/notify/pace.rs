//! When the notifier sends: at once while conflicts come one by one, so that listeners hear of
//! each within a millisecond or so of its commit; every `PACE` once the stream is dense, so that
//! a steady stream costs a couple of hundred small transactions a second instead of one per
//! writer's commit, each covering all that came in meanwhile. Pure, unit-tested with plain
//! `#[test]`s.

use std::time::{Duration, Instant};

/// How long the notifier waits before its next transaction while the stream is dense.
pub const PACE: Duration = Duration::from_millis(5);
/// Events queued faster than this (per second, over `WINDOW`) make the stream dense. A thousand
/// conflicts a second are not dense.
pub const DENSE_RATE: f64 = 2_500.0;
/// How long the rate is measured over: long enough that a burst of a few commits does not make
/// a stream dense.
pub const WINDOW: Duration = Duration::from_millis(50);

/// The rate of the events the notifier sends, measured window by window.
pub struct Rate {
    since: Instant,
    events: usize,
    dense: bool,
}

impl Rate {
    pub fn new(now: Instant) -> Rate {
        Rate { since: now, events: 0, dense: false }
    }

    /// Counts `n` events sent at `now`; whether the stream is dense, as of the last full window.
    pub fn sent(&mut self, n: usize, now: Instant) -> bool {
        self.events += n;
        let window = now.saturating_duration_since(self.since);
        if window >= WINDOW {
            self.dense = self.events as f64 >= DENSE_RATE * window.as_secs_f64();
            self.since = now;
            self.events = 0;
        }
        self.dense
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `per_send` events every `every` for `for_`, returning how many sends were paced.
    fn paced(rate: &mut Rate, start: Instant, every: Duration, per_send: usize, for_: Duration) -> (usize, usize) {
        let (mut sends, mut dense) = (0, 0);
        let mut t = start;
        while t < start + for_ {
            sends += 1;
            dense += rate.sent(per_send, t) as usize;
            t += every;
        }
        (sends, dense)
    }

    #[test]
    fn a_thousand_a_second_go_out_at_once() {
        let start = Instant::now();
        let mut rate = Rate::new(start);
        assert_eq!(paced(&mut rate, start, Duration::from_millis(1), 1, Duration::from_secs(1)).1, 0);
        // a burst of ten events in one millisecond is not a dense stream either
        assert!(!rate.sent(10, start + Duration::from_millis(1001)));
    }

    #[test]
    fn a_dense_stream_is_paced_within_a_window_and_released_after_it() {
        let start = Instant::now();
        let mut rate = Rate::new(start);
        // 25 events every 5 ms: 5,000 a second
        let (sends, dense) = paced(&mut rate, start, PACE, 25, Duration::from_secs(1));
        assert!(dense >= sends - WINDOW.as_millis() as usize / 5 - 1, "{dense} of {sends}");
        // then one event after a quiet second: at once again
        assert!(!rate.sent(1, start + Duration::from_secs(2)));
    }
}
