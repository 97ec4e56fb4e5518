//! The transaction coordinator shard through its public API, against
//! `docs/design/transaction-coordinator.md` (sections 1, 2.2, 2.3, 2.5, 3.5, 4.1, 5 and the
//! unit scenarios 1–6 of 7.3).
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::VecDeque;

use strata_protocol::ResponseError as E;
use strata_txn::{
    Append, Completed, Identity, MarkerWork, Pending, ProducerIdSource, Step, TxnConfig, TxnCoordinatorShard,
    TxnPartitions, TxnRecord, TxnState as S, TxnValue,
};

/// Producer ids counting up from `self.0 + 1`.
struct Ids(i64);
impl ProducerIdSource for Ids {
    fn try_next(&mut self) -> Option<i64> {
        self.0 += 1;
        Some(self.0)
    }
}

/// A source with no producer id at hand (the next block is still being leased).
struct NoIds;
impl ProducerIdSource for NoIds {
    fn try_next(&mut self) -> Option<i64> {
        None
    }
}

const TIMEOUT: i32 = 60_000;
const NOW: i64 = 1_000;

fn tv0() -> TxnConfig {
    TxnConfig { transaction_version: 0, ..TxnConfig::default() }
}

fn parts(list: &[(&str, i32)]) -> Vec<(String, i32)> {
    list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

fn set(list: &[(&str, i32)]) -> TxnPartitions {
    let mut out = TxnPartitions::new();
    for (t, p) in list {
        out.entry(t.to_string()).or_default().insert(*p);
    }
    out
}

/// A durable value: producer id `pid`, epoch `epoch`, `state`, partitions, `start_ms`.
fn val(pid: i64, epoch: i16, state: S, partitions: &[(&str, i32)], start_ms: i64) -> TxnValue {
    TxnValue {
        producer_id: pid,
        prev_producer_id: -1,
        next_producer_id: -1,
        producer_epoch: epoch,
        txn_timeout_ms: TIMEOUT,
        state,
        partitions: set(partitions),
        last_update_ms: 0,
        start_ms,
        client_transaction_version: 0,
    }
}

#[track_caller]
fn append<T: std::fmt::Debug>(step: Step<T>) -> Append {
    match step {
        Step::Append(a) => a,
        Step::Done(r) => panic!("expected an append, got {r:?}"),
    }
}

#[track_caller]
fn done<T: std::fmt::Debug>(step: Step<T>) -> Result<T, E> {
    match step {
        Step::Done(r) => r,
        Step::Append(a) => panic!("expected an answer, got append {a:?}"),
    }
}

/// The single value an append writes.
#[track_caller]
fn written(a: &Append) -> TxnValue {
    assert_eq!(a.records.len(), 1, "{a:?}");
    a.records[0].value.clone().expect("not a tombstone")
}

/// A shard of coordinator epoch `epoch` loaded from `log` (replay, as a new leader does).
fn load(config: &TxnConfig, epoch: i32, log: &[TxnRecord]) -> TxnCoordinatorShard {
    let mut s = TxnCoordinatorShard::new(config.clone(), epoch);
    for r in log {
        s.replay(r);
    }
    s
}

/// The append a step started, if any.
fn appended<T>(step: Step<T>) -> Vec<Append> {
    match step {
        Step::Append(a) => vec![a],
        Step::Done(_) => Vec::new(),
    }
}

/// A shard, its id source, and the log of committed records.
struct H {
    s: TxnCoordinatorShard,
    ids: Ids,
    log: Vec<TxnRecord>,
}

impl H {
    fn new(config: TxnConfig) -> H {
        H { s: TxnCoordinatorShard::new(config, 0), ids: Ids(0), log: Vec::new() }
    }

    /// A shard loaded with one record per `(id, value)`; ids start at 100.
    fn with(config: TxnConfig, records: &[(&str, TxnValue)]) -> H {
        let log: Vec<_> = records
            .iter()
            .map(|(id, v)| TxnRecord { transactional_id: id.to_string(), value: Some(v.clone()) })
            .collect();
        H { s: load(&config, 0, &log), ids: Ids(99), log }
    }

    /// Commits `a` (the high watermark passed it).
    fn ok(&mut self, a: Append) -> Completed {
        self.log.extend(a.records.iter().cloned());
        self.s.complete_append(a.id, Ok(()))
    }

    fn init(&mut self, id: &str, expected: Option<Identity>) -> Step<Identity> {
        self.s.init_producer_id(id, TIMEOUT, expected, &mut self.ids, NOW)
    }

    /// InitProducerId without expectation, committed: the identity handed out.
    fn init_ok(&mut self, id: &str) -> Identity {
        let a = append(self.init(id, None));
        self.ok(a).answer.unwrap().unwrap()
    }

    fn add(&mut self, id: &str, who: Identity, list: &[(&str, i32)], now: i64) -> Step<Identity> {
        self.s.add_partitions(id, who.0, who.1, &parts(list), 0, now)
    }

    fn end(&mut self, id: &str, who: Identity, commit: bool, tv2: bool, now: i64) -> Step<Identity> {
        self.s.end_txn(id, who.0, who.1, commit, tv2, &mut self.ids, now)
    }

    /// Writes every marker of `id` and commits the Complete* record.
    fn finish(&mut self, id: &str, now: i64) {
        let epoch = self.s.coordinator_epoch();
        let a = self.s.markers_written(id, epoch, now).expect("waiting for markers");
        assert_eq!(self.ok(a), Completed::default());
    }

    fn v(&self, id: &str) -> TxnValue {
        self.s.get(id).unwrap().value.clone()
    }

    fn pending(&self, id: &str) -> Option<Pending> {
        self.s.get(id).unwrap().pending.clone()
    }
}

// ---- InitProducerId (2.2) ----

#[test]
fn init_new_id_gets_epoch_zero_once_durable_then_bumps() {
    let mut h = H::new(tv0());
    let a = append(h.init("t", None));
    let v = written(&a);
    assert_eq!((v.producer_id, v.producer_epoch, v.state), (1, 0, S::Empty));
    assert_eq!((v.start_ms, v.txn_timeout_ms, v.last_update_ms), (-1, TIMEOUT, NOW));
    assert!(v.partitions.is_empty());
    assert!(!h.s.get("t").unwrap().persisted);
    assert_eq!(h.s.describe("t").err(), Some(E::TransactionalIdNotFound), "never shows a pending state");
    assert_eq!(done(h.init("t", None)), Err(E::ConcurrentTransactions));
    assert_eq!(h.ok(a).answer, Some(Ok((1, 0))));
    assert_eq!((h.s.describe("t").unwrap().value.producer_epoch, h.pending("t")), (0, None));
    assert_eq!(h.init_ok("t"), (1, 1), "a known id bumps its epoch and keeps its producer id");
    assert_eq!(h.init_ok("t"), (1, 2));
}

#[test]
fn init_with_expected_pair_bumps_when_valid_and_fences_otherwise() {
    let mut h = H::new(tv0());
    let id = h.init_ok("t");
    assert_eq!(done(h.init("t", Some((99, 0)))), Err(E::ProducerFenced), "another producer id");
    let a = append(h.init("t", Some(id)));
    assert_eq!(h.ok(a).answer, Some(Ok((1, 1))));
    assert_eq!(h.s.get("t").unwrap().last_producer_epoch, 0);
    assert_eq!(done(h.init("t", Some((1, 5)))), Err(E::ProducerFenced), "neither current nor last epoch");
    // KIP-360: an unknown id (epoch -1) accepts any expectation and hands out its new id.
    let a = append(h.init("u", Some((42, 7))));
    assert_eq!(h.ok(a).answer, Some(Ok((2, 0))));
}

#[test]
fn init_retry_with_last_epoch_returns_same_epoch_and_still_writes() {
    let mut h = H::new(tv0());
    h.init_ok("t");
    let a = append(h.init("t", Some((1, 0))));
    assert_eq!(h.ok(a).answer, Some(Ok((1, 1))));
    // The answer was lost; the producer retries with the pair it had.
    let a = append(h.init("t", Some((1, 0))));
    assert_eq!(written(&a).producer_epoch, 1);
    assert_eq!(h.ok(a).answer, Some(Ok((1, 1))));
    // Without expectation a bump resets the last epoch, so the old pair is now fenced.
    assert_eq!(h.init_ok("t"), (1, 2));
    assert_eq!(done(h.init("t", Some((1, 0)))), Err(E::ProducerFenced));
}

#[test]
fn init_at_exhausted_epoch_rotates_producer_id() {
    let rec = [("t", val(7, 32766, S::CompleteCommit, &[], 5))];
    // Without expectation: new id, epoch 0, nothing remembered.
    let mut h = H::with(tv0(), &rec);
    let a = append(h.init("t", None));
    let v = written(&a);
    assert_eq!((v.producer_id, v.producer_epoch, v.prev_producer_id, v.state), (100, 0, -1, S::Empty));
    assert_eq!(h.ok(a).answer, Some(Ok((100, 0))));
    // With expectation: the old id is kept as previous, and the lost-answer retry is valid.
    let mut h = H::with(tv0(), &rec);
    let a = append(h.init("t", Some((7, 32766))));
    assert_eq!(written(&a).prev_producer_id, 7);
    assert_eq!(h.ok(a).answer, Some(Ok((100, 0))));
    let a = append(h.init("t", Some((7, 32766))));
    assert_eq!(h.ok(a).answer, Some(Ok((100, 0))), "retry of the rotation gets the same identity");
    // An expectation below the exhausted epoch is a zombie.
    let mut h = H::with(tv0(), &rec);
    assert_eq!(done(h.init("t", Some((7, 32765)))), Err(E::ProducerFenced));
    // No producer id at hand.
    let mut h = H::with(tv0(), &rec);
    assert_eq!(done(h.s.init_producer_id("t", TIMEOUT, None, &mut NoIds, NOW)), Err(E::CoordinatorLoadInProgress));
    assert_eq!(h.pending("t"), None);
}

#[test]
fn init_rejects_bad_timeout_empty_id_and_missing_producer_ids() {
    let mut h = H::new(TxnConfig { max_timeout_ms: 1_000, ..tv0() });
    for bad in [0, -1, 1_001] {
        assert_eq!(done(h.s.init_producer_id("t", bad, None, &mut h.ids, NOW)), Err(E::InvalidTransactionTimeout));
    }
    assert_eq!(done(h.s.init_producer_id("", 1_000, None, &mut h.ids, NOW)), Err(E::InvalidRequest));
    assert_eq!(done(h.s.init_producer_id("t", 1_000, None, &mut NoIds, NOW)), Err(E::CoordinatorLoadInProgress));
    assert!(h.s.get("t").is_none(), "nothing is created");
    assert!(matches!(h.s.init_producer_id("t", 1_000, None, &mut h.ids, NOW), Step::Append(_)));
}

#[test]
fn init_on_ongoing_fences_aborts_then_answers_concurrent_transactions() {
    let mut h = H::new(tv0());
    let old = h.init_ok("t");
    let a = append(h.add("t", old, &[("a", 0), ("b", 1)], 50));
    h.ok(a);
    let a = append(h.init("t", None));
    let v = written(&a);
    assert_eq!((v.state, v.producer_epoch, v.producer_id), (S::PrepareAbort, 1, 1));
    assert_eq!(v.partitions, set(&[("a", 0), ("b", 1)]));
    assert_eq!(done(h.init("t", None)), Err(E::ConcurrentTransactions), "fence in flight");
    let c = h.ok(a);
    assert_eq!(c.answer, Some(Err(E::ConcurrentTransactions)));
    let m: &MarkerWork = &c.markers[0];
    assert_eq!((c.markers.len(), m.transactional_id.as_str(), m.coordinator_epoch, m.producer_id), (1, "t", 0, 1));
    assert_eq!((m.producer_epoch, m.commit, m.transaction_version, &m.partitions), (1, false, 0, &v.partitions));
    // The zombie is fenced; the new producer waits for the abort, then bumps again.
    assert_eq!(done(h.end("t", old, true, false, 60)), Err(E::ProducerFenced));
    assert_eq!(done(h.init("t", None)), Err(E::ConcurrentTransactions));
    h.finish("t", 70);
    assert_eq!(h.v("t").state, S::CompleteAbort);
    assert_eq!(h.init_ok("t"), (1, 2));
}

#[test]

fn init_on_ongoing_under_tv2_fences_with_one_more_bump() {
    let mut h = H::with(TxnConfig::default(), &[("t", val(7, 3, S::Ongoing, &[("a", 0)], 5))]);
    let a = append(h.init("t", None));
    let v = written(&a);
    assert_eq!((v.state, v.producer_epoch, v.client_transaction_version), (S::PrepareAbort, 5, 2));
}

#[test]
fn fence_at_exhausted_epoch_under_tv2_rotates_at_complete() {
    let mut h = H::with(TxnConfig::default(), &[("t", val(7, 32766, S::Ongoing, &[("a", 0)], 5))]);
    let a = append(h.init("t", None));
    let v = written(&a);
    assert_eq!((v.producer_epoch, v.next_producer_id), (32767, 100));
    assert_eq!(h.ok(a).answer, Some(Err(E::ConcurrentTransactions)));
    h.finish("t", 10);
    let v = h.v("t");
    assert_eq!((v.producer_id, v.producer_epoch, v.prev_producer_id, v.next_producer_id), (100, 0, 7, -1));
}

#[test]
fn failed_fence_append_does_not_burn_a_second_epoch() {
    let mut h = H::with(tv0(), &[("t", val(7, 3, S::Ongoing, &[("a", 0)], 5))]);
    let a = append(h.init("t", None));
    assert_eq!(written(&a).producer_epoch, 4);
    let c = h.s.complete_append(a.id, Err(E::NotEnoughReplicas));
    assert_eq!(c.answer, Some(Err(E::CoordinatorNotAvailable)));
    assert_eq!((h.v("t").state, h.v("t").producer_epoch, h.pending("t")), (S::Ongoing, 3, None));
    let a = append(h.init("t", None));
    assert_eq!(written(&a).producer_epoch, 4, "the retry reuses the fenced epoch");
}

#[test]
fn failed_first_append_drops_never_persisted_id() {
    let mut h = H::new(tv0());
    let a = append(h.init("t", None));
    assert_eq!(h.s.complete_append(a.id, Err(E::NotLeaderOrFollower)).answer, Some(Err(E::NotCoordinator)));
    assert!(h.s.get("t").is_none());
    assert!(h.s.snapshot_records().is_empty());
    assert_eq!(h.init_ok("t"), (2, 0), "a later call allocates again");
}

#[test]
fn failed_bump_keeps_old_metadata_and_maps_append_errors() {
    let mut h = H::new(tv0());
    h.init_ok("t");
    for (err, want) in [
        (E::RequestTimedOut, E::CoordinatorNotAvailable),
        (E::KafkaStorageError, E::NotCoordinator),
        (E::MessageTooLarge, E::UnknownServerError),
    ] {
        let a = append(h.init("t", None));
        assert_eq!(h.s.complete_append(a.id, Err(err)).answer, Some(Err(want)));
        assert_eq!((h.v("t").producer_epoch, h.pending("t")), (0, None));
    }
    assert_eq!(h.s.complete_append(strata_txn::AppendId(999), Ok(())).answer, Some(Err(E::NotCoordinator)));
}

// ---- AddPartitionsToTxn (2.3) ----

#[test]
fn add_rejects_unknown_id_other_producer_and_epoch() {
    let mut h = H::new(tv0());
    assert_eq!(done(h.add("t", (1, 0), &[("a", 0)], NOW)), Err(E::InvalidProducerIdMapping));
    assert_eq!(done(h.add("", (1, 0), &[("a", 0)], NOW)), Err(E::InvalidRequest));
    h.init_ok("t");
    assert_eq!(done(h.add("t", (2, 0), &[("a", 0)], NOW)), Err(E::InvalidProducerIdMapping));
    assert_eq!(done(h.add("t", (1, 1), &[("a", 0)], NOW)), Err(E::ProducerFenced));
}

#[test]
fn add_checks_pending_first_and_refuses_during_markers() {
    let mut h = H::new(tv0());
    let id = h.init_ok("t");
    let a = append(h.add("t", id, &[("a", 0)], NOW));
    assert_eq!(done(h.add("t", id, &[("b", 0)], NOW)), Err(E::ConcurrentTransactions));
    assert_eq!(done(h.add("t", (1, 9), &[("b", 0)], NOW)), Err(E::ConcurrentTransactions), "pending before epoch");
    h.ok(a);
    let a = append(h.end("t", id, true, false, NOW));
    h.ok(a);
    assert_eq!(h.pending("t"), Some(Pending::Markers));
    assert_eq!(done(h.add("t", id, &[("b", 0)], NOW)), Err(E::ConcurrentTransactions));
}

#[test]
fn add_unions_partitions_sets_start_once_and_skips_covered_adds() {
    let mut h = H::new(tv0());
    let id = h.init_ok("t");
    let a = h.s.add_partitions("t", 1, 0, &parts(&[("a", 0)]), 2, 100);
    let a = append(a);
    let v = written(&a);
    assert_eq!((v.state, v.start_ms, v.last_update_ms, v.client_transaction_version), (S::Ongoing, 100, 100, 2));
    assert_eq!(h.v("t").state, S::Empty, "nothing changes before the append commits");
    assert_eq!(h.ok(a).answer, Some(Ok(id)));
    let a = append(h.add("t", id, &[("a", 0), ("b", 1)], 200));
    let v = written(&a);
    assert_eq!((v.partitions, v.start_ms, v.last_update_ms), (set(&[("a", 0), ("b", 1)]), 100, 200));
    h.ok(a);
    let log = h.log.len();
    assert_eq!(done(h.add("t", id, &[("b", 1), ("a", 0)], 300)), Ok(id));
    assert_eq!((h.log.len(), h.pending("t")), (log, None), "nothing written");
    let a = append(h.end("t", id, true, false, 400));
    h.ok(a);
    h.finish("t", 450);
    let a = append(h.add("t", id, &[("c", 2)], 500));
    let v = written(&a);
    assert_eq!((v.partitions, v.start_ms), (set(&[("c", 2)]), 500), "a new transaction starts from Complete*");
}

#[test]
fn verify_partitions_flags_membership_without_writing() {
    let mut h = H::new(tv0());
    let id = h.init_ok("t");
    let probe = parts(&[("a", 0), ("a", 1), ("b", 0)]);
    assert_eq!(h.s.verify_partitions("t", 1, 0, &probe), Ok(vec![false, false, false]), "Empty: nothing added");
    let a = append(h.add("t", id, &[("a", 0), ("b", 0)], NOW));
    h.ok(a);
    let a = append(h.add("t", id, &[("a", 1)], NOW));
    // Pending is not checked: the answer comes from the durable state.
    assert_eq!(h.s.verify_partitions("t", 1, 0, &probe), Ok(vec![true, false, true]));
    h.ok(a);
    assert_eq!(h.s.verify_partitions("t", 1, 0, &probe), Ok(vec![true, true, true]));
    assert_eq!(h.s.verify_partitions("t", 2, 0, &probe), Err(E::InvalidProducerIdMapping));
    assert_eq!(h.s.verify_partitions("t", 1, 1, &probe), Err(E::ProducerFenced));
    assert_eq!(h.s.verify_partitions("x", 1, 0, &probe), Err(E::InvalidProducerIdMapping));
    assert_eq!(h.s.verify_partitions("", 1, 0, &probe), Err(E::InvalidRequest));
    let log = h.log.len();
    let a = append(h.end("t", id, false, false, NOW));
    h.ok(a);
    assert_eq!(h.s.verify_partitions("t", 1, 0, &probe), Err(E::ConcurrentTransactions));
    assert_eq!(h.log.len(), log + 1, "only the EndTxn wrote");
}

// ---- EndTxn (2.5) ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Fails(E),
    /// NONE with the current identity, nothing written.
    Retry,
    /// → Prepare*; `true`: an empty abort (no partitions, start = now).
    Prepare(bool),
}

