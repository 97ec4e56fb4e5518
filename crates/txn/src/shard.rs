//! [`TxnCoordinatorShard`]: the transactional ids of one `__transaction_state` partition, and
//! the machinery every API shares — two-phase transitions, replay, markers and timers.
//!
//! # Two-phase transitions (Kafka's `TxnTransitMetadata`)
//! A handler never changes a transactional id: it computes the state after the transition
//! (a [`Transit`]), marks the id *pending* and returns an [`Append`] of the record that says
//! so. The driver appends it to the partition, waits until the ISR has it (the high watermark
//! passes it), and calls [`TxnCoordinatorShard::complete_append`], which applies the transit
//! through the same [`TxnCoordinatorShard::replay`] path a load uses and gives the answer
//! the request was waiting for. While an id is pending, every other request on it answers
//! CONCURRENT_TRANSACTIONS. So what a client was told always matches what a new coordinator
//! loads from the log.
//!
//! # Markers
//! Once a PrepareCommit or PrepareAbort record is committed the decision is final: the shard
//! hands out [`MarkerWork`], the id stays pending until the driver reports every marker
//! written ([`TxnCoordinatorShard::markers_written`]), and the CompleteCommit or CompleteAbort
//! record that follows ends the transaction.

use std::collections::BTreeMap;

use strata_protocol::ResponseError;

use crate::record::{TxnPartitions, TxnRecord, TxnValue};
use crate::state::TxnState;

/// The highest epoch a client is handed (`Short.MAX_VALUE - 1`): the coordinator can always
/// fence it with one more bump.
pub const MAX_CLIENT_EPOCH: i16 = i16::MAX - 1;

/// Whether `epoch` leaves no room for another bump a client could use (Kafka's
/// `isEpochExhausted`): a new producer id is needed instead.
pub fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= MAX_CLIENT_EPOCH
}

/// Settings of the transaction coordinator, with Kafka's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` InitProducerId accepts.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an id idle (no transaction open) this long is removed.
    pub id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_interval_ms: i64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub expire_interval_ms: i64,
    /// The cluster's finalized `transaction.version` (0–2): the transaction version of the
    /// coordinator's own aborts (timeouts, fences), and the value version it writes (0 below
    /// level 1, else 1).
    pub transaction_version: i16,
}

impl Default for TxnConfig {
    fn default() -> Self {
        Self {
            max_timeout_ms: 900_000,
            id_expiration_ms: 604_800_000,
            abort_interval_ms: 10_000,
            expire_interval_ms: 3_600_000,
            transaction_version: 2,
        }
    }
}

impl TxnConfig {
    /// The `TransactionLogValue` version records are written in.
    pub fn value_version(&self) -> i16 {
        if self.transaction_version >= 1 {
            1
        } else {
            0
        }
    }
}

/// Where new producer ids come from (the driver keeps a block leased from the controller).
/// `None` when none is at hand right now: the request answers COORDINATOR_LOAD_IN_PROGRESS and
/// the client retries, as Kafka's allocator does while its next block is in flight.
pub trait ProducerIdSource {
    fn try_next(&mut self) -> Option<i64>;
}

/// Identifies one append the shard waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppendId(pub u64);

/// Records the driver must make durable, then report with
/// [`TxnCoordinatorShard::complete_append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    pub id: AppendId,
    pub records: Vec<TxnRecord>,
}

/// What a handler gives: an answer now, or an append whose completion answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    Done(Result<T, ResponseError>),
    Append(Append),
}

/// A producer id and epoch.
pub type Identity = (i64, i16);

/// The transaction markers of a decided transaction, for the driver to write to each
/// partition's leader (WriteTxnMarkers), stamped with the coordinator epoch that fences a
/// deposed coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerWork {
    pub transactional_id: String,
    pub coordinator_epoch: i32,
    pub producer_id: i64,
    /// The epoch of the PrepareCommit/PrepareAbort record.
    pub producer_epoch: i16,
    pub commit: bool,
    /// The transaction version the decision was made under (0 or 2).
    pub transaction_version: i16,
    pub partitions: TxnPartitions,
}

