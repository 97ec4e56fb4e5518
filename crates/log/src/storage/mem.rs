//! [`MemStorage`]: the in-memory twin of [`FsStorage`](super::FsStorage), with crash simulation.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::{IndexMap, Storage, StorageFile};

/// An in-memory file system. Clones share the same files.
///
/// Every file keeps its current bytes and its *durable* bytes (as of the last `sync`).
/// [`MemStorage::crash`] throws unsynced changes away, like a power failure would. Directory
/// operations are durable at once (a journaling file system after `sync_dir`).
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    fs: Arc<Mutex<MemFs>>,
}

#[derive(Debug, Default)]
struct MemFs {
    files: BTreeMap<PathBuf, Arc<Mutex<FileData>>>,
    dirs: BTreeSet<PathBuf>,
    /// Simulated disk size (see [`MemStorage::set_space_limit`]).
    space_limit: Option<u64>,
    /// Whether file syncs fail (see [`MemStorage::set_sync_failures`]).
    fail_syncs: bool,
    /// File syncs so far (see [`MemStorage::file_syncs`]).
    syncs: u64,
    /// How long each file sync takes (see [`MemStorage::set_sync_delay`]).
    sync_delay: std::time::Duration,
    /// Changing operations so far (see [`MemStorage::ops`]).
    ops: u64,
    /// Where to take a power-cut image: before operation `.0`, torn writes chosen by `.1`.
    crash_at: Option<(u64, u64)>,
    /// The image taken there (see [`MemStorage::take_crash_image`]).
    crash_image: Option<MemStorage>,
}

impl MemFs {
    /// Bytes the files take (their lengths).
    fn used(&self) -> u64 {
        self.files.values().map(|f| lock(f).len as u64).sum()
    }

    /// Counts one changing operation, first taking the power-cut image if this is the
    /// operation it was asked before. Called with no file locked (lock order: file system,
    /// then file).
    fn tick(&mut self) {
        self.ops += 1;
        if let Some((at, seed)) = self.crash_at {
            if self.ops == at && self.crash_image.is_none() {
                let mut state = seed | 1;
                let files = self
                    .files
                    .iter()
                    .map(|(path, f)| (path.clone(), Arc::new(Mutex::new(lock(f).after_crash(&mut state)))))
                    .collect();
                let image = MemFs { files, dirs: self.dirs.clone(), ..MemFs::default() };
                self.crash_image = Some(MemStorage { fs: Arc::new(Mutex::new(image)) });
            }
        }
    }
}

/// One xorshift64 step.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A file's bytes: `data`, then zeros up to `len` (so preallocated index files cost nothing).
#[derive(Debug, Default)]
struct FileData {
    data: Vec<u8>,
    len: usize,
    durable: Vec<u8>,
    durable_len: usize,
    /// Byte ranges whose reads fail with EIO (see [`MemStorage::set_bad_range`]).
    bad: Vec<std::ops::Range<usize>>,
}

impl FileData {
    /// Copies `[start, start + buf.len())` into `buf`; false if out of bounds.
    fn read(&self, start: usize, buf: &mut [u8]) -> bool {
        let Some(end) = start.checked_add(buf.len()).filter(|e| *e <= self.len) else {
            return false;
        };
        buf.fill(0);
        if let Some(src) = self.data.get(start..end.min(self.data.len())) {
            buf[..src.len()].copy_from_slice(src);
        }
        true
    }

    /// What a power cut leaves of this file: its durable content, plus, when the unsynced
    /// change is a pure append, a pseudo-random prefix (possibly empty or all) of the appended
    /// bytes, as a torn write leaves.
    fn after_crash(&self, state: &mut u64) -> FileData {
        let r = next_random(state);
        let d = self.durable.len();
        let pure_append =
            self.len > self.durable_len && d == self.durable_len && self.data.get(..d) == Some(&self.durable[..]);
        let (data, len) = if pure_append {
            let keep = (r % ((self.len - d) as u64 + 1)) as usize;
            let len = d + keep;
            (self.data[..len.min(self.data.len())].to_vec(), len)
        } else {
            (self.durable.clone(), self.durable_len)
        };
        FileData { durable: data.clone(), durable_len: len, data, len, bad: self.bad.clone() }
    }

