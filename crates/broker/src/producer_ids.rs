//! Producer ids for InitProducerId, leased from the controller in blocks so
//! that most calls need no metadata write. Ids of a block not used before a
//! restart are skipped, never reused.

use std::ops::Range;

use strata_metadata::channel::{ApiError, ControllerChannel};
use tokio::sync::Mutex;

/// Ids leased per controller round trip.
pub const BLOCK_SIZE: i64 = 1000;

pub struct ProducerIdManager {
    broker_id: i32,
    block: Mutex<Range<i64>>,
}

impl ProducerIdManager {
    pub fn new(broker_id: i32) -> Self {
        Self { broker_id, block: Mutex::new(0..0) }
    }

    /// A producer id never handed out before.
    pub async fn next(&self, controller: &dyn ControllerChannel) -> Result<i64, ApiError> {
        let mut block = self.block.lock().await;
        if block.is_empty() {
            *block = controller.allocate_producer_ids(self.broker_id, BLOCK_SIZE).await?;
        }
        let id = block.start;
        block.start += 1;
        Ok(id)
    }
}