/// EndTxn on id "t" (pid 7, epoch 5, `state`, partition a-0 while a transaction is open or
/// decided) with `epoch` answers `want` and writes exactly what the table lists.
#[track_caller]
fn check_end(tv2: bool, state: S, commit: bool, epoch: i16, want: Want) {
    let open = matches!(state, S::Ongoing | S::PrepareCommit | S::PrepareAbort);
    let (p, start): (&[(&str, i32)], i64) = if open { (&[("a", 0)], 50) } else { (&[], -1) };
    let start = if state == S::Empty { start } else { 50 };
    let config = if tv2 { TxnConfig::default() } else { tv0() };
    let mut h = H::with(config, &[("t", val(7, 5, state, p, start))]);
    let ctx = format!("tv2={tv2} {state:?} commit={commit} epoch={epoch}");
    let step = h.end("t", (7, epoch), commit, tv2, NOW);
    let Want::Prepare(empty) = want else {
        let answer = match want {
            Want::Fails(e) => Err(e),
            _ => Ok((7, 5)),
        };
        assert_eq!(done(step), answer, "{ctx}");
        assert_eq!(h.v("t"), val(7, 5, state, p, start), "{ctx}: nothing changes");
        return;
    };
    let a = append(step);
    let v = written(&a);
    let (target, next) = (if commit { S::PrepareCommit } else { S::PrepareAbort }, 5 + i16::from(tv2));
    let (parts_want, start_want) = if empty { (set(&[]), NOW) } else { (set(&[("a", 0)]), 50) };
    assert_eq!((v.state, v.producer_epoch, v.client_transaction_version), (target, next, 2 * i16::from(tv2)), "{ctx}");
    assert_eq!((&v.partitions, v.start_ms, v.next_producer_id, v.last_update_ms), (&parts_want, start_want, -1, NOW));
    let c = h.ok(a);
    assert_eq!(c.answer, Some(Ok((7, next))), "{ctx}: the identity to use next");
    assert_eq!(h.s.get("t").unwrap().last_producer_epoch, if tv2 { 5 } else { -1 }, "{ctx}");
    let m = &c.markers[0];
    assert_eq!((m.producer_epoch, m.commit, &m.partitions), (next, commit, &parts_want), "{ctx}");
    assert_eq!(h.pending("t"), Some(Pending::Markers));
}

