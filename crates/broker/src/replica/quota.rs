//! Replication throttles (KIP-73), as Kafka's `ReplicationQuotaManager`: a byte rate limit
//! for replication traffic on one side (the leader sending, or the follower fetching), and a
//! meter of the bytes moved for throttled partitions.
//!
//! Which partitions are throttled is a topic setting
//! (`leader.replication.throttled.replicas` / `follower.replication.throttled.replicas`:
//! `*` or `partition:broker` pairs, see [`crate::config::ThrottledReplicas`]); the limit is
//! the broker's `leader.replication.throttled.rate` / `follower.replication.throttled.rate`
//! (bytes per second, usually set at run time with `kafka-configs.sh --entity-type brokers`).
//! A throttled partition's data is held back, for a replica outside the ISR only, while the
//! measured rate is above the limit. Replicas in the ISR are never throttled, so acks=all and
//! the high watermark do not wait on a throttle.
//!
//! The rate is Kafka's: bytes over the last [`SAMPLES`] windows of [`WINDOW_MS`], divided by
//! the time they span, which counts as at least `SAMPLES - 1` whole windows (so a fresh meter
//! allows a burst of about ten seconds' worth before throttling).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Kafka's `replication.quota.window.size.seconds` (1 s), in ms.
pub const WINDOW_MS: i64 = 1_000;
/// Kafka's `replication.quota.window.num` (11).
pub const SAMPLES: usize = 11;

/// One side's replication throttle: its limit and its meter.
#[derive(Debug)]
pub struct ReplicationQuota {
    /// Bytes per second; `u64::MAX` means no limit (Kafka's default, `Long.MAX_VALUE`).
    limit: AtomicU64,
    meter: Mutex<RateMeter>,
}

impl Default for ReplicationQuota {
    fn default() -> Self {
        Self { limit: AtomicU64::new(u64::MAX), meter: Mutex::new(RateMeter::default()) }
    }
}

impl ReplicationQuota {
    /// Sets the limit in bytes per second (`None`: no limit). Returns whether it changed.
    pub fn set_limit(&self, bytes_per_second: Option<u64>) -> bool {
        let limit = bytes_per_second.unwrap_or(u64::MAX);
        self.limit.swap(limit, Ordering::Relaxed) != limit
    }

    /// The limit in bytes per second, if there is one.
    pub fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|l| *l != u64::MAX)
    }

    /// Counts `bytes` of throttled partitions moved at `now_ms`.
    pub fn record(&self, bytes: u64, now_ms: i64) {
        if bytes > 0 {
            self.meter.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(bytes, now_ms);
        }
    }

    /// Whether the measured rate is above the limit (never, without a limit).
    pub fn exceeded(&self, now_ms: i64) -> bool {
        let Some(limit) = self.limit() else { return false };
        self.meter.lock().unwrap_or_else(std::sync::PoisonError::into_inner).rate(now_ms) > limit as f64
    }
}

/// Bytes per window over the last [`SAMPLES`] windows.
#[derive(Debug, Default)]
struct RateMeter {
    /// (window start ms, bytes), oldest first.
    samples: VecDeque<(i64, u64)>,
}

impl RateMeter {
    fn expire(&mut self, now_ms: i64) {
        let horizon = now_ms - SAMPLES as i64 * WINDOW_MS;
        while self.samples.front().is_some_and(|(start, _)| *start <= horizon) {
            self.samples.pop_front();
        }
    }

    fn record(&mut self, bytes: u64, now_ms: i64) {
        self.expire(now_ms);
        match self.samples.back_mut() {
            Some((start, total)) if now_ms - *start < WINDOW_MS => *total = total.saturating_add(bytes),
            _ => self.samples.push_back((now_ms, bytes)),
        }
    }

    /// Bytes per second.
    fn rate(&mut self, now_ms: i64) -> f64 {
        self.expire(now_ms);
        let total: u64 = self.samples.iter().map(|(_, b)| *b).sum();
        let oldest = self.samples.front().map_or(now_ms, |(start, _)| *start);
        let elapsed = (now_ms - oldest).max((SAMPLES as i64 - 1) * WINDOW_MS);
        total as f64 * 1000.0 / elapsed as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limit_is_never_exceeded() {
        let q = ReplicationQuota::default();
        q.record(u64::MAX / 2, 0);
        assert!(!q.exceeded(1));
        assert_eq!(q.limit(), None);
    }

    #[test]
    fn the_rate_is_measured_over_at_least_ten_windows() {
        let q = ReplicationQuota::default();
        q.set_limit(Some(1_000));
        // 9,000 bytes at once: 900 B/s over the ten-second floor.
        q.record(9_000, 0);
        assert!(!q.exceeded(100));
        q.record(2_000, 500);
        assert!(q.exceeded(600), "11,000 bytes in ten seconds is above 1,000 B/s");
        // Eleven windows later the samples have expired.
        assert!(!q.exceeded(12_000));
    }

    #[test]
    fn a_steady_rate_converges_on_what_was_moved() {
        let mut m = RateMeter::default();
        for s in 0..30 {
            m.record(5_000, s * 1_000);
        }
        let r = m.rate(29_999);
        assert!((4_000.0..=5_600.0).contains(&r), "{r}");
    }
}
