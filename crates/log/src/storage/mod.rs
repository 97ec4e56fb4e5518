//! The storage seam: a few file operations the log needs, with a real file-system + mmap
//! implementation ([`FsStorage`]) and an in-memory twin ([`MemStorage`]) that can simulate a crash.
//!
//! Contract for every implementation and caller (see also the `mmap` module):
//! - a `Bytes` returned by [`StorageFile::map`] stays valid and unchanged for as long as it lives,
//!   provided callers never rewrite bytes below a mapped length and never shrink a file below
//!   one — the log guarantees both;
//! - [`StorageFile::sync`] makes the file's content and length durable; directory changes
//!   (create, rename, remove) are durable after [`Storage::sync_dir`].

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use bytes::Bytes;

mod fs;
mod mem;

pub use fs::FsStorage;
pub use mem::{for_each_seed, MemStorage, SimRng};

/// Replaces `dir/name` with `bytes` atomically and durably: a temporary `name.tmp` written and
/// fsynced, renamed over the old file, then the directory fsynced. After a crash the file is
/// whole, old or new. On failure, the path of the step that failed and its error.
pub fn replace_file(storage: &dyn Storage, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let on = |p: &Path| {
        let p = p.to_path_buf();
        move |e| (p.clone(), e)
    };
    let f = storage.open(&tmp, true).map_err(on(&tmp))?;
    f.set_len(0).map_err(on(&tmp))?;
    f.write_all_at(0, bytes).map_err(on(&tmp))?;
    f.sync().map_err(on(&tmp))?;
    drop(f);
    storage.rename(&tmp, &path).map_err(on(&path))?;
    storage.sync_dir(dir).map_err(on(dir))
}

/// A file system: directories of named files.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` for reading and writing, creating it (empty) if `create` and it is missing.
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Names of the files directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`. Open handles and mappings of it stay valid.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Removes `dir` and everything in it.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fills `buf` from position `pos`; `UnexpectedEof` if the file is too short.
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at position `pos`, extending the file if needed.
    fn write_all_at(&self, pos: u64, data: &[u8]) -> io::Result<()>;
    /// Writes `parts` back to back from position `pos`, as one `write_all_at` of their
    /// concatenation would (the file system implementation uses one `pwritev`). On failure a
    /// prefix may have been written, as with `write_all_at`.
    fn write_all_vectored_at(&self, pos: u64, parts: &[&[u8]]) -> io::Result<()> {
        let mut at = pos;
        for part in parts {
            self.write_all_at(at, part)?;
            at += part.len() as u64;
        }
        Ok(())
    }
    /// Sets the length, zero-filling when growing.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Sets the length to `len` and reserves disk space for all of it, so that writes through a
    /// mapping of the file cannot fail for lack of space (a mapped write to a hole on a full
    /// disk raises SIGBUS). Fails with [`io::ErrorKind::StorageFull`] when the disk is full.
    /// The default only sets the length.
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
    /// The file's descriptor when it is a real file, so a reader can hand a range of it to
    /// the kernel (`sendfile(2)`) instead of copying it out of a mapping; `None` for
    /// in-memory files.
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// When the file's content last changed, in ms since the epoch, if the storage knows
    /// (retention falls back on it for segments without record timestamps, as Kafka's
    /// `LogSegment.largestTimestamp` falls back on the file's last-modified time).
    fn modified_ms(&self) -> io::Result<Option<i64>> {
        Ok(None)
    }
    /// Makes content and length durable.
    fn sync(&self) -> io::Result<()>;
    /// A read-only view of `[0, len)` (`len` at most the file length). The real implementation
    /// memory-maps the file and copies nothing.
    fn map(&self, len: u64) -> io::Result<Bytes>;
    /// A writable view of `[0, len)` for an index file; the file must be at least `len` long.
    fn map_mut(&self, len: u64) -> io::Result<Box<dyn IndexMap>>;
}

/// A writable mapping of an index file, owned by one index.
pub trait IndexMap: Send + Sync + fmt::Debug {
    /// The mapped bytes.
    fn bytes(&self) -> &[u8];
    /// The mapped bytes, for writing.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Writes the mapped bytes back to the file and makes them durable.
    fn flush(&self) -> io::Result<()>;
    /// Makes the mapped bytes visible to a new mapping of the file, without making them
    /// durable. A shared memory map of a real file already is (no-op); the in-memory twin
    /// copies its buffer back.
    fn write_back(&self) -> io::Result<()> {
        Ok(())
    }
}