#[test]
fn end_txn_tv0_follows_the_table() {
    use Want::*;
    let (ist, cc) = (Fails(E::InvalidTxnState), Fails(E::ConcurrentTransactions));
    // (state, commit, abort), epoch = current; Prepare* without a marker phase (replayed only).
    let table = [
        (S::Ongoing, Prepare(false), Prepare(false)),
        (S::PrepareCommit, cc, ist),
        (S::PrepareAbort, ist, cc),
        (S::CompleteCommit, Retry, ist),
        (S::CompleteAbort, ist, Retry),
        (S::Empty, ist, ist),
    ];
    for (state, on_commit, on_abort) in table {
        check_end(false, state, true, 5, on_commit);
        check_end(false, state, false, 5, on_abort);
        for epoch in [4, 6] {
            check_end(false, state, true, epoch, Fails(E::ProducerFenced));
        }
    }
    // Order: producer id, epoch, then pending.
    let mut h = H::with(tv0(), &[("t", val(7, 5, S::Ongoing, &[("a", 0)], 50))]);
    assert_eq!(done(h.end("t", (8, 4), true, false, NOW)), Err(E::InvalidProducerIdMapping));
    let _a = append(h.add("t", (7, 5), &[("b", 0)], NOW));
    assert_eq!(done(h.end("t", (7, 4), true, false, NOW)), Err(E::ProducerFenced));
    assert_eq!(done(h.end("t", (7, 5), true, false, NOW)), Err(E::ConcurrentTransactions));
    assert_eq!(done(h.end("x", (7, 5), true, false, NOW)), Err(E::InvalidProducerIdMapping));
    assert_eq!(done(h.end("", (7, 5), true, false, NOW)), Err(E::InvalidRequest));
}