    fn write(&mut self, start: usize, src: &[u8]) {
        let end = start + src.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(src);
        self.len = self.len.max(end);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl MemStorage {
    /// An empty file system.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Simulates a crash: every file falls back to its durable content. When a file's unsynced
    /// change is a pure append, a pseudo-random prefix (chosen by `seed`, possibly empty or
    /// all) of the appended bytes survives, which models a torn write. Handles and mappings
    /// made before the crash must not be used afterwards.
    pub fn crash(&self, seed: u64) {
        let fs = lock(&self.fs);
        let mut state = seed | 1;
        for file in fs.files.values() {
            let mut f = lock(file);
            *f = f.after_crash(&mut state);
        }
    }

    /// Changing operations (file creation, writes, length changes, syncs, renames, removals,
    /// directory creation and syncs) done so far: the clock of [`MemStorage::set_crash_point`].
    pub fn ops(&self) -> u64 {
        lock(&self.fs).ops
    }

    /// Asks for a power-cut image to be taken just before changing operation number `op`
    /// (counting from 1, see [`MemStorage::ops`]), torn writes chosen by `seed` as in
    /// [`MemStorage::crash`]. The file system goes on unharmed; the image, an independent
    /// file system holding what a power cut at that moment would have left, is fetched with
    /// [`MemStorage::take_crash_image`]. What was fsynced by the end of operation `op - 1` is
    /// in it.
    pub fn set_crash_point(&self, op: u64, seed: u64) {
        let mut fs = lock(&self.fs);
        fs.crash_at = Some((op, seed));
        fs.crash_image = None;
    }

    /// The image taken at the crash point, if it was reached.
    pub fn take_crash_image(&self) -> Option<MemStorage> {
        lock(&self.fs).crash_image.take()
    }

    /// Simulates a disk of `limit` bytes (all file lengths together), or lifts the limit with
    /// `None`. A write or growth beyond it fails with [`io::ErrorKind::StorageFull`] (ENOSPC)
    /// after writing the part that fits, as a real short write on a full disk does.
    pub fn set_space_limit(&self, limit: Option<u64>) {
        lock(&self.fs).space_limit = limit;
    }

    /// Makes every file `sync` fail with EIO (`true`) or work again (`false`). A failed sync makes
    /// nothing durable, as on Linux, where the pages that could not be written are dropped or
    /// marked clean, so a crash loses them.
    pub fn set_sync_failures(&self, fail: bool) {
        lock(&self.fs).fail_syncs = fail;
    }

    /// Makes every file sync take `delay`, as a real disk's does (for tests of fsync batching).
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        lock(&self.fs).sync_delay = delay;
    }

    /// How many file syncs succeeded so far (for tests of fsync batching).
    pub fn file_syncs(&self) -> u64 {
        lock(&self.fs).syncs
    }

    /// Makes reads (`read_at`) of `range` of the file at `path` fail with EIO, as a bad disk
    /// sector does (a memory-mapped read of it would raise SIGBUS on a real disk, which is why
    /// the log reads with `pread` wherever it verifies stored bytes). No-op for a missing file.
    pub fn set_bad_range(&self, path: &Path, range: std::ops::Range<usize>) {
        if let Some(f) = lock(&self.fs).files.get(path) {
            lock(f).bad.push(range);
        }
    }

    /// Total bytes of all files (for tests).
    pub fn total_bytes(&self) -> u64 {
        let fs = lock(&self.fs);
        fs.files.values().map(|f| lock(f).len as u64).sum()
    }
}

impl Storage for MemStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.tick();
        for a in dir.ancestors() {
            fs.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>> {
        let mut fs = lock(&self.fs);
        if let Some(f) = fs.files.get(path) {
            return Ok(Box::new(MemFile { data: f.clone(), fs: self.fs.clone() }));
        }
        let parent_exists = path.parent().is_some_and(|p| fs.dirs.contains(p));
        if !create || !parent_exists {
            return Err(not_found(path));
        }
        fs.tick();
        let data = Arc::new(Mutex::new(FileData::default()));
        fs.files.insert(path.to_path_buf(), data.clone());
        Ok(Box::new(MemFile { data, fs: self.fs.clone() }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let fs = lock(&self.fs);
        Ok(fs.files.contains_key(path) || fs.dirs.contains(path))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let fs = lock(&self.fs);
        if !fs.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(fs
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.tick();
        let f = fs.files.remove(from).ok_or_else(|| not_found(from))?;
        fs.files.insert(to.to_path_buf(), f);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.tick();
        fs.files.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.tick();
        if !fs.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        fs.files.retain(|p, _| !p.starts_with(dir));
        fs.dirs.retain(|p| !p.starts_with(dir));
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        lock(&self.fs).tick();
        Ok(())
    }
}

#[derive(Debug)]
struct MemFile {
    data: Arc<Mutex<FileData>>,
    fs: Arc<Mutex<MemFs>>,
}

fn storage_full() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "no space left on device (simulated)")
}

impl MemFile {
    /// How far this file may grow: its current length plus the free space, if limited.
    fn max_len(&self) -> Option<usize> {
        let fs = lock(&self.fs); // lock order: file system, then file
        let limit = fs.space_limit?;
        let free = limit.saturating_sub(fs.used());
        let own = lock(&self.data).len as u64;
        Some(usize::try_from(own.saturating_add(free)).unwrap_or(usize::MAX))
    }
}

impl StorageFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.data).len as u64)
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let f = lock(&self.data);
        let start = usize::try_from(pos).unwrap_or(usize::MAX);
        let end = start.saturating_add(buf.len());
        if f.bad.iter().any(|r| r.start < end && start < r.end) {
            return Err(io::Error::other("input/output error (simulated bad sector)"));
        }
        if f.read(start, buf) {
            Ok(())
        } else {
            Err(io::Error::from(io::ErrorKind::UnexpectedEof))
        }
    }

    fn write_all_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        lock(&self.fs).tick();
        let start = usize::try_from(pos).map_err(|_| io::Error::other("position too large"))?;
        let max = self.max_len();
        let mut f = lock(&self.data);
        match max {
            Some(max) if start.saturating_add(data.len()) > max.max(f.len) => {
                let fits = max.max(f.len).saturating_sub(start).min(data.len());
                f.write(start, &data[..fits]);
                Err(storage_full())
            }
            _ => {
                f.write(start, data);
                Ok(())
            }
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        lock(&self.fs).tick();
        let len = usize::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        let max = self.max_len();
        let mut f = lock(&self.data);
        if len > f.len && max.is_some_and(|m| len > m) {
            return Err(storage_full());
        }
        f.len = len;
        f.data.truncate(len);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let delay = {
            let mut fs = lock(&self.fs);
            fs.tick();
            if fs.fail_syncs {
                return Err(io::Error::other("injected fsync failure (EIO)"));
            }
            fs.syncs += 1;
            fs.sync_delay
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut f = lock(&self.data);
        f.durable = f.data.clone();
        f.durable_len = f.len;
        Ok(())
    }

    fn map(&self, len: u64) -> io::Result<Bytes> {
        let f = lock(&self.data);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > f.len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let mut buf = vec![0u8; len];
        f.read(0, &mut buf);
        Ok(Bytes::from(buf))
    }

    fn map_mut(&self, len: u64) -> io::Result<Box<dyn IndexMap>> {
        let f = lock(&self.data);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > f.len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let mut buf = vec![0u8; len]; // zeroed pages are allocated lazily
        f.read(0, &mut buf);
        Ok(Box::new(MemIndexMap { file: self.data.clone(), buf }))
    }
}

