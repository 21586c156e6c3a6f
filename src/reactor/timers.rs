//! [`IdleTimers`]: when each connection's idle timeout falls due, without touching a timer per byte.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::id::ConnId;

/// The idle deadlines of the loop's connections, soonest first.
///
/// Activity does not reschedule anything: a connection only records when it was last active, and the
/// heap holds one *provisional* deadline per connection. When a provisional deadline comes due, the
/// loop checks the real one (`last_active + timeout`) and either closes the connection or pushes the
/// real deadline back. So a busy connection costs nothing per read, an idle one one heap operation per
/// timeout period, and the loop sleeps in `epoll_wait` exactly until the next deadline — no periodic
/// scan.
#[derive(Debug)]
pub(crate) struct IdleTimers {
    timeout: Option<Duration>,
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl IdleTimers {
    /// `timeout: None` disables idle timeouts (nothing is ever scheduled).
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        IdleTimers {
            timeout,
            heap: BinaryHeap::new(),
        }
    }

    /// The timeout these timers enforce.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Schedules `id`, last active at `at`.
    pub(crate) fn schedule(&mut self, id: ConnId, at: Instant) {
        if let Some(timeout) = self.timeout {
            self.heap.push(Reverse((at + timeout, id)));
        }
    }

    /// The soonest provisional deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes every provisional deadline due by `now`; for each, `last_active(id)` gives the
    /// connection's real last activity (`None` if it has closed). Returns the ids that really idled
    /// out, and reschedules the rest.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        mut last_active: impl FnMut(ConnId) -> Option<Instant>,
    ) -> Vec<ConnId> {
        let Some(timeout) = self.timeout else {
            return Vec::new();
        };
        let mut expired = Vec::new();
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(active) = last_active(id) else {
                continue; // closed since
            };
            let due = active + timeout;
            if due <= now {
                expired.push(id);
            } else {
                self.heap.push(Reverse((due, id)));
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_connections_are_rescheduled_idle_ones_expire() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut timers = IdleTimers::new(Some(second));
        let (idle, busy, gone) = (
            ConnId::new(0, 0, 0),
            ConnId::new(0, 1, 0),
            ConnId::new(0, 2, 0),
        );
        for id in [idle, busy, gone] {
            timers.schedule(id, t0);
        }
        assert_eq!(timers.next_deadline(), Some(t0 + second));
        let now = t0 + second;
        let expired = timers.expire(now, |id| match id {
            id if id == busy => Some(t0 + second / 2),
            id if id == gone => None,
            _ => Some(t0),
        });
        assert_eq!(expired, [idle]);
        assert_eq!(timers.next_deadline(), Some(t0 + second * 3 / 2));
    }

    #[test]
    fn no_timeout_schedules_nothing() {
        let mut timers = IdleTimers::new(None);
        timers.schedule(ConnId::new(0, 0, 0), Instant::now());
        assert_eq!(timers.next_deadline(), None);
    }
}
