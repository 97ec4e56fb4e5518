//! The cleaner threads (Kafka's `LogCleaner` and `LogCleanerManager`): each repeatedly picks
//! the dirtiest compacted log, cleans it ([`super::clean`]) and records how far it is clean in
//! the data directory's checkpoint file.
//!
//! A log is picked when its dirty ratio is at least its `min.cleanable.dirty.ratio`, or when its
//! oldest dirty record is older than `max.compaction.lag.ms`; the dirtiest such log goes first
//! and no log is cleaned by two threads at once. When none qualifies a thread sleeps
//! `log.cleaner.backoff.ms`. All threads share one throttle of
//! `log.cleaner.io.max.bytes.per.second` over what they read and write. A log whose cleaning
//! failed (damaged data) is left alone until the broker restarts, as Kafka marks it
//! uncleanable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::checkpoint::{self, Checkpoints};
use super::clean::CleanableStats;
use super::offset_map::OffsetMap;
use crate::error::LogError;
use crate::log::Log;
use crate::storage::Storage;

/// Broker-wide cleaner settings (Kafka's `log.cleaner.*`).
#[derive(Debug, Clone)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enabled: bool,
    /// `log.cleaner.threads`.
    pub threads: usize,
    /// `log.cleaner.dedupe.buffer.size`: bytes of offset map, shared by all threads.
    pub dedupe_buffer_size: u64,
    /// `log.cleaner.io.max.bytes.per.second`: read plus written by all threads.
    pub io_max_bytes_per_second: f64,
    /// `log.cleaner.backoff.ms`: sleep when no log needs cleaning.
    pub backoff_ms: u64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            enabled: true,
            threads: 1,
            dedupe_buffer_size: 128 * 1024 * 1024,
            io_max_bytes_per_second: f64::MAX,
            backoff_ms: 15_000,
        }
    }
}

/// A log the cleaner may clean, owned by someone else (the broker's partition).
pub trait CleanableLog: Send + Sync {
    /// Runs `f` on the log under its owner's lock; `false` when the log is closed.
    fn with_log(&self, f: &mut dyn FnMut(&mut Log)) -> bool;
    /// For each idempotent producer id, the last offset of its last batch.
    fn producer_last_offsets(&self) -> HashMap<i64, i64>;
    /// The log's last stable offset (at most its high watermark): the cleaner stays below the
    /// segment holding it.
    fn last_stable_offset(&self) -> i64;
}

/// Where the cleaner finds the logs (all of them; it checks each one's `cleanup.policy`).
pub trait LogSource: Send + Sync {
    fn logs(&self) -> Vec<Arc<dyn CleanableLog>>;
}

/// What the cleaner did since start (Kafka's `kafka.log:type=LogCleaner` metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CleanerMetrics {
    /// Cleanings finished.
    pub cleanings: u64,
    /// Bytes of segments read by cleanings (before).
    pub bytes_before: u64,
    /// Bytes of the segments they wrote (after).
    pub bytes_after: u64,
    /// Duration of the last cleaning, ms.
    pub last_duration_ms: u64,
    /// Largest dirty ratio seen at the last pick, in percent.
    pub max_dirty_percent: u64,
    /// Cleanings that failed; their logs are left alone until restart.
    pub failures: u64,
}

#[derive(Default)]
struct Counters {
    cleanings: AtomicU64,
    bytes_before: AtomicU64,
    bytes_after: AtomicU64,
    last_duration_ms: AtomicU64,
    max_dirty_percent: AtomicU64,
    failures: AtomicU64,
}

#[derive(Default)]
struct State {
    stop: bool,
    in_progress: HashSet<PathBuf>,
    /// Logs whose cleaning failed, by directory and [`Log::instance_id`].
    uncleanable: HashSet<(PathBuf, u64)>,
    /// Data directory → its checkpoint entries (loaded the first time one of its logs is seen).
    checkpoints: HashMap<PathBuf, Checkpoints>,
    /// Log directory → the [`Log::instance_id`] its checkpoint entry belongs to. An entry
    /// read from the file belongs to the first log seen in its directory; a log deleted and
    /// created again (same directory, new instance) starts with no entry, as in Kafka, where
    /// deleting a partition removes its checkpoint entry.
    owners: HashMap<PathBuf, u64>,
}

