//! Log compaction (Kafka's log cleaner): for logs whose `cleanup.policy` contains `compact`,
//! keep only the latest record of each key, and tombstones for `delete.retention.ms`.
//!
//! - [`clean`] — cleaning one log in steps (plan under the owner's lock, offset map and
//!   rewrite without it, segment swap under it again) and the crash-safe swap.
//! - [`manager`] — [`LogCleaner`]: `log.cleaner.threads` threads choosing the dirtiest log,
//!   the shared I/O throttle, checkpoints, metrics.
//! - [`offset_map`] — the bounded key → latest offset map.
//! - [`checkpoint`] — the `cleaner-offset-checkpoint` file of each data directory.
//!
//! The cleaner never touches the active segment, so appends and reads of a log wait for it
//! only while a segment swap runs under the owner's lock.

pub mod checkpoint;
pub mod clean;
pub mod manager;
pub mod offset_map;

pub use clean::{CleanPlan, CleanableStats, CleanedSegment};
pub use manager::{CleanableLog, CleanerConfig, CleanerMetrics, LogCleaner, LogSource};
pub use offset_map::OffsetMap;