/// What [`TxnCoordinatorShard::complete_append`] gives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Completed {
    /// The answer to the request that caused the append (the producer id and epoch the
    /// producer uses next), `None` for the coordinator's own appends.
    pub answer: Option<Result<Identity, ResponseError>>,
    /// Markers to write now.
    pub markers: Vec<MarkerWork>,
}

/// The state of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    /// The state as last made durable.
    pub value: TxnValue,
    /// The epoch before the last bump (-1 for none; not persisted, so -1 after a load): an
    /// InitProducerId retried with it gets the current epoch back.
    pub last_producer_epoch: i16,
    /// A transition in flight (see the module docs).
    pub pending: Option<Pending>,
    /// Whether a record of the id was ever made durable: one created by InitProducerId and
    /// whose first append failed is dropped again.
    pub persisted: bool,
}

/// A transition in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// A record is being appended.
    Append(AppendId),
    /// PrepareCommit/PrepareAbort is durable; its markers are being written.
    Markers,
}

impl TxnMetadata {
    /// The producer id and epoch a producer uses after this state: under transactions V2 the
    /// id allocated when the epoch ran out, with epoch 0.
    pub fn next_identity(&self) -> Identity {
        if self.value.next_producer_id >= 0 {
            (self.value.next_producer_id, 0)
        } else {
            (self.value.producer_id, self.value.producer_epoch)
        }
    }
}

/// What a held append does once durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Answer the producer id and epoch to use next.
    Identity,
    /// An epoch fence for InitProducerId: answer CONCURRENT_TRANSACTIONS (the client retries
    /// once the abort completes).
    Fenced,
    /// The coordinator's own transition (timeout abort, Complete*): no answer.
    Internal,
    /// Tombstones of expired ids.
    Expire,
}

/// An append in flight: the transitions it carries (`None` for a tombstone).
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    pub(crate) transits: Vec<(String, Option<Transit>)>,
    pub(crate) then: Then,
}

/// The state of an id after a transition: what is written, plus what is kept in memory only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transit {
    pub(crate) value: TxnValue,
    pub(crate) last_producer_epoch: i16,
}

/// The transaction coordinator of one `__transaction_state` partition. See the module docs.
#[derive(Debug)]
pub struct TxnCoordinatorShard {
    pub(crate) config: TxnConfig,
    /// The leader epoch of the partition when this broker came to lead it; every marker
    /// carries it.
    pub(crate) coordinator_epoch: i32,
    pub(crate) txns: BTreeMap<String, TxnMetadata>,
    pub(crate) in_flight: BTreeMap<AppendId, InFlight>,
    next_append: u64,
    next_abort_check: i64,
    next_expire_check: i64,
}