#[test]
fn end_txn_tv2_follows_the_table() {
    use Want::*;
    let (ist, fenced) = (Fails(E::InvalidTxnState), Fails(E::ProducerFenced));
    // (state, abort R, abort C, commit R, commit C) with R = 4 (retry), C = 5 (current).
    // Prepare(true) is the empty abort: epoch + 1, no partitions, start = now, markers for nothing.
    let table = [
        (S::Ongoing, fenced, Prepare(false), fenced, Prepare(false)),
        (S::Empty, fenced, Prepare(true), fenced, ist),
        (S::CompleteAbort, Retry, Prepare(true), ist, ist),
        (S::CompleteCommit, ist, Prepare(true), Retry, ist),
        // Prepare* without a marker phase: only the retry epoch is valid.
        (S::PrepareCommit, ist, fenced, Fails(E::ConcurrentTransactions), fenced),
        (S::PrepareAbort, Fails(E::ConcurrentTransactions), fenced, ist, fenced),
    ];
    for (state, abort_r, abort_c, commit_r, commit_c) in table {
        check_end(true, state, false, 4, abort_r);
        check_end(true, state, false, 5, abort_c);
        check_end(true, state, true, 4, commit_r);
        check_end(true, state, true, 5, commit_c);
        check_end(true, state, true, 6, fenced);
        check_end(true, state, false, 6, fenced);
    }
}

