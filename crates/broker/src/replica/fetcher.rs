//! Follower fetching (Kafka's `ReplicaFetcherManager` and `ReplicaFetcherThread`): one task
//! per leader broker fetches every partition this broker follows from that leader.
//!
//! A partition's life in its fetcher:
//! 1. **Truncation first** (KIP-101, KIP-279): before it fetches in a new leader epoch, the
//!    follower asks the leader with OffsetForLeaderEpoch where its own latest epoch ends in
//!    the leader's log and truncates whatever it has beyond that, so it never keeps records
//!    the new leader does not have (they were never committed). When the leader does not
//!    have its epoch, it asks again for the epoch the leader answered with, and so on down.
//! 2. **Fetching** from its log end with its replica id and the leader epoch, so the leader
//!    tells it apart from a consumer, reads it up to the log end (not the high watermark)
//!    and counts its position for the high watermark and the ISR. What comes back is
//!    appended as it is (offsets and epochs as the leader assigned them); the leader's high
//!    watermark and log start follow.
//! 3. An OFFSET_OUT_OF_RANGE answer sends it back to truncation; one whose log start is past
//!    this replica's end empties the log and starts it there. Errors about leadership (the
//!    metadata moved) pause it for `replica.fetch.backoff.ms`; the next registration the
//!    metadata brings moves it to another fetcher or stops it.
//!
//! Appends and truncations wait on the disk, so they run on the blocking pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use strata_client::KafkaClient;
use strata_protocol::kafka_protocol::error::ParseResponseErrorCode;
use strata_protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use strata_protocol::kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use strata_protocol::kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use strata_protocol::kafka_protocol::protocol::StrBytes;
use strata_protocol::ResponseError;
use tokio::sync::Notify;

use crate::replica::quota::ReplicationQuota;
use crate::replica::replication::Following;
use crate::replica::{now_ms, Partition, ReplicaManager};

/// The `replica.fetch.*` settings.
#[derive(Debug, Clone, Copy)]
pub struct FetchSettings {
    pub wait_max_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub response_max_bytes: i32,
    pub backoff: Duration,
    pub socket_timeout: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            wait_max_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            response_max_bytes: 10 << 20,
            backoff: Duration::from_secs(1),
            socket_timeout: Duration::from_secs(30),
        }
    }
}

/// What a fetcher knows of one partition it fetches.
#[derive(Clone)]
struct Target {
    partition: Arc<Partition>,
    /// The leader and epoch it fetches in: every change to the log made for this target is
    /// checked against the partition's registration under its lock (see [`Following`]).
    from: Following,
    truncated: bool,
    /// No fetch before this time (ms): backing off after an error.
    paused_until_ms: i64,
}

type Key = (String, i32);

/// One leader's fetcher: the partitions to fetch from it, and a wake-up for changes.
struct LeaderFetcher {
    targets: Mutex<HashMap<Key, Target>>,
    changed: Notify,
}