/// A shared `log.cleaner.io.max.bytes.per.second` budget (Kafka's `Throttler`).
struct Throttle {
    rate: f64,
    window: Mutex<(Instant, u64)>,
}

impl Throttle {
    /// Accounts `bytes` and sleeps the calling (cleaner) thread as long as it runs ahead.
    fn take(&self, bytes: u64, stopping: &AtomicBool) {
        if self.rate >= f64::MAX / 2.0 || self.rate <= 0.0 {
            return;
        }
        let sleep = {
            let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            w.1 += bytes;
            let elapsed = w.0.elapsed().as_secs_f64();
            let due = w.1 as f64 / self.rate;
            if elapsed > 1.0 && due < elapsed {
                *w = (Instant::now(), 0);
            }
            due - elapsed
        };
        // In steps, so that a shutdown does not wait for a long throttle.
        let mut left = Duration::from_secs_f64(sleep.clamp(0.0, 5.0));
        while !left.is_zero() && !stopping.load(Ordering::Relaxed) {
            let step = left.min(Duration::from_millis(50));
            std::thread::sleep(step);
            left -= step;
        }
    }
}

struct Shared {
    /// Set by [`LogCleaner::shutdown`]; checked at every batch a cleaning reads.
    stopping: AtomicBool,
    /// Serializes the writes of checkpoint files (all threads write through one `.tmp` name).
    checkpoint_write: Mutex<()>,
    config: CleanerConfig,
    source: Arc<dyn LogSource>,
    state: Mutex<State>,
    wake: Condvar,
    throttle: Throttle,
    counters: Counters,
}

