//! The `cleaner-offset-checkpoint` file of a data directory (Kafka's `OffsetCheckpointFile`,
//! [`crate::offset_checkpoint`]): how far each log of the directory is clean (its first
//! dirty offset), so a restart does not clean it all again. A missing or unreadable file
//! means "nothing is clean yet", which costs only work.

use std::path::Path;

use crate::error::LogError;
use crate::offset_checkpoint;
use crate::storage::Storage;

pub use crate::offset_checkpoint::Checkpoints;

/// Name of the file in each data directory.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// Reads the checkpoint file of `data_dir`; empty when it is missing or damaged.
pub fn read(storage: &dyn Storage, data_dir: &Path) -> Checkpoints {
    offset_checkpoint::read(storage, data_dir, CLEANER_CHECKPOINT_FILE, "logs will be cleaned from their start")
}

/// Durably replaces the checkpoint file of `data_dir` with `entries`.
pub fn write(storage: &dyn Storage, data_dir: &Path, entries: &Checkpoints) -> Result<(), LogError> {
    offset_checkpoint::write(storage, data_dir, CLEANER_CHECKPOINT_FILE, entries)
}