impl TxnCoordinatorShard {
    /// An empty shard; fill it with [`Self::replay`], then call [`Self::on_loaded`].
    pub fn new(config: TxnConfig, coordinator_epoch: i32) -> Self {
        Self {
            config,
            coordinator_epoch,
            txns: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_append: 1,
            next_abort_check: 0,
            next_expire_check: 0,
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// Sets the cluster's finalized `transaction.version` (it may change at run time).
    pub fn set_transaction_version(&mut self, level: i16) {
        self.config.transaction_version = level;
    }

    pub fn coordinator_epoch(&self) -> i32 {
        self.coordinator_epoch
    }

    /// The state of `transactional_id`, if known.
    pub fn get(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.txns.get(transactional_id)
    }

    /// Every transactional id and its state.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &TxnMetadata)> {
        self.txns.iter()
    }

    /// Applies one record of the partition, as a load does: the last value of an id wins, a
    /// tombstone removes it.
    pub fn replay(&mut self, record: &TxnRecord) {
        match &record.value {
            Some(value) => {
                self.install(&record.transactional_id, Transit { value: value.clone(), last_producer_epoch: -1 })
            }
            None => {
                self.txns.remove(&record.transactional_id);
            }
        }
    }

    /// Every record that rebuilds this shard's durable state (one per id).
    pub fn snapshot_records(&self) -> Vec<TxnRecord> {
        self.txns
            .iter()
            .filter(|(_, m)| m.persisted)
            .map(|(id, m)| TxnRecord { transactional_id: id.clone(), value: Some(m.value.clone()) })
            .collect()
    }

    /// After a load: the markers of every decided transaction, which the previous coordinator
    /// may not have finished. The driver must send them only once its log is committed up to
    /// where the load ended (a new leader's uncommitted tail could still vanish).
    pub fn on_loaded(&mut self) -> Vec<MarkerWork> {
        let epoch = self.coordinator_epoch;
        let mut work = Vec::new();
        for (id, m) in &mut self.txns {
            if matches!(m.value.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                m.pending = Some(Pending::Markers);
                work.push(marker_work(id, &m.value, epoch));
            }
        }
        work
    }

    fn install(&mut self, id: &str, transit: Transit) {
        let entry = self.txns.entry(id.to_string()).or_insert_with(|| TxnMetadata {
            value: transit.value.clone(),
            last_producer_epoch: -1,
            pending: None,
            persisted: true,
        });
        entry.value = transit.value;
        entry.last_producer_epoch = transit.last_producer_epoch;
        entry.pending = None;
        entry.persisted = true;
    }

    /// Marks the ids of `transits` pending and returns the append that carries them.
    pub(crate) fn start_append(&mut self, transits: Vec<(String, Option<Transit>)>, then: Then) -> Append {
        let id = AppendId(self.next_append);
        self.next_append += 1;
        let records = transits
            .iter()
            .map(|(txn, t)| TxnRecord { transactional_id: txn.clone(), value: t.as_ref().map(|t| t.value.clone()) })
            .collect();
        for (txn, _) in &transits {
            if let Some(m) = self.txns.get_mut(txn) {
                m.pending = Some(Pending::Append(id));
            }
        }
        self.in_flight.insert(id, InFlight { transits, then });
        Append { id, records }
    }

    /// Reports the outcome of an append: `Ok` once it is committed (the high watermark passed
    /// it), `Err` with the append's error otherwise. Unknown appends (the shard was reloaded
    /// meanwhile) answer NOT_COORDINATOR.
    ///
    /// Append errors become coordinator errors as in Kafka's `TransactionStateManager`:
    /// UNKNOWN_TOPIC_OR_PARTITION, NOT_ENOUGH_REPLICAS(_AFTER_APPEND) and REQUEST_TIMED_OUT →
    /// COORDINATOR_NOT_AVAILABLE; NOT_LEADER_OR_FOLLOWER and KAFKA_STORAGE_ERROR →
    /// NOT_COORDINATOR; MESSAGE_TOO_LARGE and RECORD_LIST_TOO_LARGE → UNKNOWN_SERVER_ERROR.
    pub fn complete_append(&mut self, id: AppendId, outcome: Result<(), ResponseError>) -> Completed {
        let Some(flight) = self.in_flight.remove(&id) else {
            return Completed { answer: Some(Err(ResponseError::NotCoordinator)), markers: Vec::new() };
        };
        let mine = |m: &TxnMetadata| m.pending == Some(Pending::Append(id));
        let error = match outcome {
            Ok(()) => None,
            Err(e) => Some(append_error(e)),
        };
        let mut done = Completed::default();
        let mut answer: Option<Result<Identity, ResponseError>> = None;
        for (txn, transit) in flight.transits {
            let Some(m) = self.txns.get_mut(&txn) else {
                answer = Some(Err(ResponseError::NotCoordinator));
                continue;
            };
            if !mine(m) {
                answer = Some(Err(ResponseError::NotCoordinator));
                continue;
            }
            if let Some(e) = error {
                // A Complete* record that did not commit: the transaction waits for its
                // markers again, for the driver to retry `markers_written`.
                let completing = transit
                    .as_ref()
                    .is_some_and(|t| matches!(t.value.state, TxnState::CompleteCommit | TxnState::CompleteAbort));
                m.pending = if completing { Some(Pending::Markers) } else { None };
                if !m.persisted {
                    self.txns.remove(&txn);
                }
                answer = Some(Err(e));
                continue;
            }
            match transit {
                None => {
                    // An expired id: gone once its tombstone is durable.
                    self.txns.remove(&txn);
                }
                Some(t) => {
                    let decided = matches!(t.value.state, TxnState::PrepareCommit | TxnState::PrepareAbort);
                    self.install(&txn, t);
                    let m = self.txns.get_mut(&txn).expect("installed above");
                    if decided {
                        m.pending = Some(Pending::Markers);
                        done.markers.push(marker_work(&txn, &m.value, self.coordinator_epoch));
                    }
                    if answer.is_none() {
                        answer = Some(Ok(m.next_identity()));
                    }
                }
            }
        }
        done.answer = match flight.then {
            Then::Identity => answer,
            Then::Fenced => Some(match answer {
                Some(Ok(_)) => Err(ResponseError::ConcurrentTransactions),
                Some(Err(e)) => Err(e),
                None => Err(ResponseError::NotCoordinator),
            }),
            Then::Internal | Then::Expire => None,
        };
        done
    }

    /// Every marker of `transactional_id`'s decided transaction is written: returns the append
    /// of the CompleteCommit/CompleteAbort record (under transactions V2 with the producer id
    /// allocated when the epoch ran out), or `None` if the id is no longer waiting for its
    /// markers under `coordinator_epoch` (the shard was reloaded: the new load resends them).
    /// If that append fails, the id waits for its markers again and the driver calls this
    /// again later.
    pub fn markers_written(&mut self, transactional_id: &str, coordinator_epoch: i32, now_ms: i64) -> Option<Append> {
        if coordinator_epoch != self.coordinator_epoch {
            return None;
        }
        let m = self.txns.get(transactional_id)?;
        if m.pending != Some(Pending::Markers) {
            return None;
        }
        let state = match m.value.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return None,
        };
        let mut value = TxnValue { state, partitions: TxnPartitions::new(), last_update_ms: now_ms, ..m.value.clone() };
        if value.next_producer_id >= 0 {
            value.prev_producer_id = value.producer_id;
            value.producer_id = value.next_producer_id;
            value.next_producer_id = -1;
            value.producer_epoch = 0;
        }
        let transit = Transit { value, last_producer_epoch: m.last_producer_epoch };
        Some(self.start_append(vec![(transactional_id.to_string(), Some(transit))], Then::Internal))
    }

