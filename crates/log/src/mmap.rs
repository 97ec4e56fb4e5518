//! Memory maps of segment and index files: the only module of the workspace where `unsafe` is
//! allowed.
//!
//! Mapping a file is unsafe because the mapping's bytes change (or fault with SIGBUS) if the file
//! is modified or shrunk while mapped. The log upholds, crate-wide:
//!
//! 1. **Mapped bytes are never rewritten.** A `.log` file is mapped only up to the segment's
//!    valid size; writes only ever go beyond that size (appends at the end).
//! 2. **Mapped files are never shrunk below a mapped length.** A segment remembers the largest
//!    length it ever mapped (mappings handed out as `Bytes` may outlive the segment);
//!    `Log::truncate_to` below it writes the kept prefix to a new file and renames it over the
//!    old one, so existing mappings keep the old inode. Index files are mapped only by their
//!    owning index, which drops its mapping before shrinking the file.
//! 3. **Nobody else writes the log directory** while the broker runs (as with Apache Kafka).

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapMut, MmapOptions};

/// Maps `[0, len)` of `file` read-only. `len` must be non-zero and at most the file's length.
pub(crate) fn map_read_only(file: &File, len: usize) -> io::Result<Mmap> {
    // SAFETY: rules 1-3 of the module docs: the mapped range lies within the file and is never
    // rewritten or truncated while this mapping (or any `Bytes` made from it) lives.
    let map = unsafe { MmapOptions::new().len(len).map(file)? };
    Ok(map)
}

/// Maps `[0, len)` of `file` read-write for an index. The caller sized the file to at least `len`
/// and owns the mapping exclusively (rule 2).
pub(crate) fn map_read_write(file: &File, len: usize) -> io::Result<MmapMut> {
    // SAFETY: the file is at least `len` bytes long, only the owning index touches it while the
    // mapping lives, and the index drops the mapping before it shrinks the file (rule 2).
    let map = unsafe { MmapOptions::new().len(len).map_mut(file)? };
    // An index is written one entry at a time at its end and read by binary search. Without this
    // hint the first touch of a page of the preallocated (unwritten) file reads ahead and zeroes
    // up to megabytes of page cache; recovering 1,000 partitions after a crash spent most of its
    // time there. Advice only: a failure changes nothing but speed.
    if let Err(e) = map.advise(memmap2::Advice::Random) {
        tracing::debug!(error = %e, "madvise(MADV_RANDOM) on an index mapping failed");
    }
    Ok(map)
}
