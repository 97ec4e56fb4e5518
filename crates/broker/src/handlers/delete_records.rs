//! DeleteRecords: move a partition's log start offset forward.

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use strata_protocol::kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::error::BrokerError;
use crate::Broker;

/// An offset of -1 means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub fn handle(broker: &Arc<Broker>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                    let result = broker.replicas.leader_partition(&t.name, p.partition_index, -1).and_then(|part| {
                        let hw = part.high_watermark();
                        let target = if p.offset == HIGH_WATERMARK { hw } else { p.offset };
                        if target < 0 || target > hw {
                            return Err(BrokerError::OffsetOutOfRange {
                                offset: p.offset,
                                log_start: part.log_start_offset(),
                                log_end: hw,
                            });
                        }
                        part.advance_log_start(target)
                    });
                    match result {
                        Ok(low) => {
                            tracing::info!(topic = %t.name.as_str(), partition = p.partition_index, offset = p.offset,
                                log_start = low, "records deleted");
                            base.with_low_watermark(low)
                        }
                        Err(e) => base.with_error_code(e.code_i16()).with_low_watermark(-1),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
