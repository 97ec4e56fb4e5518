//! The log manager's background work: retention below each log's bound, the time-based
//! flush, both on their own threads once started, and stopping them.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{batch, OwnedLog};
use strata_log::cleaner::CleanerConfig;
use strata_log::maintenance::{self, MaintenanceConfig, ManagedLog, ManagedLogs};
use strata_log::manager::LogManager;
use strata_log::{Log, LogConfig};

struct Logs(Vec<Arc<OwnedLog>>);

impl ManagedLogs for Logs {
    fn managed_logs(&self) -> Vec<Arc<dyn ManagedLog>> {
        self.0.iter().map(|l| l.clone() as Arc<dyn ManagedLog>).collect()
    }
}

/// Four segments of two batches each (timestamps 0..8), every segment but the active one past
/// `retention.ms`; `flush.ms` 0, nothing flushed yet.
fn owned_log(dir: &std::path::Path) -> Arc<OwnedLog> {
    let one = batch(1, 0, 100, 0).len() as u64;
    let config = LogConfig { segment_bytes: 2 * one, retention_ms: 1, flush_interval_ms: 0, ..LogConfig::default() };
    let mut log = Log::open(dir, config, 0).unwrap();
    for i in 0..8 {
        log.append(&mut batch(1, i, 100, i as u8), 0).unwrap();
    }
    assert_eq!(log.num_segments(), 4);
    let owned = OwnedLog::new(log);
    owned.high_watermark.store(0, Ordering::SeqCst);
    owned
}

fn log_start(l: &OwnedLog) -> i64 {
    l.log.lock().unwrap().as_ref().unwrap().log_start_offset()
}

#[test]
fn retention_stays_below_the_bound_and_waits_for_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let owned = owned_log(&dir.path().join("t-0"));
    let logs: Vec<Arc<dyn ManagedLog>> = vec![owned.clone()];
    let now = 1_000_000;
    assert_eq!(maintenance::enforce_retention(&logs, now), 0, "nothing is below a high watermark of 0");
    owned.high_watermark.store(4, Ordering::SeqCst);
    owned.ready.store(false, Ordering::SeqCst);
    assert_eq!(maintenance::enforce_retention(&logs, now), 0, "the owner could not prepare: skipped");
    owned.ready.store(true, Ordering::SeqCst);
    assert_eq!(maintenance::enforce_retention(&logs, now), 2);
    assert_eq!(log_start(&owned), 4);
    // A closed log is passed over.
    let log = owned.log.lock().unwrap().take().unwrap();
    assert_eq!(maintenance::enforce_retention(&logs, now), 0);
    log.close().unwrap();
}

#[test]
fn started_manager_runs_retention_and_flush_until_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let manager = LogManager::open(vec![dir.path().to_path_buf()]).unwrap();
    let owned = owned_log(&dir.path().join("t-0"));
    owned.high_watermark.store(6, Ordering::SeqCst);
    let logs: Arc<dyn ManagedLogs> = Arc::new(Logs(vec![owned.clone()]));
    let config = MaintenanceConfig {
        retention_check_interval: Duration::from_millis(10),
        flush_scheduler_interval: Duration::from_millis(10),
        cleaner: CleanerConfig { enabled: false, ..CleanerConfig::default() },
    };
    manager.startup(Arc::downgrade(&logs), config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let flushed_and_retained = || {
        let guard = owned.log.lock().unwrap();
        let log = guard.as_ref().unwrap();
        log.log_start_offset() == 6 && log.recovery_point() == log.log_end_offset()
    };
    while !flushed_and_retained() {
        assert!(Instant::now() < deadline, "retention and flush never ran (log start {})", log_start(&owned));
        std::thread::sleep(Duration::from_millis(5));
    }
    manager.shutdown();
    // Stopped: a bound moved after the shutdown deletes nothing more.
    owned.high_watermark.store(8, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log_start(&owned), 6);
}