#[test]
fn end_txn_tv2_checks_pending_before_epoch() {
    let mut h = H::with(TxnConfig::default(), &[("t", val(7, 5, S::Ongoing, &[("a", 0)], 50))]);
    let a = append(h.end("t", (7, 5), true, true, NOW));
    assert_eq!(done(h.end("t", (8, 5), false, true, NOW)), Err(E::InvalidProducerIdMapping), "pid first");
    assert_eq!(done(h.end("t", (7, 6), false, true, NOW)), Err(E::ConcurrentTransactions));
    h.ok(a);
    // KAFKA-18464: an abort with the new epoch right after the commit does not fence itself.
    assert_eq!(done(h.end("t", (7, 6), false, true, NOW)), Err(E::ConcurrentTransactions));
    assert_eq!(done(h.end("t", (7, 5), true, true, NOW)), Err(E::ConcurrentTransactions), "retry during markers");
}

#[test]
fn end_txn_tv2_retry_answers_current_identity_and_late_request_is_fenced() {
    let mut h = H::with(TxnConfig::default(), &[("t", val(7, 5, S::Ongoing, &[("a", 0)], 50))]);
    let a = append(h.end("t", (7, 5), true, true, NOW));
    assert_eq!(h.ok(a).answer, Some(Ok((7, 6))));
    h.finish("t", NOW);
    assert_eq!((h.v("t").state, h.v("t").producer_epoch), (S::CompleteCommit, 6));
    let log = h.log.len();
    assert_eq!(done(h.end("t", (7, 5), true, true, NOW)), Ok((7, 6)));
    assert_eq!(done(h.end("t", (7, 5), false, true, NOW)), Err(E::InvalidTxnState));
    assert_eq!(h.log.len(), log);
    // Transaction N+1 opens; a delayed EndTxn of N can no longer land in it.
    let a = append(h.add("t", (7, 6), &[("a", 0)], NOW));
    h.ok(a);
    assert_eq!(done(h.end("t", (7, 5), true, true, NOW)), Err(E::ProducerFenced));
    assert_eq!(done(h.end("t", (7, 5), false, true, NOW)), Err(E::ProducerFenced));
}

