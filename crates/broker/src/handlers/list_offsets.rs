//! ListOffsets: earliest, latest, max timestamp, or the first offset at or
//! after a timestamp.

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use strata_protocol::kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use strata_protocol::records::{first_at_or_after, max_timestamp_record};

use crate::error::BrokerError;
use crate::replica::Partition;
use crate::Broker;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const EARLIEST_PENDING_UPLOAD: i64 = -5;

pub fn handle(broker: &Arc<Broker>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    match broker.replicas.get(&t.name, p.partition_index).and_then(|part| lookup(&part, p.timestamp)) {
                        Ok((offset, timestamp)) => base
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
                        Err(e) => {
                            base.with_error_code(e.code_i16()).with_offset(-1).with_timestamp(-1).with_leader_epoch(-1)
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp) for one partition; (-1, -1) when no record matches.
fn lookup(p: &Partition, timestamp: i64) -> Result<(i64, i64), BrokerError> {
    let corrupt =
        |e: strata_protocol::records::RecordsError| BrokerError::Storage(format!("reading a stored batch: {e}"));
    match timestamp {
        LATEST => Ok((p.high_watermark(), -1)),
        EARLIEST | EARLIEST_LOCAL => Ok((p.log_start_offset(), -1)),
        // No tiered storage: nothing is pending upload.
        EARLIEST_PENDING_UPLOAD => Ok((-1, -1)),
        MAX_TIMESTAMP => {
            let batch = p.with_log(|log| log.max_timestamp_batch().map_err(BrokerError::from))?;
            match batch {
                Some(b) => Ok(max_timestamp_record(&b).map_err(corrupt)?.map_or((-1, -1), |r| (r.offset, r.timestamp))),
                None => Ok((-1, -1)),
            }
        }
        ts if ts < 0 => Err(BrokerError::InvalidRequest(format!("unknown special timestamp {ts}"))),
        ts => {
            let batch = p.with_log(|log| log.find_batch_by_timestamp(ts).map_err(BrokerError::from))?;
            match batch {
                Some(b) => {
                    Ok(first_at_or_after(&b, ts).map_err(corrupt)?.map_or((-1, -1), |r| (r.offset, r.timestamp)))
                }
                None => Ok((-1, -1)),
            }
        }
    }
}
