//! [`ReplicaManager::fetch_messages`] (Kafka's `ReplicaManager.fetchMessages`): reads the
//! partitions of a Fetch, for a consumer or a follower, and long-polls until enough is there.
//! The Fetch handler only parses the request and renders what this returns.
//!
//! - A follower's fetch (`replica_id` >= 0) reads up to the log end, and its fetch offset and
//!   log start count as the follower's position (high watermark, ISR, low watermark).
//! - A consumer reads below the high watermark; from Fetch v11 it may read from a follower
//!   (KIP-392), and with the rack-aware selector a leader may send it to a replica in its rack
//!   (`preferred_read_replica`, answered at once and without records).
//! - KIP-73: a throttled partition gets nothing for an out-of-sync follower while the
//!   leader's replication rate is over `leader.replication.throttled.rate`.
//! - Parked the way Kafka's fetch purgatory parks a `DelayedFetch`: woken by appends and
//!   high watermark moves, answered when `min_bytes` are there, at `max_wait`, at the first
//!   error, or when the broker shuts down.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::quota::ReplicationQuota;
use super::watchers::Watch;
use super::{now_ms, Partition, ReadBound, ReadResult, ReplicaManager};
use crate::error::BrokerError;

/// Longest a fetch may wait, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);

/// The request-wide parameters of a fetch (Kafka's `FetchParams`).
#[derive(Debug, Clone)]
pub struct FetchParams {
    /// The fetching follower's broker id; -1 for a consumer.
    pub replica_id: i32,
    pub max_wait: Duration,
    pub min_bytes: usize,
    /// Bytes over all partitions (KIP-74: the first data may exceed it by one batch).
    pub max_bytes: usize,
    /// Whether a consumer may read from a follower (Fetch v11+, KIP-392).
    pub from_any_replica: bool,
    /// The consumer's `client.rack` when the rack-aware replica selector is on (else `None`).
    pub rack_aware: Option<String>,
    /// `isolation_level=read_committed` (a consumer's): records up to the last stable offset,
    /// with the transactions aborted among them.
    pub read_committed: bool,
}

impl FetchParams {
    fn follower(&self) -> bool {
        self.replica_id >= 0
    }
}

/// One partition a fetch asks for.
#[derive(Debug)]
pub struct FetchPartition {
    /// The topic; an error decided while parsing (unknown topic id, a compression the
    /// request's version cannot read) instead.
    pub topic: Result<String, BrokerError>,
    pub index: i32,
    pub fetch_offset: i64,
    /// KIP-320's `current_leader_epoch`; -1 when not given.
    pub current_leader_epoch: i32,
    /// A follower's log start (its fetch's `log_start_offset`).
    pub log_start_offset: i64,
    pub max_bytes: usize,
}

/// What a fetch got from one partition.
#[derive(Debug)]
pub enum FetchedPartition {
    /// Records (possibly none) and the partition's offsets.
    Data { read: Option<ReadResult>, high_watermark: i64, last_stable_offset: i64, log_start_offset: i64 },
    /// KIP-392: the consumer should fetch from this replica instead.
    PreferredReplica { replica: i32, high_watermark: i64, log_start_offset: i64 },
    /// The partition failed with the Kafka error `code`; for leadership errors, the leader
    /// and epoch the metadata gives (KIP-951's `current_leader`). With the offsets (high
    /// watermark, log start) when the partition is known here.
    Error { code: i16, current_leader: Option<(i32, i32)>, offsets: Option<(i64, i64)> },
}

/// A partition as resolved at the start of the fetch.
struct Wanted {
    partition: Result<Arc<Partition>, BrokerError>,
    current_leader: Option<(i32, i32)>,
    offset: i64,
    max_bytes: usize,
    preferred_read_replica: Option<i32>,
    /// `Some(in_sync)` when the partition's replication is throttled on this leader.
    throttle: Option<bool>,
}

