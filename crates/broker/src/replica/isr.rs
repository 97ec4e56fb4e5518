//! Sends this broker's ISR changes to the controller (Kafka's `AlterPartitionManager`): a
//! leader proposes expansions as followers catch up and shrinks as they fall behind
//! ([`super::replication`]); this task batches what is waiting into one AlterPartition
//! (KIP-497) at a time, each member named with the broker epoch the metadata gives it
//! (KIP-903), and hands each partition its outcome. A change the controller could not be
//! asked about is sent again after `replica.fetch.backoff.ms`-like pauses.

use std::sync::Arc;
use std::time::Duration;

use strata_metadata::channel::{ControllerChannel, IsrChange};
use tokio::sync::Notify;

use crate::replica::ReplicaManager;

/// How often waiting changes are looked for without a wake-up (retries of unanswered ones).
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Runs until `shutdown`: sends ISR changes when `wake` fires (a change was proposed) and
/// every [`RETRY_EVERY`].
pub async fn run_isr_sender(
    replicas: Arc<ReplicaManager>,
    controller: Arc<dyn ControllerChannel>,
    wake: Arc<Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(RETRY_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let image = replicas.image();
        let node_id = replicas.node_id();
        let Some(me) = image.brokers.get(&node_id) else { continue };
        let proposals: Vec<_> =
            replicas.all_partitions().into_iter().filter_map(|p| p.take_isr_proposal().map(|x| (p, x))).collect();
        if proposals.is_empty() {
            continue;
        }
        let changes: Vec<IsrChange> = proposals
            .iter()
            .map(|(p, x)| IsrChange {
                topic_id: p.topic_id,
                partition: p.index,
                leader_epoch: x.leader_epoch,
                partition_epoch: x.partition_epoch,
                new_isr: x
                    .isr
                    .iter()
                    .map(|id| match x.joining {
                        Some((joining, epoch)) if joining == *id => (*id, epoch),
                        _ => (*id, image.brokers.get(id).map_or(-1, |b| b.epoch)),
                    })
                    .collect(),
            })
            .collect();
        match controller.alter_partition(node_id, me.epoch, changes).await {
            Ok(outcomes) => {
                for ((p, x), outcome) in proposals.iter().zip(outcomes.iter()) {
                    tracing::info!(topic = %p.topic, partition = p.index, proposed_isr = ?x.isr, ?outcome, "ISR change answered");
                    if matches!(outcome, strata_metadata::channel::IsrOutcome::Altered { .. }) {
                        replicas.count_isr_change(x.joining.is_some());
                    }
                    p.isr_proposal_answered(x, Some(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e.message, code = ?e.error, changes = proposals.len(), "AlterPartition failed; retrying");
                for (p, x) in &proposals {
                    p.isr_proposal_answered(x, None);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}
