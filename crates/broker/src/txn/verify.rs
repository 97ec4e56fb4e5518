//! KIP-890 part 1 on the partition leader (Kafka's `AddPartitionsToTxnManager`): before a
//! transactional batch may open a transaction in a partition, the leader asks the producer's
//! transaction coordinator whether the partition is in the transaction (AddPartitionsToTxn
//! v4+ with `verify_only`), or, under transactions V2 (Produce v12+, TxnOffsetCommit v5), has
//! the coordinator add it. A write that arrives after its transaction ended (a hanging
//! transaction) is refused instead of holding the partition's last stable offset for ever.
//!
//! The coordinator is called in-process when this broker is it, else over the inter-broker
//! listener.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use strata_client::KafkaClient;
use strata_protocol::kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use strata_protocol::kafka_protocol::messages::{AddPartitionsToTxnRequest, ProducerId, TransactionalId};
use strata_protocol::kafka_protocol::protocol::StrBytes;
use strata_protocol::ResponseError;

use super::{TxnCoordinator, TRANSACTION_STATE_TOPIC};
use crate::replica::{Partition, Verification};

/// Under transactions V2 the previous transaction's markers are usually still being written
/// when the producer starts the next one: the add is retried this often (Kafka's
/// `add.partitions.to.txn.retry.backoff.ms`) for this long (`add.partitions.to.txn.max.timeout.ms`).
const ADD_RETRY_BACKOFF: Duration = Duration::from_millis(20);
const ADD_RETRY_FOR: Duration = Duration::from_millis(100);

/// How long the coordinator may take to answer.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