/// All fetchers of this broker. The metadata publisher tells it which partitions follow which
/// leader; it runs a task per leader that has any.
pub struct FetcherManager {
    node_id: i32,
    settings: FetchSettings,
    runtime: tokio::runtime::Handle,
    replicas: Weak<ReplicaManager>,
    fetchers: Mutex<HashMap<i32, Arc<LeaderFetcher>>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl FetcherManager {
    /// A manager whose fetchers run on `runtime` and stop at `shutdown`.
    pub fn new(
        node_id: i32,
        settings: FetchSettings,
        runtime: tokio::runtime::Handle,
        replicas: Weak<ReplicaManager>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self { node_id, settings, runtime, replicas, fetchers: Mutex::default(), shutdown }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<LeaderFetcher>>> {
        self.fetchers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `partition` follows `leader` in `leader_epoch`: fetched from there, after truncation
    /// if the epoch is new to it. Removed from any other leader's fetcher.
    pub fn follow(&self, partition: Arc<Partition>, leader: i32, leader_epoch: i32) {
        let key = (partition.topic.clone(), partition.index);
        let mut fetchers = self.lock();
        for (id, f) in fetchers.iter() {
            if *id != leader && lock(&f.targets).remove(&key).is_some() {
                f.changed.notify_one();
            }
        }
        let fetcher = fetchers.entry(leader).or_insert_with(|| {
            let f = Arc::new(LeaderFetcher { targets: Mutex::default(), changed: Notify::new() });
            self.runtime.spawn(run(
                self.node_id,
                leader,
                f.clone(),
                self.settings,
                self.replicas.clone(),
                self.shutdown.clone(),
            ));
            f
        });
        let mut targets = lock(&fetcher.targets);
        let from = Following { leader, leader_epoch };
        let same = targets.get(&key).is_some_and(|t| t.from == from && Arc::ptr_eq(&t.partition, &partition));
        if !same {
            targets.insert(key, Target { partition, from, truncated: false, paused_until_ms: 0 });
            fetcher.changed.notify_one();
        }
    }

    /// Stops fetching `topic`-`index` (this broker leads it now, or no longer holds it, or
    /// it has no leader).
    pub fn unfollow(&self, topic: &str, index: i32) {
        let key = (topic.to_owned(), index);
        for f in self.lock().values() {
            if lock(&f.targets).remove(&key).is_some() {
                f.changed.notify_one();
            }
        }
    }

    /// How many partitions are fetched, from how many leaders.
    pub fn fetched(&self) -> (usize, usize) {
        let fetchers = self.lock();
        (
            fetchers.values().map(|f| lock(&f.targets).len()).sum(),
            fetchers.values().filter(|f| !lock(&f.targets).is_empty()).count(),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fetcher's task: truncate what needs it, fetch, apply, until shut down. Idles (waiting
/// for a change) while it has nothing to fetch.
async fn run(
    node_id: i32,
    leader: i32,
    fetcher: Arc<LeaderFetcher>,
    settings: FetchSettings,
    replicas: Weak<ReplicaManager>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut client: Option<(String, KafkaClient)> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = now_ms();
        let targets: Vec<(Key, Target)> = lock(&fetcher.targets)
            .iter()
            .filter(|(_, t)| t.paused_until_ms <= now)
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        if targets.is_empty() {
            let paused = !lock(&fetcher.targets).is_empty();
            tokio::select! {
                _ = fetcher.changed.notified() => {}
                _ = tokio::time::sleep(settings.backoff), if paused => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let Some(rm) = replicas.upgrade() else { return };
        let address = rm.image().brokers.get(&leader).filter(|b| !b.fenced).map(|b| format!("{}:{}", b.host, b.port));
        let quota = rm.follower_quota.clone();
        let security = rm.inter_broker_security();
        drop(rm);
        let Some(address) = address else {
            // The leader is not (or no longer) live here: the metadata will move these on.
            pause_all(&fetcher, &targets, settings.backoff);
            continue;
        };
        if client.as_ref().is_none_or(|(a, _)| *a != address) {
            let id = format!("strata-replica-fetcher-{node_id}");
            client = Some((address.clone(), KafkaClient::with_security(address, id, security)));
        }
        let Some((_, kafka)) = client.as_ref() else { continue };
        let untruncated: Vec<&(Key, Target)> = targets.iter().filter(|(_, t)| !t.truncated).collect();
        let result = if untruncated.is_empty() {
            fetch(node_id, kafka, &fetcher, &targets, &settings, &quota).await
        } else {
            truncate(node_id, kafka, &fetcher, &untruncated, &settings).await
        };
        if let Err(e) = result {
            tracing::debug!(leader, error = %e, "replica fetch failed; backing off");
            tokio::select! {
                _ = tokio::time::sleep(settings.backoff) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

fn pause_all(fetcher: &LeaderFetcher, targets: &[(Key, Target)], backoff: Duration) {
    let until = now_ms() + backoff.as_millis() as i64;
    let mut current = lock(&fetcher.targets);
    for (key, t) in targets {
        if let Some(c) = current.get_mut(key).filter(|c| c.from == t.from) {
            c.paused_until_ms = until;
        }
    }
}

/// Updates the fetcher's entry for `key` if it still is the one `seen` (same partition
/// object, same epoch): the metadata may have moved it meanwhile.
fn update(fetcher: &LeaderFetcher, key: &Key, seen: &Target, f: impl FnOnce(&mut Target)) {
    if let Some(t) = lock(&fetcher.targets)
        .get_mut(key)
        .filter(|t| t.from == seen.from && Arc::ptr_eq(&t.partition, &seen.partition))
    {
        f(t);
    }
}

/// Where a follower truncates (KIP-279) after asking the leader about `asked` (its own
/// latest epoch, or one the leader named before): `Done(offset)` to truncate to, or
/// `AskAgain(epoch)` when the leader's answer names an epoch this replica does not have.
#[derive(Debug, PartialEq, Eq)]
pub enum TruncationStep {
    Done(i64),
    AskAgain(i32),
}

/// The KIP-279 rule. `leader_answer` is the leader's (epoch, end offset) for the asked
/// epoch (-1s when it has none at or below it); `local_end_for` gives this replica's (largest
/// epoch at or below, its end offset); `local_end` and `high_watermark` are this replica's.
pub fn truncation_step(
    leader_answer: (i32, i64),
    local_end_for: impl Fn(i32) -> (i32, i64),
    local_end: i64,
    high_watermark: i64,
) -> TruncationStep {
    let (leader_epoch, leader_end) = leader_answer;
    if leader_epoch < 0 || leader_end < 0 {
        // The leader has no epoch this old: keep only what was committed.
        return TruncationStep::Done(high_watermark.min(local_end));
    }
    let (local_epoch, local_epoch_end) = local_end_for(leader_epoch);
    if local_epoch == leader_epoch {
        TruncationStep::Done(leader_end.min(local_epoch_end).min(local_end))
    } else if local_epoch < 0 {
        TruncationStep::Done(high_watermark.min(local_end).min(leader_end))
    } else {
        // This replica has no `leader_epoch`: its records from there on are from epochs the
        // leader never had; ask where the older one it does have ends.
        TruncationStep::AskAgain(local_epoch)
    }
}

/// Truncates each partition that starts a new epoch (see the module docs).
async fn truncate(
    node_id: i32,
    client: &KafkaClient,
    fetcher: &LeaderFetcher,
    targets: &[&(Key, Target)],
    settings: &FetchSettings,
) -> Result<(), String> {
    // What each partition asks next: its latest epoch first.
    let mut asking: Vec<(&Key, &Target, i32)> = Vec::new();
    for (key, t) in targets {
        match t.partition.latest_epoch() {
            Some(epoch) => asking.push((key, t, epoch)),
            None => {
                // An empty log, or records without epochs: nothing the leader can place. Keep
                // only what this replica knows was committed.
                let p = t.partition.clone();
                let hw = p.high_watermark();
                let from = t.from;
                blocking(move || p.truncate_to(hw, from)).await?;
                update(fetcher, key, t, |t| t.truncated = true);
            }
        }
    }
    for _round in 0..64 {
        if asking.is_empty() {
            break;
        }
        let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
        for (key, t, epoch) in &asking {
            let part = OffsetForLeaderPartition::default()
                .with_partition(key.1)
                .with_current_leader_epoch(t.from.leader_epoch)
                .with_leader_epoch(*epoch);
            match topics.iter_mut().find(|x| x.topic.as_str() == key.0) {
                Some(x) => x.partitions.push(part),
                None => topics.push(
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(key.0.clone())))
                        .with_partitions(vec![part]),
                ),
            }
        }
        let req = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(node_id)).with_topics(topics);
        let resp = client.call_within(3, &req, settings.socket_timeout).await?;
        let mut next = Vec::new();
        for (key, t, epoch) in asking {
            let answer = resp
                .topics
                .iter()
                .filter(|x| x.topic.as_str() == key.0)
                .flat_map(|x| x.partitions.iter())
                .find(|p| p.partition == key.1);
            let Some(answer) = answer else { continue };
            if let Some(e) = answer.error_code.err() {
                tracing::debug!(topic = %key.0, partition = key.1, error = ?e, "OffsetForLeaderEpoch refused; retrying later");
                update(fetcher, key, t, |t| t.paused_until_ms = now_ms() + settings.backoff.as_millis() as i64);
                continue;
            }
            let p = t.partition.clone();
            let step = truncation_step(
                (answer.leader_epoch, answer.end_offset),
                |e| p.end_offset_for_epoch(e).unwrap_or((-1, -1)),
                p.log_end_offset(),
                p.high_watermark(),
            );
            match step {
                TruncationStep::Done(offset) => {
                    let before = p.log_end_offset();
                    let part = p.clone();
                    let from = t.from;
                    blocking(move || part.truncate_to(offset, from)).await?;
                    if offset < before {
                        tracing::info!(topic = %key.0, partition = key.1, asked_epoch = epoch,
                            leader_epoch = answer.leader_epoch, leader_end_offset = answer.end_offset,
                            from = before, to = offset, "follower truncated what the leader does not have");
                    }
                    update(fetcher, key, t, |t| t.truncated = true);
                }
                TruncationStep::AskAgain(older) => next.push((key, t, older)),
            }
        }
        asking = next;
    }
    Ok(())
}

/// One fetch from the leader for every partition ready to fetch, and what it returned.
async fn fetch(
    node_id: i32,
    client: &KafkaClient,
    fetcher: &LeaderFetcher,
    targets: &[(Key, Target)],
    settings: &FetchSettings,
    quota: &Arc<ReplicationQuota>,
) -> Result<(), String> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    let now = now_ms();
    let mut throttled = Vec::new();
    for (key, t) in targets {
        // KIP-73: a throttled partition outside the ISR waits while this follower's
        // replication rate is over `follower.replication.throttled.rate`.
        let throttle = t.partition.replication_throttle(false, node_id, node_id);
        if throttle.is_some() {
            throttled.push(key.clone());
        }
        if throttle == Some(false) && quota.exceeded(now) {
            continue;
        }
        let part = FetchPartition::default()
            .with_partition(key.1)
            .with_current_leader_epoch(t.from.leader_epoch)
            .with_fetch_offset(t.partition.log_end_offset())
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(t.partition.log_start_offset())
            .with_partition_max_bytes(settings.max_bytes);
        match topics.iter_mut().find(|x| x.topic.as_str() == key.0) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(key.0.clone())))
                    .with_partitions(vec![part]),
            ),
        }
    }
    if topics.is_empty() {
        // Everything is throttled: wait for the rate to come down.
        tokio::time::sleep(settings.backoff.min(Duration::from_millis(super::quota::WINDOW_MS as u64))).await;
        return Ok(());
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(node_id))
        .with_max_wait_ms(settings.wait_max_ms)
        .with_min_bytes(settings.min_bytes)
        .with_max_bytes(settings.response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let timeout = settings.socket_timeout + Duration::from_millis(settings.wait_max_ms.max(0) as u64);
    let resp = client.call_within(12, &req, timeout).await?;
    if let Some(e) = resp.error_code.err() {
        return Err(format!("fetch refused: {e:?}"));
    }
    // Appends wait on the disk: all of this response's in one blocking task.
    let mut work: Vec<(Key, Target, Bytes, i64, i64)> = Vec::new();
    for topic in &resp.responses {
        for pd in &topic.partitions {
            let key = (topic.topic.to_string(), pd.partition_index);
            let Some((_, t)) = targets.iter().find(|(k, _)| *k == key) else { continue };
            match pd.error_code.err() {
                None => {
                    let records = pd.records.clone().unwrap_or_default();
                    if throttled.contains(&key) {
                        quota.record(records.len() as u64, now_ms());
                    }
                    work.push((key, t.clone(), records, pd.high_watermark, pd.log_start_offset))
                }
                Some(ResponseError::OffsetOutOfRange) => {
                    let p = t.partition.clone();
                    let leader_start = pd.log_start_offset;
                    if leader_start > p.log_end_offset() {
                        tracing::info!(topic = %key.0, partition = key.1, leader_log_start = leader_start,
                            "the leader's log starts after this replica's end: starting over there");
                        let from = t.from;
                        blocking(move || p.reset_to(leader_start, from)).await?;
                    } else {
                        update(fetcher, &key, t, |t| t.truncated = false);
                    }
                }
                Some(e) => {
                    tracing::debug!(topic = %key.0, partition = key.1, error = ?e, "replica fetch refused for the partition");
                    update(fetcher, &key, t, |t| t.paused_until_ms = now_ms() + settings.backoff.as_millis() as i64);
                }
            }
        }
    }
    if work.is_empty() {
        return Ok(());
    }
    let failed = blocking(move || {
        let mut failed = Vec::new();
        for (key, t, records, hw, log_start) in work {
            let result = (|| {
                if !records.is_empty() {
                    t.partition.append_as_follower(&records, t.from, now_ms())?;
                }
                if log_start > t.partition.log_start_offset() && log_start <= t.partition.log_end_offset() {
                    t.partition.advance_log_start(log_start)?;
                }
                t.partition.set_follower_high_watermark(hw, t.from);
                Ok::<(), crate::BrokerError>(())
            })();
            if let Err(e) = result {
                if !matches!(e, crate::BrokerError::ShuttingDown) {
                    tracing::warn!(topic = %key.0, partition = key.1, error = %e, "appending fetched records failed");
                }
                failed.push((key, t));
            }
        }
        Ok(failed)
    })
    .await?;
    for (key, t) in failed {
        update(fetcher, &key, &t, |t| {
            t.truncated = false;
            t.paused_until_ms = now_ms() + settings.backoff.as_millis() as i64;
        });
    }
    Ok(())
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::BrokerError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("blocking task failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Local epochs (epoch, start): 1@0, 3@10, 4@20; log end 30; HW 15.
    fn local(epoch: i32) -> (i32, i64) {
        let epochs = [(1, 0i64), (3, 10), (4, 20)];
        let end = 30;
        match epochs.iter().rposition(|(e, _)| *e <= epoch) {
            None => (-1, -1),
            Some(i) => (epochs[i].0, epochs.get(i + 1).map_or(end, |(_, s)| *s)),
        }
    }

    #[test]
    fn kip_279_truncation() {
        // The leader has epoch 4 up to 25: keep 25.
        assert_eq!(truncation_step((4, 25), local, 30, 15), TruncationStep::Done(25));
        // The leader has 4 further than this replica: nothing to cut.
        assert_eq!(truncation_step((4, 40), local, 30, 15), TruncationStep::Done(30));
        // The leader never had 4; its 3 ended at 18, ours at 20: cut to 18.
        assert_eq!(truncation_step((3, 18), local, 30, 15), TruncationStep::Done(18));
        // The leader's largest epoch <= 4 is 2, which this replica never had: ask about 1.
        assert_eq!(truncation_step((2, 12), local, 30, 15), TruncationStep::AskAgain(1));
        assert_eq!(truncation_step((1, 8), local, 30, 15), TruncationStep::Done(8));
        // No epoch at or below the asked one at the leader: keep what was committed.
        assert_eq!(truncation_step((-1, -1), local, 30, 15), TruncationStep::Done(15));
    }
}
