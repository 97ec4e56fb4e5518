//! Per-partition segment logs in Apache Kafka's on-disk layout, synchronous (no async runtime).
//!
//! A [`Log`] is a directory of segments named by their 20-digit zero-padded base offset:
//! `00000000000000000000.log` holds RecordBatch v2 batches exactly as they travel on the wire,
//! `.index` maps offsets to file positions and `.timeindex` maps timestamps to offsets (both
//! sparse, memory-mapped). The log appends at its end, reads zero-copy slices of memory-mapped
//! segments as [`bytes::Bytes`], rolls, truncates, recovers after a crash, enforces retention
//! and flushes by policy. It knows nothing of the network, leaders or replication.
//!
//! All file access goes through the small [`storage::Storage`] trait, implemented by
//! [`storage::FsStorage`] (real files, memmap2) and [`storage::MemStorage`] (in memory, with
//! crash simulation); one test suite runs against both.
//!
//! # Layout
//! - [`log`] — [`Log`], the public face: append, read, roll, truncate, retention, recovery.
//! - `segment` — one `.log` file with its two indexes.
//! - `index` — the sparse offset and time indexes.
//! - [`manager`] — [`manager::LogManager`]: the partitions' directories, and the background
//!   work over their logs ([`maintenance`]: retention, time-based flush, the cleaner).
//! - [`cleaner`] — log compaction: the cleaner threads, cleaning, the crash-safe segment swap.
//! - [`snapshot`] — `<offset>.snapshot` files of state derived from the log (producer state).
//! - [`storage`] — the storage trait and its file-system and in-memory implementations.
//! - `mmap` — the only module with `unsafe` (memory maps), and the rules that make it sound.
//! - [`config`] — [`LogConfig`] with Kafka's defaults.
//! - [`data_dir`] — the data directory's lock (`.lock`) and identity (`meta.properties`).
//! - [`error`] — [`LogError`].
//!
//! # Example
//! ```
//! use strata_log::{Log, LogConfig};
//! # fn batch() -> Vec<u8> {
//! #     use strata_protocol::batch::*;
//! #     let h = BatchHeader { base_offset: 0, batch_length: 49, partition_leader_epoch: 0,
//! #         magic: 2, crc: 0, attributes: 0, last_offset_delta: 0, base_timestamp: 5,
//! #         max_timestamp: 5, producer_id: -1, producer_epoch: -1, base_sequence: -1,
//! #         records_count: 1 };
//! #     let mut b = h.to_bytes().to_vec();
//! #     let crc = compute_crc(&b);
//! #     b[17..21].copy_from_slice(&crc.to_be_bytes());
//! #     b
//! # }
//! let mut log = Log::open_in_memory(LogConfig::default(), 0);
//! let mut b = batch(); // one record batch, as received from a producer
//! let info = log.append(&mut b, 0)?;
//! assert_eq!((info.first_offset, log.log_end_offset()), (0, 1));
//! let read = log.read(0, 1 << 20, log.log_end_offset())?;
//! assert_eq!(&read.records[..], &b[..]);
//! assert!(log.read(1, 1 << 20, 1)?.records.is_empty()); // at the log end: empty, not an error
//! # Ok::<(), strata_log::LogError>(())
//! ```

pub mod cleaner;
pub mod config;
pub mod data_dir;
pub mod epoch;
pub mod error;
mod index;
pub mod log;
pub mod maintenance;
pub mod manager;
#[allow(unsafe_code)]
mod mmap;
pub mod offset_checkpoint;
mod segment;
pub mod snapshot;
pub mod storage;
pub mod txn_index;

pub use config::LogConfig;
pub use error::LogError;
pub use log::{
    AppendInfo, FileRange, Log, MaxTimestampFound, MaxTimestampPlan, PendingFlush, ReadInfo, SnapshotWriter,
    TimestampBatch, TimestampCandidate, TimestampResume,
};
