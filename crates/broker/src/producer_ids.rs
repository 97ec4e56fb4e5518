//! Producer ids for InitProducerId, leased from the controller in blocks so
//! that most calls need no metadata write. Ids of a block not used before a
//! restart are skipped, never reused.

use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use strata_metadata::channel::{ApiError, ControllerChannel};

/// Ids leased per controller round trip.
pub const BLOCK_SIZE: i64 = 1000;

/// The block of ids this broker hands out. Shared by the idempotent path (InitProducerId
/// without a transactional id) and the transaction coordinator, which takes ids without
/// waiting ([`Self::try_next`]) after making sure some are at hand ([`Self::ensure`]).
pub struct ProducerIdManager {
    broker_id: i32,
    block: Mutex<Range<i64>>,
    /// One lease from the controller at a time.
    leasing: tokio::sync::Mutex<()>,
}

impl ProducerIdManager {
    pub fn new(broker_id: i32) -> Self {
        Self { broker_id, block: Mutex::new(0..0), leasing: tokio::sync::Mutex::new(()) }
    }

    /// A producer id never handed out before.
    pub async fn next(&self, controller: &dyn ControllerChannel) -> Result<i64, ApiError> {
        loop {
            if let Some(id) = self.try_next() {
                return Ok(id);
            }
            self.ensure(controller).await?;
        }
    }

    /// An id from the block at hand, if any is left.
    pub fn try_next(&self) -> Option<i64> {
        let mut block = self.block.lock().unwrap_or_else(PoisonError::into_inner);
        if block.is_empty() {
            return None;
        }
        let id = block.start;
        block.start += 1;
        Some(id)
    }

    /// Leases a new block from the controller if fewer than 10 % of a block are left (Kafka's
    /// `RPCProducerIdManager` prefetches at 90 %); the rest of the old block is skipped.
    pub async fn ensure(&self, controller: &dyn ControllerChannel) -> Result<(), ApiError> {
        let low = || {
            let block = self.block.lock().unwrap_or_else(PoisonError::into_inner);
            block.end - block.start < BLOCK_SIZE / 10
        };
        if !low() {
            return Ok(());
        }
        let _one = self.leasing.lock().await;
        if !low() {
            return Ok(());
        }
        let fresh = controller.allocate_producer_ids(self.broker_id, BLOCK_SIZE).await?;
        let mut block = self.block.lock().unwrap_or_else(PoisonError::into_inner);
        if block.end < fresh.end {
            *block = fresh;
        }
        Ok(())
    }
}

/// The manager as the transaction coordinator's source of ids.
impl strata_txn::ProducerIdSource for &ProducerIdManager {
    fn try_next(&mut self) -> Option<i64> {
        ProducerIdManager::try_next(self)
    }
}
