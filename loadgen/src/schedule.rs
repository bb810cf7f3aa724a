//! Time: a clock shared by producers and consumers, and the open-loop send schedule.
//!
//! With `--rate`, message `j` of a lane is due at `start + j / rate`, whatever happened
//! before. A batch of `n` messages leaves when its last message is due (or as soon as a
//! request slot frees up, if the lane is behind), and each message's latency is
//! measured from its own due time. A stall in the broker therefore shows up as latency
//! for every message that should have been sent during it, instead of silently slowing
//! the sender down (coordinated omission).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, advancing with a monotonic clock: read once from
/// the wall clock at start, then from `Instant`, so that it never steps backwards.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_epoch_us: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// Anchors the clock at the current time.
    pub fn new() -> Clock {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            base: Instant::now(),
            base_epoch_us: epoch.as_micros() as u64,
        }
    }

    /// `t` in µs since the epoch.
    pub fn micros(&self, t: Instant) -> u64 {
        self.base_epoch_us + t.saturating_duration_since(self.base).as_micros() as u64
    }

    /// Now, in µs since the epoch.
    pub fn now_micros(&self) -> u64 {
        self.micros(Instant::now())
    }

    /// Now, in ms since the epoch (Kafka record timestamps).
    pub fn now_millis(&self) -> i64 {
        (self.now_micros() / 1000) as i64
    }
}

/// The fixed send schedule of one lane.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    interval_ns: f64,
    batch: u64,
}

impl Schedule {
    /// `rate` messages per second from `start`, sent `batch` at a time.
    pub fn new(start: Instant, rate: f64, batch: usize) -> Schedule {
        Schedule {
            start,
            interval_ns: 1e9 / rate.max(1e-9),
            batch: batch.max(1) as u64,
        }
    }

    /// Messages per batch.
    pub fn batch(&self) -> u64 {
        self.batch
    }

    /// When message `j` is due.
    pub fn message_due(&self, j: u64) -> Instant {
        self.start + Duration::from_nanos((j as f64 * self.interval_ns) as u64)
    }

    /// When batch `k` may leave: when its last message is due.
    pub fn batch_due(&self, k: u64) -> Instant {
        self.message_due(k * self.batch + self.batch - 1)
    }

    /// The due times of the messages of batch `k`.
    pub fn batch_message_times(&self, k: u64) -> impl Iterator<Item = Instant> + '_ {
        let first = k * self.batch;
        (first..first + self.batch).map(move |j| self.message_due(j))
    }
}

/// Messages per batch for a lane: as many as fit in `batch_bytes`, and with a rate, no
/// more than arrive within `linger_ms` (at least one).
pub fn messages_per_batch(
    message_size: usize,
    batch_bytes: usize,
    lane_rate: f64,
    linger_ms: f64,
) -> usize {
    // The whole batch (61-byte header and records) stays within `batch_bytes`, as
    // Kafka's batch.size and max.message.bytes count it. A record is its value plus at
    // most 7 bytes of fixed-size varints and two length varints.
    let varint = |v: usize| (usize::BITS - (2 * v as u64 + 1).leading_zeros()).div_ceil(7) as usize;
    let record = message_size + 7 + 2 * varint(message_size + 16);
    let by_size = (batch_bytes.saturating_sub(61) / record).max(1);
    if lane_rate <= 0.0 {
        return by_size;
    }
    let by_linger = (lane_rate * linger_ms / 1000.0).floor() as usize;
    by_size.min(by_linger.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_due_at_a_fixed_rate_from_the_start() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 1000.0, 10);
        assert_eq!(s.message_due(0), t0);
        assert_eq!(s.message_due(1), t0 + Duration::from_millis(1));
        assert_eq!(s.message_due(2500), t0 + Duration::from_millis(2500));
        // Batch 0 leaves with its tenth message; batch 3 with message 39.
        assert_eq!(s.batch_due(0), t0 + Duration::from_millis(9));
        assert_eq!(s.batch_due(3), t0 + Duration::from_millis(39));
        let times: Vec<_> = s.batch_message_times(1).collect();
        assert_eq!(times.len(), 10);
        assert_eq!(times[0], t0 + Duration::from_millis(10));
        assert_eq!(times[9], t0 + Duration::from_millis(19));
    }

    #[test]
    fn the_schedule_does_not_move_when_the_sender_falls_behind() {
        // Open loop: due times depend only on the index, so a late batch keeps its
        // original due time and the stall is charged to every message in it.
        let t0 = Instant::now();
        let s = Schedule::new(t0, 100.0, 1);
        let stalled_until = t0 + Duration::from_secs(1);
        let late: Vec<u128> = (0..100)
            .map(|k| stalled_until.duration_since(s.batch_due(k)).as_millis())
            .collect();
        assert_eq!(late[0], 1000);
        assert_eq!(late[50], 500);
        assert_eq!(late[99], 10);
    }

    #[test]
    fn batch_size_follows_bytes_and_linger() {
        assert_eq!(messages_per_batch(1024, 1 << 20, 0.0, 5.0), 1013);
        assert_eq!(messages_per_batch(100, 16 << 10, 0.0, 0.0), 147);
        // 10k msg/s with 5 ms linger: 50 messages a batch.
        assert_eq!(messages_per_batch(1024, 1 << 20, 10_000.0, 5.0), 50);
        // Half a millisecond at 10k msg/s: 5 messages.
        assert_eq!(messages_per_batch(1024, 1 << 20, 10_000.0, 0.5), 5);
        // No linger: one message per request.
        assert_eq!(messages_per_batch(1024, 1 << 20, 10_000.0, 0.0), 1);
        // Whole batches fit the byte limit (Kafka's default max.message.bytes is 1 MiB + 12).
        for size in [10, 100, 1000, 1024, 4096] {
            let n = messages_per_batch(size, 1 << 20, 0.0, 0.0);
            let b = crate::batch::BatchTemplate::new(n, size, crate::batch::Codec::None, 0);
            assert!(b.build(0).unwrap().len() <= 1 << 20, "{size}");
        }
        // Capped by bytes.
        assert_eq!(messages_per_batch(1024, 16 << 10, 1e6, 100.0), 15);
    }

    #[test]
    fn the_clock_is_in_epoch_microseconds() {
        let c = Clock::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert!(c.now_micros().abs_diff(now) < 1_000_000);
        let t = Instant::now();
        assert_eq!(c.micros(t + Duration::from_micros(250)), c.micros(t) + 250);
    }
}
