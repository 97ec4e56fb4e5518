//! Partition leaders and ListOffsets, shared by the group commands (log-end offsets, resets)
//! and the consumer (start offsets).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::conn::Cluster;
use crate::error::CliError;

/// A topic and partition.
pub type Tp = (String, i32);

/// Kafka's ListOffsets timestamps for the log's ends.
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

/// The leader of each partition of `topics`, and each topic's partition count. A topic that
/// does not exist is an error.
pub async fn leaders(
    cluster: &Cluster,
    topics: &[String],
) -> Result<(HashMap<Tp, i32>, BTreeMap<String, i32>), CliError> {
    let md = crate::topic::topics_metadata(cluster, topics).await?;
    let mut leaders = HashMap::new();
    let mut counts = BTreeMap::new();
    for t in &md.topics {
        let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else { continue };
        counts.insert(name.clone(), t.partitions.len() as i32);
        for p in &t.partitions {
            leaders.insert((name.clone(), p.partition_index), p.leader_id.0);
        }
    }
    Ok((leaders, counts))
}

/// The offset for each partition at its timestamp (`LATEST`, `EARLIEST` or milliseconds: the
/// first offset whose record time is at least that, `None` when no record is that recent),
/// asked of each partition's leader; leader changes are retried within the timeout.
pub async fn list_offsets(
    cluster: &Cluster,
    wanted: &BTreeMap<Tp, i64>,
    isolation_level: i8,
) -> Result<BTreeMap<Tp, Option<i64>>, CliError> {
    let mut out = BTreeMap::new();
    let mut pending: BTreeMap<Tp, i64> = wanted.clone();
    let deadline = tokio::time::Instant::now() + cluster.timeout;
    while !pending.is_empty() {
        let topics: Vec<String> =
            pending.keys().map(|(t, _)| t.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let (leaders, _) = leaders(cluster, &topics).await?;
        let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<(i32, i64)>>> = BTreeMap::new();
        for ((t, p), ts) in &pending {
            let leader = leaders
                .get(&(t.clone(), *p))
                .copied()
                .ok_or_else(|| CliError::kafka(3, format!("listing offsets of {t}-{p}"), Some("no such partition")))?;
            by_leader.entry(leader).or_default().entry(t.clone()).or_default().push((*p, *ts));
        }
        let mut retry = Vec::new();
        for (leader, topics) in by_leader {
            if leader < 0 {
                retry.extend(topics.into_iter().flat_map(|(t, ps)| ps.into_iter().map(move |(p, _)| (t.clone(), p))));
                continue;
            }
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(isolation_level)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            ListOffsetsTopic::default().with_name(TopicName(StrBytes::from_string(t))).with_partitions(
                                ps.into_iter()
                                    .map(|(p, ts)| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(p)
                                            .with_current_leader_epoch(-1)
                                            .with_timestamp(ts)
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                );
            let answer = cluster.send_to_broker(leader, &req).await?;
            for t in answer.topics {
                let name = t.name.0.to_string();
                for p in t.partitions {
                    let tp = (name.clone(), p.partition_index);
                    match p.error_code {
                        0 => {
                            pending.remove(&tp);
                            out.insert(tp, (p.offset >= 0).then_some(p.offset));
                        }
                        // Leadership moved or is moving: ask again after a fresh Metadata.
                        5 | 6 | 74 | 75 => retry.push(tp),
                        code => {
                            return Err(CliError::kafka(code, format!("listing offsets of {}-{}", tp.0, tp.1), None))
                        }
                    }
                }
            }
        }
        if !pending.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return Err(CliError::Failed(format!("no leader answered for {retry:?} within {:?}", cluster.timeout)));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(out)
}
