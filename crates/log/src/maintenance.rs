//! The background work [`LogManager`](crate::manager::LogManager) runs over the logs it
//! manages, as Kafka's `LogManager.startup` schedules it: retention every
//! `log.retention.check.interval.ms` (`kafka-log-retention`), the time-based flush every
//! `log.flush.scheduler.interval.ms` (`kafka-log-flusher`), and the cleaner threads
//! ([`crate::cleaner::LogCleaner`]).
//!
//! The logs are owned by someone else (the broker's partitions, under their locks); they are
//! seen through [`ManagedLog`]. Each periodic task runs on its own thread, never on an async
//! worker: every pass waits on the disk.

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cleaner::manager::wall_clock_ms;
use crate::cleaner::{CleanableLog, CleanerConfig, LogCleaner, LogSource};
use crate::error::LogError;

/// A log [`LogManager`](crate::manager::LogManager) maintains: retention and flushing run on it
/// through [`CleanableLog::with_log`], under its owner's lock.
pub trait ManagedLog: CleanableLog {
    /// `topic-partition`, for log lines.
    fn name(&self) -> String;
    /// The offset retention must stay below: the high watermark, so that only segments every
    /// in-sync replica holds and consumers could read are deleted (Kafka's
    /// `UnifiedLog.deletableSegments`).
    fn retention_bound(&self) -> i64;
    /// Runs before retention may move the log start: the owner saves what only the segments
    /// about to go carry (the idempotent producers' state, in a snapshot). `false` (having
    /// logged why) skips the log's retention this round.
    fn before_log_start_moves(&self) -> bool;
}

/// Where the manager finds the logs: all of them, every pass (the set changes with the
/// metadata).
pub trait ManagedLogs: Send + Sync {
    fn managed_logs(&self) -> Vec<Arc<dyn ManagedLog>>;
}

/// Settings of the background work (Kafka's names).
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// `log.retention.check.interval.ms`.
    pub retention_check_interval: Duration,
    /// `log.flush.scheduler.interval.ms` (Kafka's default, Long.MAX, means never).
    pub flush_scheduler_interval: Duration,
    /// `log.cleaner.*`.
    pub cleaner: CleanerConfig,
}

/// The longest wait between passes: a longer interval (Kafka's "never" defaults) still
/// sleeps this long at a time.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// One retention pass: each log deletes the segments its retention settings allow, below its
/// [`ManagedLog::retention_bound`]. Returns the number of segments deleted.
pub fn enforce_retention(logs: &[Arc<dyn ManagedLog>], now_ms: i64) -> usize {
    let mut deleted = 0;
    for log in logs {
        if !log.before_log_start_moves() {
            continue;
        }
        let bound = log.retention_bound();
        let mut result: Result<usize, LogError> = Ok(0);
        if !log.with_log(&mut |l| result = l.enforce_retention_below(now_ms, bound)) {
            continue; // closed meanwhile
        }
        match result {
            Ok(0) => {}
            Ok(n) => {
                deleted += n;
                tracing::info!(log = %log.name(), segments = n, "retention deleted segments");
            }
            Err(e) => tracing::error!(log = %log.name(), error = %e, "retention failed"),
        }
    }
    deleted
}

/// One flush pass: each log whose oldest unflushed data is older than its `flush.ms` is
/// fsynced.
pub fn flush_due(logs: &[Arc<dyn ManagedLog>], now_ms: i64) {
    for log in logs {
        let mut result: Result<bool, LogError> = Ok(false);
        if log.with_log(&mut |l| result = l.maybe_flush(now_ms)) {
            if let Err(e) = result {
                tracing::error!(log = %log.name(), error = %e, "flush failed");
            }
        }
    }
}

/// One pass of a periodic task over the logs, at a wall-clock time in ms.
type Pass = fn(&[Arc<dyn ManagedLog>], i64);

/// The running background work; [`Maintenance::shutdown`] (or drop) stops it.
pub(crate) struct Maintenance {
    stop: Arc<(Mutex<bool>, Condvar)>,
    threads: Vec<JoinHandle<()>>,
    cleaner: LogCleaner,
}

impl Maintenance {
    pub(crate) fn start(source: Weak<dyn ManagedLogs>, config: MaintenanceConfig) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let cleaner = LogCleaner::start(config.cleaner.clone(), Arc::new(Cleanable(source.clone())))?;
        let tasks: [(&str, Duration, Pass); 2] = [
            ("strata-log-retention", config.retention_check_interval, |logs, now| {
                enforce_retention(logs, now);
            }),
            ("strata-log-flusher", config.flush_scheduler_interval, flush_due),
        ];
        let mut started = Maintenance { stop: stop.clone(), threads: Vec::new(), cleaner };
        for (name, every, task) in tasks {
            let (stop, source) = (stop.clone(), source.clone());
            // On an error, dropping `started` stops what was started.
            started.threads.push(std::thread::Builder::new().name(name.into()).spawn(move || {
                periodically(&stop, every, || match source.upgrade() {
                    Some(logs) => {
                        task(&logs.managed_logs(), wall_clock_ms());
                        true
                    }
                    None => false,
                })
            })?);
        }
        Ok(started)
    }

    /// What the cleaner did so far.
    pub(crate) fn cleaner(&self) -> &LogCleaner {
        &self.cleaner
    }

    /// Stops the periodic tasks (after the pass each may be running) and the cleaner threads
    /// (after the group of segments each is writing); returns when all have stopped.
    pub(crate) fn shutdown(&mut self) {
        *self.stop.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.stop.1.notify_all();
        for t in self.threads.drain(..) {
            // The owner may be dropped by one of these threads (its pass held the last
            // reference): that one is on its way out and is not waited for.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        self.cleaner.shutdown();
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs `pass` every `every` until stopped, or until `pass` says its logs are gone.
fn periodically(stop: &(Mutex<bool>, Condvar), every: Duration, mut pass: impl FnMut() -> bool) {
    let every = every.max(Duration::from_millis(1));
    loop {
        let mut left = every;
        let mut stopped = stop.0.lock().unwrap_or_else(PoisonError::into_inner);
        while !*stopped && !left.is_zero() {
            let wait = left.min(LONGEST_WAIT);
            let started = std::time::Instant::now();
            stopped = stop.1.wait_timeout(stopped, wait).unwrap_or_else(PoisonError::into_inner).0;
            left = left.saturating_sub(started.elapsed());
        }
        if *stopped {
            return;
        }
        drop(stopped);
        if !pass() {
            return;
        }
    }
}

/// The cleaner's view of the managed logs.
struct Cleanable(Weak<dyn ManagedLogs>);

impl LogSource for Cleanable {
    fn logs(&self) -> Vec<Arc<dyn CleanableLog>> {
        let Some(logs) = self.0.upgrade() else { return Vec::new() };
        logs.managed_logs().into_iter().map(|l| l as Arc<dyn CleanableLog>).collect()
    }
}