#[test]
fn end_txn_tv2_overflow_allocates_next_producer_id() {
    let rec = [("t", val(7, 32766, S::Ongoing, &[("a", 0)], 50))];
    let mut h = H::with(TxnConfig::default(), &rec);
    assert_eq!(done(h.s.end_txn("t", 7, 32766, true, true, &mut NoIds, NOW)), Err(E::CoordinatorLoadInProgress));
    let a = append(h.end("t", (7, 32766), true, true, NOW));
    let v = written(&a);
    assert_eq!((v.producer_id, v.producer_epoch, v.next_producer_id), (7, 32767, 100));
    let c = h.ok(a);
    assert_eq!(c.answer, Some(Ok((100, 0))), "the identity the producer uses next");
    assert_eq!((c.markers[0].producer_id, c.markers[0].producer_epoch), (7, 32767));
    assert_eq!(done(h.end("t", (7, 32766), true, true, NOW)), Err(E::ConcurrentTransactions));
    let epoch = h.s.coordinator_epoch();
    let a = h.s.markers_written("t", epoch, NOW + 1).unwrap();
    let v = written(&a);
    assert_eq!(
        (v.state, v.producer_id, v.prev_producer_id, v.next_producer_id, v.producer_epoch),
        (S::CompleteCommit, 100, 7, -1, 0)
    );
    assert!(v.partitions.is_empty());
    assert_eq!(h.s.get("t").unwrap().value.producer_id, 7, "installed only once durable");
    h.ok(a);
    assert_eq!(done(h.end("t", (7, 32766), true, true, NOW)), Ok((100, 0)), "retry across the rotation");
    let a = append(h.add("t", (100, 0), &[("b", 0)], NOW));
    assert_eq!(h.ok(a).answer, Some(Ok((100, 0))));
}

// ---- Markers (4.1) ----

#[test]
fn markers_written_appends_complete_only_for_current_coordinator_epoch() {
    let mut h = H::with(tv0(), &[("t", val(7, 5, S::Ongoing, &[("a", 0)], 50))]);
    assert_eq!(h.s.markers_written("t", 0, NOW), None, "no decided transaction");
    let a = append(h.end("t", (7, 5), false, false, NOW));
    h.ok(a);
    assert_eq!(h.s.markers_written("t", 1, NOW), None, "another coordinator epoch");
    assert_eq!(h.s.markers_written("x", 0, NOW), None);
    let a = h.s.markers_written("t", 0, 500).unwrap();
    let v = written(&a);
    assert_eq!((v.state, v.producer_epoch, v.last_update_ms, v.start_ms), (S::CompleteAbort, 5, 500, 50));
    assert!(v.partitions.is_empty());
    assert_eq!(h.s.markers_written("t", 0, 500), None, "Complete* already in flight");
    assert_eq!(h.v("t").state, S::PrepareAbort);
    assert_eq!(h.ok(a), Completed::default());
    assert_eq!((h.v("t").state, h.pending("t")), (S::CompleteAbort, None));
}

#[test]
fn complete_failed_puts_txn_back_to_waiting_for_markers() {
    let mut h = H::with(tv0(), &[("t", val(7, 5, S::PrepareCommit, &[("a", 0)], 50))]);
    h.s.on_loaded();
    let a = h.s.markers_written("t", 0, NOW).unwrap();
    h.s.complete_failed("t", a.id);
    assert_eq!((h.v("t").state, h.pending("t")), (S::PrepareCommit, Some(Pending::Markers)));
    h.finish("t", NOW);
    assert_eq!(h.v("t").state, S::CompleteCommit);
}

#[test]

fn complete_append_error_on_complete_keeps_markers_in_flight() {
    let mut h = H::with(tv0(), &[("t", val(7, 5, S::PrepareCommit, &[("a", 0)], 50))]);
    h.s.on_loaded();
    let a = h.s.markers_written("t", 0, NOW).unwrap();
    h.s.complete_append(a.id, Err(E::NotEnoughReplicas));
    assert_eq!(h.pending("t"), Some(Pending::Markers));
    assert!(h.s.markers_written("t", 0, NOW).is_some(), "the Complete* append can be retried");
}