    /// A CompleteCommit/CompleteAbort append failed: the id goes back to waiting for its
    /// markers, so that [`Self::markers_written`] can be called again.
    pub fn complete_failed(&mut self, transactional_id: &str, id: AppendId) {
        self.in_flight.remove(&id);
        if let Some(m) = self.txns.get_mut(transactional_id) {
            if m.pending == Some(Pending::Append(id)) {
                m.pending = Some(Pending::Markers);
            }
        }
    }

    /// When [`Self::tick`] is next due (ms since the epoch).
    pub fn next_deadline(&self) -> i64 {
        self.next_abort_check.min(self.next_expire_check)
    }

    /// Runs the timers that are due: aborts transactions open longer than their timeout
    /// (Kafka's `abortTimedOutTransactions`: an epoch fence, then the abort) and removes
    /// transactional ids idle longer than `transactional.id.expiration.ms` (a tombstone each).
    /// Ids with a transition in flight are skipped until the next run.
    pub fn tick(&mut self, now_ms: i64, ids: &mut dyn ProducerIdSource) -> Vec<Append> {
        let mut appends = Vec::new();
        if now_ms >= self.next_abort_check {
            self.next_abort_check = now_ms + self.config.abort_interval_ms.max(1);
            let timed_out: Vec<String> = self
                .txns
                .iter()
                .filter(|(_, m)| {
                    m.pending.is_none()
                        && m.value.state == TxnState::Ongoing
                        && m.value.start_ms.saturating_add(i64::from(m.value.txn_timeout_ms)) < now_ms
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in timed_out {
                match self.fence_and_abort(&id, now_ms, ids) {
                    Ok(transit) => appends.push(self.start_append(vec![(id, Some(transit))], Then::Internal)),
                    Err(e) => {
                        tracing::warn!(transactional_id = %id, error = ?e, "cannot abort a timed-out transaction yet")
                    }
                }
            }
        }
        if now_ms >= self.next_expire_check {
            self.next_expire_check = now_ms + self.config.expire_interval_ms.max(1);
            let expired: Vec<(String, Option<Transit>)> = self
                .txns
                .iter()
                .filter(|(_, m)| {
                    m.pending.is_none()
                        && m.persisted
                        && matches!(m.value.state, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort)
                        && m.value.last_update_ms <= now_ms - self.config.id_expiration_ms
                })
                .map(|(id, _)| (id.clone(), None))
                .collect();
            if !expired.is_empty() {
                appends.push(self.start_append(expired, Then::Expire));
            }
        }
        appends
    }

    /// The PrepareAbort of an open transaction whose producer is fenced (by a new
    /// InitProducerId, or by the timeout): one epoch higher than the producer's, so its late
    /// requests are refused, and under transactions V2 with a new producer id when that uses
    /// up the epochs.
    pub(crate) fn fence_and_abort(
        &self,
        id: &str,
        now_ms: i64,
        ids: &mut dyn ProducerIdSource,
    ) -> Result<Transit, ResponseError> {
        let m = self.txns.get(id).ok_or(ResponseError::InvalidProducerIdMapping)?;
        let tv2 = self.config.transaction_version >= 2;
        // The fence (Kafka's `prepareFenceProducerEpoch`)...
        let fenced = m.value.producer_epoch.saturating_add(1);
        let mut value = TxnValue {
            state: TxnState::PrepareAbort,
            producer_epoch: fenced,
            last_update_ms: now_ms,
            client_transaction_version: if tv2 { 2 } else { 0 },
            ..m.value.clone()
        };
        // ...then, under transactions V2, the abort's own bump on top (so a zombie's late
        // EndTxn at its old epoch never looks like a retry), with a new producer id for later
        // when that uses the epochs up; an abort at the last epoch is not bumped again.
        if tv2 {
            if epoch_exhausted(fenced) && value.next_producer_id < 0 {
                value.next_producer_id = ids.try_next().ok_or(ResponseError::CoordinatorLoadInProgress)?;
            }
            if fenced < i16::MAX {
                value.producer_epoch = fenced + 1;
            }
        }
        Ok(Transit { value, last_producer_epoch: -1 })
    }

    /// The metadata of `id`, or the error a request on an unknown id gets.
    pub(crate) fn known(&self, id: &str) -> Result<&TxnMetadata, ResponseError> {
        if id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        self.txns.get(id).ok_or(ResponseError::InvalidProducerIdMapping)
    }
}

fn marker_work(id: &str, value: &TxnValue, coordinator_epoch: i32) -> MarkerWork {
    MarkerWork {
        transactional_id: id.to_string(),
        coordinator_epoch,
        producer_id: value.producer_id,
        producer_epoch: value.producer_epoch,
        commit: value.state == TxnState::PrepareCommit,
        transaction_version: value.client_transaction_version,
        partitions: value.partitions.clone(),
    }
}

/// See [`TxnCoordinatorShard::complete_append`].
fn append_error(e: ResponseError) -> ResponseError {
    use ResponseError::*;
    match e {
        UnknownTopicOrPartition | NotEnoughReplicas | NotEnoughReplicasAfterAppend | RequestTimedOut => {
            CoordinatorNotAvailable
        }
        NotLeaderOrFollower | KafkaStorageError => NotCoordinator,
        MessageTooLarge | RecordListTooLarge => UnknownServerError,
        other => other,
    }
}

/// A set of partitions as the log stores them.
pub(crate) fn partitions_of(list: &[(String, i32)]) -> TxnPartitions {
    let mut out = TxnPartitions::new();
    for (t, p) in list {
        out.entry(t.clone()).or_default().insert(*p);
    }
    out
}

/// Whether every partition of `list` is in `set`.
pub(crate) fn contains_all(set: &TxnPartitions, list: &[(String, i32)]) -> bool {
    list.iter().all(|(t, p)| set.get(t).is_some_and(|s| s.contains(p)))
}