/// The running cleaner; [`LogCleaner::shutdown`] (or drop) stops its threads.
pub struct LogCleaner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl LogCleaner {
    /// Starts `config.threads` cleaner threads over the logs of `source` (none when disabled).
    pub fn start(config: CleanerConfig, source: Arc<dyn LogSource>) -> std::io::Result<LogCleaner> {
        let threads = if config.enabled { config.threads.max(1) } else { 0 };
        let map_bytes = usize::try_from(config.dedupe_buffer_size / threads.max(1) as u64).unwrap_or(usize::MAX);
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            checkpoint_write: Mutex::new(()),
            throttle: Throttle { rate: config.io_max_bytes_per_second, window: Mutex::new((Instant::now(), 0)) },
            config,
            source,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            counters: Counters::default(),
        });
        let mut handles = Vec::new();
        for i in 0..threads {
            let shared = shared.clone();
            handles.push(std::thread::Builder::new().name(format!("strata-cleaner-{i}")).spawn(move || {
                let mut map = OffsetMap::with_buffer(map_bytes);
                run(&shared, &mut map);
            })?);
        }
        Ok(LogCleaner { shared, threads: Mutex::new(handles) })
    }

    /// What the cleaner did so far.
    pub fn metrics(&self) -> CleanerMetrics {
        let c = &self.shared.counters;
        CleanerMetrics {
            cleanings: c.cleanings.load(Ordering::Relaxed),
            bytes_before: c.bytes_before.load(Ordering::Relaxed),
            bytes_after: c.bytes_after.load(Ordering::Relaxed),
            last_duration_ms: c.last_duration_ms.load(Ordering::Relaxed),
            max_dirty_percent: c.max_dirty_percent.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    }

    /// Wakes the threads to look for work now (after a config change, in tests).
    pub fn wake(&self) {
        self.shared.wake.notify_all();
    }

    /// Stops the threads after the group of segments each is writing; returns when they have.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        self.shared.wake.notify_all();
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for h in handles {
            // Stopped from one of its own threads (it dropped the last reference to the
            // logs' owner): that one returns on its own.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for LogCleaner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(shared: &Shared, map: &mut OffsetMap) {
    loop {
        if shared.state.lock().unwrap_or_else(PoisonError::into_inner).stop {
            return;
        }
        match pick(shared) {
            Some(candidate) => {
                let run = std::panic::AssertUnwindSafe(|| clean(shared, &candidate, map));
                if std::panic::catch_unwind(run).is_err() {
                    shared.counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(dir = %candidate.dir.display(),
                        "the log cleaner panicked on this log; it is left uncleaned until the broker restarts");
                    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.uncleanable.insert((candidate.dir.clone(), candidate.instance));
                }
                shared.state.lock().unwrap_or_else(PoisonError::into_inner).in_progress.remove(&candidate.dir);
            }
            None => {
                let state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.stop {
                    return;
                }
                let backoff = Duration::from_millis(shared.config.backoff_ms.max(1));
                let _ = shared.wake.wait_timeout(state, backoff);
            }
        }
    }
}

struct Candidate {
    log: Arc<dyn CleanableLog>,
    dir: PathBuf,
    instance: u64,
    data_dir: PathBuf,
    name: String,
    storage: Arc<dyn Storage>,
    stats: CleanableStats,
}

fn names(dir: &Path) -> (PathBuf, String) {
    let data_dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (data_dir, name)
}

/// The dirtiest log that needs cleaning, marked in progress.
fn pick(shared: &Shared) -> Option<Candidate> {
    let now = wall_clock_ms();
    let mut best: Option<(f64, Candidate)> = None;
    let mut max_ratio = 0.0f64;
    let mut live = HashSet::new();
    for log in shared.source.logs() {
        let mut seen = None;
        log.with_log(&mut |l: &mut Log| {
            let compacted = l.config().cleanup_compact && !l.is_offline();
            let ratio = l.config().min_cleanable_dirty_ratio;
            seen = Some((l.dir().to_path_buf(), l.instance_id(), l.storage.clone(), ratio, compacted));
        });
        let Some((dir, instance, storage, min_ratio, compacted)) = seen else { continue };
        live.insert(dir.clone());
        if !compacted {
            continue;
        }
        let (data_dir, name) = names(&dir);
        let loaded = shared.state.lock().unwrap_or_else(PoisonError::into_inner).checkpoints.contains_key(&data_dir);
        if !loaded {
            let read = checkpoint::read(&*storage, &data_dir);
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.checkpoints.entry(data_dir.clone()).or_insert(read);
        }
        let checkpoint = {
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.in_progress.contains(&dir) || state.uncleanable.contains(&(dir.clone(), instance)) {
                continue;
            }
            let owner = *state.owners.entry(dir.clone()).or_insert(instance);
            if owner != instance {
                // The log was deleted and created again: what was clean of the old one is not.
                state.owners.insert(dir.clone(), instance);
                if let Some(c) = state.checkpoints.get_mut(&data_dir) {
                    c.remove(&name);
                }
            }
            state.checkpoints.get(&data_dir).and_then(|c| c.get(&name)).copied()
        };
        let mut stats = None;
        log.with_log(&mut |l: &mut Log| stats = l.cleanable_stats(checkpoint, now).ok().flatten());
        let Some(stats) = stats else { continue };
        let ratio = stats.dirty_ratio();
        max_ratio = max_ratio.max(ratio);
        if ratio < min_ratio && !stats.max_lag_exceeded {
            continue;
        }
        let score = if stats.max_lag_exceeded { f64::MAX } else { ratio };
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, Candidate { log, dir, instance, data_dir, name, storage, stats }));
        }
    }
    shared.counters.max_dirty_percent.store((max_ratio * 100.0) as u64, Ordering::Relaxed);
    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    // Entries of logs that are gone (deleted topics) are forgotten, and left out of the next
    // checkpoint file written.
    state.owners.retain(|dir, _| live.contains(dir));
    for (data_dir, entries) in state.checkpoints.iter_mut() {
        entries.retain(|name, _| live.contains(&data_dir.join(name)));
    }
    let (_, candidate) = best?;
    state.in_progress.insert(candidate.dir.clone()).then_some(candidate)
}