#[test]
fn on_loaded_returns_marker_work_for_prepare_txns() {
    let mut h = H::with(
        TxnConfig::default(),
        &[
            ("c", val(7, 5, S::PrepareCommit, &[("a", 0), ("b", 2)], 50)),
            ("a", val(8, 1, S::PrepareAbort, &[("a", 1)], 50)),
            ("o", val(9, 1, S::Ongoing, &[("a", 1)], 50)),
            ("e", val(10, 1, S::Empty, &[], -1)),
            ("d", val(11, 1, S::CompleteCommit, &[], 50)),
            ("gone", val(12, 1, S::Empty, &[], -1)),
        ],
    );
    h.log.push(TxnRecord { transactional_id: "gone".into(), value: None });
    let mut h2 = H { s: load(&TxnConfig::default(), 4, &h.log), ..h };
    assert!(h2.s.get("gone").is_none(), "a tombstone removes the id");
    let work = h2.s.on_loaded();
    let got: Vec<_> = work
        .iter()
        .map(|w| (w.transactional_id.as_str(), w.coordinator_epoch, w.producer_id, w.producer_epoch, w.commit))
        .collect();
    assert_eq!(got, vec![("a", 4, 8, 1, false), ("c", 4, 7, 5, true)]);
    assert_eq!(work[1].partitions, set(&[("a", 0), ("b", 2)]));
    assert_eq!(h2.pending("c"), Some(Pending::Markers));
    assert_eq!(h2.pending("o"), None);
    assert_eq!(done(h2.init("c", None)), Err(E::ConcurrentTransactions), "markers being written");
    assert_eq!(done(h2.init("c", Some((7, 5)))), Err(E::ConcurrentTransactions));
    assert_eq!(h2.s.markers_written("c", 0, NOW), None, "the old coordinator epoch");
    h2.finish("c", NOW);
    assert_eq!(h2.v("c").state, S::CompleteCommit);
}

// ---- Timers (5) ----

#[test]
fn tick_aborts_timed_out_ongoing_within_one_interval() {
    let mut h = H::with(tv0(), &[("t", val(7, 5, S::Ongoing, &[("a", 0)], 1_000))]);
    assert!(h.s.tick(61_000, &mut h.ids).is_empty(), "start + timeout is not yet past");
    let due = h.s.next_deadline();
    assert_eq!(due, 71_000);
    assert!(h.s.tick(due - 1, &mut h.ids).is_empty(), "not due");
    let appends = h.s.tick(due, &mut h.ids);
    assert_eq!(appends.len(), 1);
    let v = written(&appends[0]);
    assert_eq!((v.state, v.producer_epoch, v.client_transaction_version), (S::PrepareAbort, 6, 0));
    let c = h.ok(appends[0].clone());
    assert_eq!(c.answer, None, "the coordinator's own abort answers nobody");
    assert_eq!((c.markers[0].commit, c.markers[0].producer_epoch), (false, 6));
    assert_eq!(done(h.end("t", (7, 5), true, false, due)), Err(E::ProducerFenced));
}

#[test]
fn tick_skips_timed_out_txn_while_pending() {
    let mut h = H::with(tv0(), &[("t", val(7, 5, S::Ongoing, &[("a", 0)], 1_000))]);
    let a = append(h.add("t", (7, 5), &[("b", 0)], 2_000));
    assert!(h.s.tick(100_000, &mut h.ids).is_empty());
    h.ok(a);
    let appends = h.s.tick(h.s.next_deadline(), &mut h.ids);
    assert_eq!(written(&appends[0]).state, S::PrepareAbort);
}

#[test]

fn tick_timeout_abort_under_tv2_fences_the_zombie_end_txn() {
    let mut h = H::with(TxnConfig::default(), &[("t", val(7, 5, S::Ongoing, &[("a", 0)], 1_000))]);
    let appends = h.s.tick(100_000, &mut h.ids);
    assert_eq!(written(&appends[0]).producer_epoch, 7);
    h.ok(appends[0].clone());
    h.finish("t", 100_001);
    assert_eq!(done(h.end("t", (7, 5), false, true, 100_002)), Err(E::ProducerFenced));
}

#[test]
fn tick_expires_only_idle_empty_and_complete_ids_after_tombstone_commits() {
    let cfg = TxnConfig { id_expiration_ms: 10_000, ..tv0() };
    let old = |state, start| TxnValue { txn_timeout_ms: 900_000, ..val(7, 1, state, &[], start) };
    let recent = TxnValue { last_update_ms: 15_000, ..old(S::Empty, -1) };
    let mut h = H::with(
        cfg,
        &[
            ("empty", old(S::Empty, -1)),
            ("commit", old(S::CompleteCommit, 5)),
            ("abort", old(S::CompleteAbort, 5)),
            ("ongoing", TxnValue { partitions: set(&[("a", 0)]), ..old(S::Ongoing, 19_000) }),
            ("prepare", TxnValue { partitions: set(&[("a", 0)]), ..old(S::PrepareCommit, 5) }),
            ("recent", recent),
            ("busy", old(S::Empty, -1)),
        ],
    );
    h.s.on_loaded();
    let _busy = append(h.init("busy", None));
    let appends = h.s.tick(20_000, &mut h.ids);
    assert_eq!(appends.len(), 1);
    let ids: Vec<_> = appends[0].records.iter().map(|r| (r.transactional_id.as_str(), r.value.is_none())).collect();
    assert_eq!(ids, vec![("abort", true), ("commit", true), ("empty", true)]);
    assert!(h.s.get("empty").is_some(), "removed only once the tombstone commits");
    assert_eq!(done(h.init("empty", None)), Err(E::ConcurrentTransactions), "a racing transition waits");
    assert_eq!(h.ok(appends[0].clone()), Completed::default());
    for id in ["abort", "commit", "empty"] {
        assert!(h.s.get(id).is_none(), "{id}");
    }
    let left: Vec<_> = h.s.snapshot_records().into_iter().map(|r| r.transactional_id).collect();
    assert_eq!(left, ["busy", "ongoing", "prepare", "recent"]);
}

