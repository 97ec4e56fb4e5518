//! The states of a transactional id (Kafka's `TransactionState`), with the ids the
//! `__transaction_state` log stores and the names DescribeTransactions and ListTransactions
//! print.

/// See the module docs. `Dead` and `PrepareEpochFence` are transient: never written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnState {
    /// Initialised by InitProducerId; no transaction open.
    Empty,
    /// A partition (or the offsets partition) was added.
    Ongoing,
    /// Commit decided and durable; markers being written.
    PrepareCommit,
    /// Abort decided and durable; markers being written.
    PrepareAbort,
    /// Every commit marker written.
    CompleteCommit,
    /// Every abort marker written.
    CompleteAbort,
    /// An expired transactional id whose tombstone is being written.
    Dead,
    /// An epoch fence (InitProducerId or the timeout on an open transaction) being prepared.
    PrepareEpochFence,
}

impl TxnState {
    /// The id in the log (`TransactionStatus`).
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    /// The state with log id `id`, if any.
    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name Kafka's admin APIs give the state.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Whether a record may carry the state (the transient ones never are).
    pub fn is_durable(self) -> bool {
        !matches!(self, TxnState::Dead | TxnState::PrepareEpochFence)
    }

    /// Whether a transactional id may go from `from` to `self` (Kafka's `validPreviousStates`);
    /// `tv2`: under transactions V2 an abort may also start from a state without an open
    /// transaction (an "empty abort").
    pub fn may_follow(self, from: TxnState, tv2: bool) -> bool {
        use TxnState::*;
        let done = matches!(from, Empty | CompleteCommit | CompleteAbort);
        match self {
            Empty => done,
            Ongoing => done || from == Ongoing,
            PrepareCommit => from == Ongoing,
            PrepareAbort => matches!(from, Ongoing | PrepareEpochFence) || (tv2 && done),
            CompleteCommit => from == PrepareCommit,
            CompleteAbort => from == PrepareAbort,
            Dead => done,
            PrepareEpochFence => from == Ongoing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_only_durable_states_are_written() {
        for id in 0..8 {
            let s = TxnState::from_id(id).unwrap();
            assert_eq!(s.id(), id);
            assert_eq!(s.is_durable(), id < 6, "{}", s.name());
        }
        assert_eq!(TxnState::from_id(8), None);
        assert_eq!(TxnState::from_id(-1), None);
    }

    #[test]
    fn transitions_follow_kafka() {
        use TxnState::*;
        assert!(Ongoing.may_follow(CompleteAbort, false));
        assert!(!PrepareCommit.may_follow(Empty, true));
        assert!(!PrepareAbort.may_follow(Empty, false) && PrepareAbort.may_follow(Empty, true));
        assert!(PrepareAbort.may_follow(PrepareEpochFence, false));
        assert!(!CompleteCommit.may_follow(PrepareAbort, true));
        assert!(!Empty.may_follow(Ongoing, true), "an open transaction must end first");
    }
}