/// Cleans one log, swapping each group in as it is done, then records the checkpoint.
fn clean(shared: &Shared, c: &Candidate, map: &mut OffsetMap) {
    let started = Instant::now();
    let result = clean_inner(shared, c, map);
    let duration_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(Some(done)) => {
            let counters = &shared.counters;
            counters.cleanings.fetch_add(1, Ordering::Relaxed);
            counters.bytes_before.fetch_add(done.bytes_before, Ordering::Relaxed);
            counters.bytes_after.fetch_add(done.bytes_after, Ordering::Relaxed);
            counters.last_duration_ms.store(duration_ms, Ordering::Relaxed);
            let (topic, partition) = c.name.rsplit_once('-').unwrap_or((c.name.as_str(), ""));
            tracing::info!(
                topic,
                partition,
                dir = %c.dir.display(),
                bytes_before = done.bytes_before,
                bytes_after = done.bytes_after,
                records_read = done.records_read,
                records_kept = done.records_kept,
                first_dirty = c.stats.first_dirty,
                clean_to = done.end,
                dirty_ratio = format!("{:.2}", c.stats.dirty_ratio()),
                duration_ms,
                "log cleaned"
            );
        }
        Ok(None) | Err(LogError::CleaningAborted) => {}
        // The log was closed or deleted under the cleaner (topic deletion, shutdown).
        Err(e) if !c.log.with_log(&mut |_| {}) => {
            tracing::debug!(dir = %c.dir.display(), error = %e, "cleaning stopped: the log was closed");
        }
        Err(e) => {
            shared.counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(dir = %c.dir.display(), error = %e,
                "cleaning the log failed; it is left uncleaned until the broker restarts");
            shared.state.lock().unwrap_or_else(PoisonError::into_inner).uncleanable.insert((c.dir.clone(), c.instance));
        }
    }
}

struct Done {
    bytes_before: u64,
    bytes_after: u64,
    records_read: u64,
    records_kept: u64,
    end: i64,
}

fn clean_inner(shared: &Shared, c: &Candidate, map: &mut OffsetMap) -> Result<Option<Done>, LogError> {
    let producer_last = c.log.producer_last_offsets();
    let stable_offset = c.log.last_stable_offset();
    let now = wall_clock_ms();
    let mut plan = Ok(None);
    let open = c.log.with_log(&mut |l: &mut Log| {
        plan = l.clean_plan(Some(c.stats.first_dirty), now, producer_last.clone(), stable_offset)
    });
    let Some(plan) = plan? else { return Ok(None) };
    if !open {
        return Ok(None);
    }
    let mut io = |bytes: u64| {
        shared.throttle.take(bytes, &shared.stopping);
        !shared.stopping.load(Ordering::Relaxed)
    };
    let end = plan.build_offset_map(map, &mut io)?;
    let mut done = Done { bytes_before: 0, bytes_after: 0, records_read: 0, records_kept: 0, end };
    for group in plan.groups(end) {
        if shared.state.lock().unwrap_or_else(PoisonError::into_inner).stop {
            return Ok(None);
        }
        let cleaned = plan.clean_group(group, map, now, &mut io)?;
        let (before, after, read, kept) =
            (cleaned.bytes_before, cleaned.bytes_after, cleaned.records_read, cleaned.records_kept);
        let mut cleaned = Some(cleaned);
        let mut swapped = Ok(false);
        c.log.with_log(&mut |l: &mut Log| {
            if let Some(s) = cleaned.take() {
                swapped = l.replace_segments(s);
            }
        });
        if let Some(unused) = cleaned {
            unused.discard(); // the log was closed meanwhile
            return Ok(None);
        }
        if !swapped? {
            // Retention, truncation or deletion changed the log meanwhile: try again later.
            return Ok(None);
        }
        done.bytes_before += before;
        done.bytes_after += after;
        done.records_read += read;
        done.records_kept += kept;
    }
    record_checkpoint(shared, c, end)?;
    Ok(Some(done))
}

/// Sets the log's first dirty offset to `end` and rewrites its data directory's checkpoint,
/// keeping only entries of logs that still exist.
fn record_checkpoint(shared: &Shared, c: &Candidate, end: i64) -> Result<(), LogError> {
    let _serial = shared.checkpoint_write.lock().unwrap_or_else(PoisonError::into_inner);
    let entries: BTreeMap<String, i64> = {
        let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.owners.get(&c.dir) != Some(&c.instance) {
            return Ok(()); // deleted (and maybe created again) while it was being cleaned
        }
        let entries = state.checkpoints.entry(c.data_dir.clone()).or_default();
        entries.insert(c.name.clone(), end);
        entries.clone()
    };
    checkpoint::write(&*c.storage, &c.data_dir, &entries)
}