/// A "mapping" of an in-memory index: a private buffer written back on flush (durably) and on
/// drop (not durably), like dirty pages of a shared mapping.
#[derive(Debug)]
struct MemIndexMap {
    file: Arc<Mutex<FileData>>,
    buf: Vec<u8>,
}

impl MemIndexMap {
    fn write_back(&self, durable: bool) {
        let mut f = lock(&self.file);
        // Materialize only up to the last non-zero byte; the rest stays implicit zeros.
        let used = last_non_zero(&self.buf);
        f.write(0, &self.buf[..used]);
        let stale_end = f.data.len().min(self.buf.len());
        if stale_end > used {
            f.data[used..stale_end].fill(0);
        }
        f.len = f.len.max(self.buf.len());
        if durable {
            f.durable = f.data.clone();
            f.durable_len = f.len;
        }
    }
}

/// Length of `buf` without its trailing zeros (page-wise `memcmp`, then byte-wise).
fn last_non_zero(buf: &[u8]) -> usize {
    const CHUNK: usize = 4096;
    static ZEROS: [u8; CHUNK] = [0; CHUNK];
    let mut end = buf.len();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &buf[start..end];
        if chunk != &ZEROS[..chunk.len()] {
            return start + chunk.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        }
        end = start;
    }
    0
}

impl IndexMap for MemIndexMap {
    fn bytes(&self) -> &[u8] {
        &self.buf
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    fn flush(&self) -> io::Result<()> {
        MemIndexMap::write_back(self, true);
        Ok(())
    }

    fn write_back(&self) -> io::Result<()> {
        MemIndexMap::write_back(self, false);
        Ok(())
    }
}

impl Drop for MemIndexMap {
    fn drop(&mut self) {
        MemIndexMap::write_back(self, false);
    }
}

/// Runs `test` once per seed of a seeded simulation and names the seed of a failure.
///
/// Seeds are `0..default_count`, or `0..N` with `STRATA_SEEDS=N` in the environment (more
/// seeds locally or in a soak), or just `S` with `STRATA_SEED=S` (replaying a failure).
/// A failing seed panics with `replay: STRATA_SEED=<seed> cargo test ... <name>`.
pub fn for_each_seed(name: &str, default_count: u64, test: impl Fn(u64)) {
    let env = |key: &str| std::env::var(key).ok().and_then(|v| v.trim().parse::<u64>().ok());
    let seeds: Vec<u64> = match (env("STRATA_SEED"), env("STRATA_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, Some(n)) => (0..n).collect(),
        (None, None) => (0..default_count).collect(),
    };
    for seed in seeds {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(seed))) {
            let why = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            panic!("{name}: seed {seed} failed: {why}\nreplay: STRATA_SEED={seed} cargo test {name}");
        }
    }
}

/// A small deterministic generator for seeded simulations (xorshift64*; not for anything
/// else).
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        next_random(&mut self.0).wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}
