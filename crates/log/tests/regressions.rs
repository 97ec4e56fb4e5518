//! Inputs found by fuzzing (fuzz/regressions/) that once broke the log.
#![allow(clippy::unwrap_used)]

use strata_log::log::CLEAN_SHUTDOWN_FILE;
use strata_log::{Log, LogConfig};

/// A cleanly shut down log whose active segment starts with a batch claiming
/// base offset i64::MAX: opening once overflowed `last_offset + 1` (a panic in
/// debug, and a wiped partition in release). It must open (recovering) or
/// fail cleanly, and never lose the ability to append.
#[test]
fn clean_marker_with_an_absurd_first_batch_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut header = vec![0u8; 61];
    header[0..8].copy_from_slice(&i64::MAX.to_be_bytes());
    header[8..12].copy_from_slice(&49i32.to_be_bytes());
    header[16] = 2;
    std::fs::write(dir.path().join("00000000000000000000.log"), &header).unwrap();
    std::fs::write(dir.path().join("00000000000000000000.index"), b"").unwrap();
    std::fs::write(dir.path().join("00000000000000000000.timeindex"), b"").unwrap();
    std::fs::write(dir.path().join(CLEAN_SHUTDOWN_FILE), b"").unwrap();
    if let Ok(log) = Log::open(dir.path(), LogConfig::default(), 0) {
        assert!(log.log_start_offset() <= log.log_end_offset());
        assert!(log.log_end_offset() < i64::MAX);
    }
}
