//! Measures crash recovery of a 1 GiB active segment.
//!
//! Writes 1 GiB of 16 KiB record batches into a fresh log, drops it without `close` (so no
//! clean-shutdown marker is written), then times `Log::open`, which must scan the active
//! segment, verify every batch's CRC32C and rebuild its indexes.
//!
//! `cargo run --release -p strata-log --example recover_1gib [DIR]` (default: a temp dir).
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use strata_log::{Log, LogConfig};
use strata_protocol::batch::{compute_crc, BatchHeader};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("strata-recover-{}", std::process::id())),
    };
    let dir = base.join("topic-0");
    let config = LogConfig { segment_bytes: 2 * 1024 * 1024 * 1024 - 1, ..LogConfig::default() };
    const BATCH: usize = 16 * 1024;
    const TOTAL: usize = 1024 * 1024 * 1024;
    let payload = BATCH - 61;
    let h = BatchHeader {
        base_offset: 0,
        batch_length: (BATCH - 12) as i32,
        partition_leader_epoch: 0,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: 9,
        base_timestamp: 1_700_000_000_000,
        max_timestamp: 1_700_000_000_009,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: 10,
    };
    let mut template = h.to_bytes().to_vec();
    template.extend((0..payload).map(|i| (i % 251) as u8));
    let crc = compute_crc(&template);
    template[17..21].copy_from_slice(&crc.to_be_bytes());

    let mut log = Log::open(&dir, config.clone(), 0)?;
    let started = Instant::now();
    let mut buf = Vec::with_capacity(64 * BATCH);
    for _ in 0..(TOTAL / BATCH / 64) {
        buf.clear();
        for _ in 0..64 {
            buf.extend_from_slice(&template);
        }
        log.append(&mut buf, 0)?;
    }
    let (leo, size) = (log.log_end_offset(), log.size_bytes());
    println!("wrote {} MiB, LEO {leo}, in {:?}", size >> 20, started.elapsed());
    drop(log); // no close: no clean-shutdown marker

    let started = Instant::now();
    let log = Log::open(&dir, config.clone(), 0)?;
    let elapsed = started.elapsed();
    assert_eq!(log.log_end_offset(), leo);
    println!(
        "recovered {} MiB ({} batches) in {:?} ({:.2} GiB/s)",
        log.size_bytes() >> 20,
        TOTAL / BATCH,
        elapsed,
        (log.size_bytes() as f64 / (1u64 << 30) as f64) / elapsed.as_secs_f64()
    );
    log.close()?;
    let started = Instant::now();
    let log = Log::open(&dir, config, 0)?;
    println!("clean reopen in {:?}", started.elapsed());
    log.delete()?;
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