impl TxnCoordinator {
    /// Whether each of `partitions` is in the open transaction of `transactional_id` (producer
    /// `producer_id` at `producer_epoch`), or, with `add`, adds them to it (transactions V2).
    /// One result per partition, the coordinator's answer: TRANSACTION_ABORTABLE for a
    /// partition not in the transaction, PRODUCER_FENCED, INVALID_PRODUCER_ID_MAPPING,
    /// CONCURRENT_TRANSACTIONS, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
    /// COORDINATOR_NOT_AVAILABLE, NETWORK_EXCEPTION (the coordinator did not answer).
    ///
    /// Each partition first gets its verification guard
    /// ([`crate::replica::Partition::prepare_verification`]); one whose producer already has a
    /// transaction open there needs none (`Ok(Verification::Unverified)`). Under transactions
    /// V2 a CONCURRENT_TRANSACTIONS answer (the previous transaction's markers are still being
    /// written) is retried for a moment with fresh guards: the marker that lands meanwhile
    /// drops the old guard, and rightly so.
    pub async fn verify(
        self: &Arc<Self>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(Arc<Partition>, String, i32)],
        add: bool,
    ) -> Vec<Result<Verification, ResponseError>> {
        let started = tokio::time::Instant::now();
        let mut rounds = 0;
        loop {
            rounds += 1;
            let mut out: Vec<Result<Verification, ResponseError>> = Vec::with_capacity(partitions.len());
            let mut asked: Vec<(usize, u64)> = Vec::new();
            for (i, (partition, _, _)) in partitions.iter().enumerate() {
                match partition.prepare_verification(producer_id, producer_epoch) {
                    Ok(Some(guard)) => {
                        asked.push((i, guard));
                        out.push(Ok(Verification::Unverified));
                    }
                    // A transaction is open here: nothing to verify. Not the leader: the
                    // append answers that.
                    Ok(None) | Err(_) => out.push(Ok(Verification::Unverified)),
                }
            }
            if asked.is_empty() {
                return out;
            }
            let names: Vec<(String, i32)> =
                asked.iter().map(|(i, _)| (partitions[*i].1.clone(), partitions[*i].2)).collect();
            let results = self.verify_once(transactional_id, producer_id, producer_epoch, &names, add).await;
            let concurrent = results.contains(&Err(ResponseError::ConcurrentTransactions));
            if add && concurrent && started.elapsed() < ADD_RETRY_FOR {
                tokio::time::sleep(ADD_RETRY_BACKOFF).await;
                continue;
            }
            // A marker of the producer that landed while the coordinator answered dropped the
            // guard (typically the previous transaction's, which the coordinator waited for
            // before adding the partition): ask again with a fresh guard. A marker of this
            // very transaction makes the coordinator refuse the second time.
            let stale = asked
                .iter()
                .zip(&results)
                .any(|((i, guard), r)| r.is_ok() && !partitions[*i].0.has_guard(producer_id, *guard));
            if stale && rounds < 4 {
                continue;
            }
            for ((i, guard), r) in asked.into_iter().zip(results) {
                out[i] = r.map(|()| Verification::Verified(guard));
            }
            return out;
        }
    }

    async fn verify_once(
        self: &Arc<Self>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        add: bool,
    ) -> Vec<Result<(), ResponseError>> {
        let all = |e: ResponseError| partitions.iter().map(|_| Err(e)).collect::<Vec<_>>();
        match self.lookup(transactional_id) {
            Ok(_) => {
                let id = transactional_id.to_string();
                if add {
                    let r = self
                        .run(&id, |shard, _, now| {
                            shard.add_partitions(&id, producer_id, producer_epoch, partitions, 2, now)
                        })
                        .await
                        .map(|_| ());
                    partitions.iter().map(|_| r).collect()
                } else {
                    match self.read(&id, |shard| shard.verify_partitions(&id, producer_id, producer_epoch, partitions))
                    {
                        Ok(flags) => flags
                            .into_iter()
                            .map(|ok| if ok { Ok(()) } else { Err(ResponseError::TransactionAbortable) })
                            .collect(),
                        Err(e) => all(e),
                    }
                }
            }
            Err(ResponseError::NotCoordinator) => {
                self.verify_remote(transactional_id, producer_id, producer_epoch, partitions, add).await
            }
            Err(e) => all(e),
        }
    }

    /// AddPartitionsToTxn v5 to the broker that coordinates `transactional_id`.
    async fn verify_remote(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        add: bool,
    ) -> Vec<Result<(), ResponseError>> {
        let all = |e: ResponseError| partitions.iter().map(|_| Err(e)).collect::<Vec<_>>();
        let image = self.replicas.image();
        let Some(index) = self.partition_for(&image, transactional_id) else {
            return all(ResponseError::CoordinatorNotAvailable);
        };
        let leader = image.partition(TRANSACTION_STATE_TOPIC, index).map_or(-1, |p| p.leader);
        let Some(address) = image.brokers.get(&leader).filter(|b| !b.fenced).map(|b| format!("{}:{}", b.host, b.port))
        else {
            return all(ResponseError::CoordinatorNotAvailable);
        };
        let mut topics: Vec<(String, Vec<i32>)> = Vec::new();
        for (t, p) in partitions {
            match topics.iter_mut().find(|(name, _)| name == t) {
                Some((_, ps)) => ps.push(*p),
                None => topics.push((t.clone(), vec![*p])),
            }
        }
        let transaction = AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(transactional_id.to_string())))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_verify_only(!add)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(crate::handlers::topic_name(&t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let request = AddPartitionsToTxnRequest::default().with_transactions(vec![transaction]);
        let client = self.verifiers.client(leader, address);
        let response = match call(&client, &request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(coordinator = leader, error = %e, "transaction verification failed");
                return all(ResponseError::NetworkException);
            }
        };
        if let Some(e) = ResponseError::try_from_code(response.error_code) {
            // The coordinator does not take the request from this broker.
            let e = if e == ResponseError::ClusterAuthorizationFailed { ResponseError::InvalidTxnState } else { e };
            return all(e);
        }
        let mut codes: HashMap<(String, i32), i16> = HashMap::new();
        for t in response.results_by_transaction {
            for topic in t.topic_results {
                for p in topic.results_by_partition {
                    codes.insert((topic.name.0.to_string(), p.partition_index), p.partition_error_code);
                }
            }
        }
        partitions
            .iter()
            .map(|k| match codes.get(k).map(|c| ResponseError::try_from_code(*c)) {
                Some(None) => Ok(()),
                Some(Some(e)) => Err(e),
                None => Err(ResponseError::NetworkException),
            })
            .collect()
    }
}

async fn call(
    client: &KafkaClient,
    request: &AddPartitionsToTxnRequest,
) -> Result<strata_protocol::kafka_protocol::messages::AddPartitionsToTxnResponse, String> {
    client.call_within(5, request, VERIFY_TIMEOUT).await
}