#[test]
fn failed_tombstone_keeps_ids_for_the_next_run() {
    let cfg = TxnConfig { id_expiration_ms: 10_000, expire_interval_ms: 1_000, ..tv0() };
    let mut h = H::with(cfg, &[("t", val(7, 1, S::Empty, &[], -1))]);
    let appends = h.s.tick(20_000, &mut h.ids);
    assert_eq!(h.s.complete_append(appends[0].id, Err(E::NotEnoughReplicas)), Completed::default());
    assert_eq!(h.pending("t"), None);
    assert_eq!(h.s.tick(21_000, &mut h.ids)[0].records[0].transactional_id, "t");
}

// ---- Replay equivalence (7.3 scenario 2) ----

/// xorshift64*: a tiny deterministic generator.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[test]
fn replaying_committed_records_rebuilds_the_live_shard() {
    const ERRORS: [E; 3] = [E::NotEnoughReplicas, E::NotLeaderOrFollower, E::RequestTimedOut];
    let is_complete = |a: &Append| {
        a.records[0].value.as_ref().is_some_and(|v| matches!(v.state, S::CompleteCommit | S::CompleteAbort))
    };
    let mut completions = 0;
    for seed in 1..=48u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let config = TxnConfig {
            transaction_version: if seed % 2 == 0 { 2 } else { 0 },
            max_timeout_ms: 5_000,
            id_expiration_ms: 6_000,
            abort_interval_ms: 1_000,
            expire_interval_ms: 4_000,
        };
        // One id starts near the end of its epochs, to reach rotations and overflows.
        let mut log =
            vec![TxnRecord { transactional_id: "d".into(), value: Some(val(1_000, 32764, S::Empty, &[], -1)) }];
        let mut s = load(&config, 0, &log);
        let (mut ids, mut now) = (Ids(0), 0i64);
        let mut in_flight: VecDeque<Append> = VecDeque::new(); // in append order
        let mut awaiting_markers: Vec<String> = Vec::new();
        for step in 0..300 {
            let ctx = format!("seed {seed} step {step}");
            now += rng.below(300) as i64;
            let id = ["a", "b", "c", "d"][rng.below(4) as usize];
            let current = s.get(id).map_or((1, 0), |m| (m.value.producer_id, m.value.producer_epoch));
            let who = if rng.chance(10) { (current.0, current.1 - 1) } else { current };
            let mut no_ids = NoIds;
            let src: &mut dyn ProducerIdSource = if rng.chance(5) { &mut no_ids } else { &mut ids };
            let started = match rng.below(13) {
                0 => {
                    let expected = if rng.chance(50) { None } else { Some(who) };
                    let timeout = if rng.chance(3) { 0 } else { 1 + rng.below(5_000) as i32 };
                    appended(s.init_producer_id(id, timeout, expected, src, now))
                }
                1..=3 => {
                    let list: Vec<(String, i32)> = (0..1 + rng.below(3))
                        .map(|_| (["x", "y"][rng.below(2) as usize].to_string(), rng.below(3) as i32))
                        .collect();
                    appended(s.add_partitions(id, who.0, who.1, &list, 2 * rng.below(2) as i16, now))
                }
                4 | 12 => appended(s.end_txn(id, who.0, who.1, rng.chance(70), rng.chance(50), src, now)),
                5 => s.tick(now, src),
                6 if !awaiting_markers.is_empty() => {
                    let txn = awaiting_markers.swap_remove(rng.below(awaiting_markers.len() as u64) as usize);
                    s.markers_written(&txn, s.coordinator_epoch(), now).into_iter().collect()
                }
                7..=10 => {
                    if let Some(a) = in_flight.pop_front() {
                        if rng.chance(80) {
                            log.extend(a.records.iter().cloned());
                            let c = s.complete_append(a.id, Ok(()));
                            awaiting_markers.extend(c.markers.into_iter().map(|m| m.transactional_id));
                            completions += 1;
                            assert_eq!(load(&config, 0, &log).snapshot_records(), s.snapshot_records(), "{ctx}");
                        } else if is_complete(&a) {
                            s.complete_failed(&a.records[0].transactional_id, a.id);
                            awaiting_markers.push(a.records[0].transactional_id.clone());
                        } else {
                            s.complete_append(a.id, Err(ERRORS[rng.below(3) as usize]));
                        }
                    }
                    Vec::new()
                }
                11 if rng.chance(20) => {
                    // Reload under a new leader epoch: in-flight appends are lost with the old shard.
                    s = load(&config, s.coordinator_epoch() + 1, &log);
                    in_flight.clear();
                    awaiting_markers = s.on_loaded().into_iter().map(|m| m.transactional_id).collect();
                    Vec::new()
                }
                _ => Vec::new(),
            };
            for a in started {
                let states: Vec<S> = a.records.iter().filter_map(|r| r.value.as_ref().map(|v| v.state)).collect();
                assert!(states.iter().all(|st| st.is_durable()), "{ctx}: {states:?} written");
                in_flight.push_back(a);
            }
        }
    }
    assert!(completions > 1_000, "the sequences commit enough appends ({completions})");
}