impl ReplicaManager {
    /// The partition `name`-`p.index` as `params` may read it: a follower's fetch only from
    /// the leader (its position recorded, `isr_change` set when it proposes an ISR change),
    /// a consumer's from the leader or, with `from_any_replica`, a follower.
    fn fetched_partition(
        &self,
        name: &str,
        p: &FetchPartition,
        params: &FetchParams,
        eligible: Option<i64>,
        now: i64,
        isr_change: &mut bool,
    ) -> Result<Arc<Partition>, BrokerError> {
        let part = self.partition_for_read(name, p.index, p.current_leader_epoch, params.from_any_replica)?;
        if params.follower() {
            *isr_change |=
                part.follower_fetched(params.replica_id, p.fetch_offset, p.log_start_offset, eligible, now)?;
        }
        Ok(part)
    }

    /// Reads `partitions` for a Fetch (see the module docs); results in the same order. Stops
    /// waiting when `shutdown` turns true.
    pub async fn fetch_messages(
        &self,
        params: &FetchParams,
        partitions: Vec<FetchPartition>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<FetchedPartition> {
        let image = self.image();
        let follower = params.follower();
        // The fetching follower's registration, if it may join an ISR (live): its epoch goes
        // with any ISR expansion this fetch leads to (KIP-903).
        let eligible = image.brokers.get(&params.replica_id).filter(|b| follower && !b.fenced).map(|b| b.epoch);
        let mut isr_change = false;
        let now = now_ms();
        let wanted: Vec<Wanted> = partitions
            .into_iter()
            .map(|mut p| {
                let topic = std::mem::replace(&mut p.topic, Ok(String::new()));
                let (name, partition) = match topic {
                    Ok(name) => {
                        let part = self.fetched_partition(&name, &p, params, eligible, now, &mut isr_change);
                        (Some(name), part)
                    }
                    Err(e) => (None, Err(e)),
                };
                let current_leader = match (&partition, &name) {
                    (
                        Err(
                            BrokerError::NotLeaderOrFollower(_)
                            | BrokerError::FencedLeaderEpoch { .. }
                            | BrokerError::UnknownLeaderEpoch { .. },
                        ),
                        Some(n),
                    ) => crate::handlers::leader_hint(&image, n, p.index),
                    _ => None,
                };
                let preferred_read_replica = match (&partition, &params.rack_aware) {
                    (Ok(part), Some(rack)) if !follower => {
                        part.preferred_read_replica(self.node_id, rack, p.fetch_offset, |id| {
                            image.brokers.get(&id).and_then(|b| b.rack.clone())
                        })
                    }
                    _ => None,
                };
                let throttle = match &partition {
                    Ok(part) if follower => part.replication_throttle(true, self.node_id, params.replica_id),
                    _ => None,
                };
                Wanted {
                    partition,
                    current_leader,
                    offset: p.fetch_offset,
                    max_bytes: p.max_bytes,
                    preferred_read_replica,
                    throttle,
                }
            })
            .collect();
        if isr_change {
            self.isr_change_proposed();
        }
        let bound = match (follower, params.read_committed) {
            (true, _) => ReadBound::LogEnd,
            (false, true) => ReadBound::LastStable,
            (false, false) => ReadBound::HighWatermark,
        };
        let mut deadline = Instant::now() + params.max_wait.min(MAX_WAIT_CAP);
        // One watch per distinct partition (a request may name one many times), held until
        // this fetch completes, times out or is dropped with its connection. Watching before
        // the first read means an append between a read and the wait still wakes us.
        let waiter = Arc::new(Notify::new());
        let _watches: Vec<Watch> = if Instant::now() < deadline {
            let mut seen = HashSet::new();
            wanted
                .iter()
                .filter_map(|w| w.partition.as_ref().ok())
                .filter(|p| seen.insert(Arc::as_ptr(p)))
                .map(|p| p.watch(&waiter))
                .collect()
        } else {
            Vec::new()
        };
        loop {
            let may_wait = Instant::now() < deadline;
            let (results, bytes, answer_now) = read_all(&wanted, params.max_bytes, bound, &self.leader_quota);
            if !may_wait || bytes >= params.min_bytes.max(1) || answer_now {
                return results;
            }
            if *shutdown.borrow_and_update() {
                deadline = Instant::now();
                continue;
            }
            tokio::select! {
                _ = waiter.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => deadline = Instant::now(),
            }
        }
    }
}

/// One pass over the wanted partitions: what each has, the bytes read, and whether the fetch
/// must be answered now (an error, or a consumer sent to another replica).
fn read_all(
    wanted: &[Wanted],
    max_bytes: usize,
    bound: ReadBound,
    leader_quota: &ReplicationQuota,
) -> (Vec<FetchedPartition>, usize, bool) {
    let now = now_ms();
    let mut total = 0usize;
    let mut answer_now = false;
    let mut out = Vec::with_capacity(wanted.len());
    for w in wanted {
        let p = match &w.partition {
            Err(e) => {
                answer_now = true;
                out.push(FetchedPartition::Error {
                    code: e.code_i16(),
                    current_leader: w.current_leader,
                    offsets: None,
                });
                continue;
            }
            Ok(p) => p,
        };
        if let Some(replica) = w.preferred_read_replica {
            // Kafka answers at once, without records, so the consumer moves over.
            answer_now = true;
            out.push(FetchedPartition::PreferredReplica {
                replica,
                high_watermark: p.high_watermark(),
                log_start_offset: p.log_start_offset(),
            });
            continue;
        }
        let offsets = (p.high_watermark(), p.log_start_offset());
        let no_data = || {
            let lso = if bound == ReadBound::LogEnd { offsets.0 } else { p.last_stable_offset() };
            FetchedPartition::Data {
                read: None,
                high_watermark: offsets.0,
                last_stable_offset: lso,
                log_start_offset: offsets.1,
            }
        };
        if w.throttle == Some(false) && leader_quota.exceeded(now) {
            // Throttled (KIP-73): nothing for an out-of-sync follower this time.
            out.push(no_data());
            continue;
        }
        let budget = max_bytes.saturating_sub(total).min(w.max_bytes);
        // KIP-74: the first data of the response may exceed the limits by one batch, so a big
        // batch can always be read.
        let result = if budget == 0 && total > 0 {
            Ok(None)
        } else {
            // Batches read for the first time are CRC-checked from the file: that read waits on
            // the disk, so it runs off the async worker.
            match p.read_cached(w.offset, budget.max(1), bound) {
                Ok(None) => crate::blocking::off_worker(|| p.read_to(w.offset, budget.max(1), bound)).map(Some),
                other => other,
            }
        };
        match result {
            Ok(Some(r)) => {
                total += r.records.len();
                if w.throttle.is_some() {
                    leader_quota.record(r.records.len() as u64, now);
                }
                let (hw, lso, start) = (r.high_watermark, r.last_stable_offset, r.log_start_offset);
                out.push(FetchedPartition::Data {
                    read: Some(r),
                    high_watermark: hw,
                    last_stable_offset: lso,
                    log_start_offset: start,
                });
            }
            Ok(None) => out.push(no_data()),
            Err(e) => {
                answer_now = true;
                match &e {
                    BrokerError::OffsetOutOfRange { .. } => {}
                    BrokerError::CorruptMessage(_) | BrokerError::Storage(_) => tracing::error!(
                        topic = %p.topic, partition = p.index, offset = w.offset, error = %e,
                        "fetch failed: the partition's data on disk is damaged or unreadable"
                    ),
                    _ => {
                        tracing::warn!(topic = %p.topic, partition = p.index, offset = w.offset, error = %e, "fetch failed")
                    }
                }
                out.push(FetchedPartition::Error { code: e.code_i16(), current_leader: None, offsets: Some(offsets) });
            }
        }
    }
    (out, total, answer_now)
}
