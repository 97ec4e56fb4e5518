//! Records of `__transaction_state`, in Kafka's byte format.
//!
//! One record per transition of a transactional id: the key names the id, the value is the
//! whole state after the transition; a null value (tombstone) removes an expired id, so the
//! topic compacts by key and replaying what is left rebuilds the same map.
//!
//! # Encoding (Kafka's `TransactionLogKey` / `TransactionLogValue`)
//! Big-endian. Key: `i16 version (0)`, `string transactional_id` (`i16` length + UTF-8).
//! Value: `i16 version`, then
//! - version 0: `i64 producer_id`, `i16 producer_epoch`, `i32 transaction_timeout_ms`,
//!   `i8 transaction_status`, partitions as `i32 count` (`-1`: null, which an Empty state
//!   writes) × (`string topic`, `i32 count` × `i32 partition`), `i64 last_update_timestamp_ms`,
//!   `i64 start_timestamp_ms`;
//! - version 1 (flexible): the same fields, with compact strings and arrays (unsigned varint
//!   length + 1, 0 = null), an empty tagged-field section after each topic, and a final
//!   tagged-field section: tag 0 `i64 previous_producer_id`, tag 1 `i64 next_producer_id`,
//!   tag 2 `i16 client_transaction_version`, each left out when at its default (-1, -1, 0).
//!   Unknown tags are skipped.
//!
//! Version 0 has no place for the previous and next producer ids or the client's transaction
//! version: they read back as their defaults. A decoder refuses trailing bytes, unknown value
//! versions, transient states and partition lists that do not fit the state.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::TxnError;
use crate::state::TxnState;

/// Partitions of a transaction, by topic.
pub type TxnPartitions = BTreeMap<String, BTreeSet<i32>>;

/// The state of a transactional id after a transition (Kafka's `TxnTransitMetadata` as
/// written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    pub producer_id: i64,
    /// The producer id before the last rotation, -1 for none.
    pub prev_producer_id: i64,
    /// Transactions V2: the producer id allocated when the epoch ran out, -1 for none.
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub txn_timeout_ms: i32,
    /// A durable state ([`TxnState::is_durable`]).
    pub state: TxnState,
    /// Empty in the Empty state (written as null) and the Complete states.
    pub partitions: TxnPartitions,
    pub last_update_ms: i64,
    /// -1 while no transaction is open.
    pub start_ms: i64,
    /// The `transaction.version` of the request that made the transition (0 or 2).
    pub client_transaction_version: i16,
}

/// One record: `value` `None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub transactional_id: String,
    pub value: Option<TxnValue>,
}

impl TxnRecord {
    /// Key and value bytes, the value as `TransactionLogValue` version `value_version` (0
    /// while the cluster's `transaction.version` is 0, else 1; anything else is written as 1).
    pub fn encode(&self, value_version: i16) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::with_capacity(4 + self.transactional_id.len());
        key.put_i16(0);
        put_str(&mut key, &self.transactional_id);
        let value = self.value.as_ref().map(|v| if value_version == 0 { encode_v0(v) } else { encode_v1(v) });
        (key.freeze(), value)
    }

    /// Parses a record. [`TxnError::UnknownKeyVersion`] for a key of another version (skip
    /// it); [`TxnError::Corrupt`] for anything that does not parse.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<TxnRecord, TxnError> {
        let mut k = Reader { bytes: key, at: 0 };
        let version = k.i16()?;
        if version != 0 {
            return Err(TxnError::UnknownKeyVersion(version));
        }
        let transactional_id = k.string()?;
        k.finish()?;
        let value = match value {
            None => None,
            Some(bytes) => {
                let mut r = Reader { bytes, at: 0 };
                let v = match r.i16()? {
                    0 => decode_body(&mut r, false)?,
                    1 => decode_body(&mut r, true)?,
                    other => return Err(corrupt(format!("unknown value version {other}"))),
                };
                r.finish()?;
                Some(v)
            }
        };
        Ok(TxnRecord { transactional_id, value })
    }
}

fn corrupt(reason: String) -> TxnError {
    TxnError::Corrupt(reason)
}

/// The value's version and the fields every version starts with.
fn value_head(version: i16, v: &TxnValue) -> BytesMut {
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(version);
    b.put_i64(v.producer_id);
    b.put_i16(v.producer_epoch);
    b.put_i32(v.txn_timeout_ms);
    b.put_i8(v.state.id());
    b
}

fn encode_v0(v: &TxnValue) -> Bytes {
    let mut b = value_head(0, v);
    if v.state == TxnState::Empty {
        b.put_i32(-1);
    } else {
        b.put_i32(v.partitions.len() as i32);
        for (topic, parts) in &v.partitions {
            put_str(&mut b, topic);
            b.put_i32(parts.len() as i32);
            for p in parts {
                b.put_i32(*p);
            }
        }
    }
    b.put_i64(v.last_update_ms);
    b.put_i64(v.start_ms);
    b.freeze()
}

fn encode_v1(v: &TxnValue) -> Bytes {
    let mut b = value_head(1, v);
    if v.state == TxnState::Empty {
        put_uvarint(&mut b, 0);
    } else {
        put_uvarint(&mut b, v.partitions.len() as u64 + 1);
        for (topic, parts) in &v.partitions {
            put_uvarint(&mut b, topic.len() as u64 + 1);
            b.put_slice(topic.as_bytes());
            put_uvarint(&mut b, parts.len() as u64 + 1);
            for p in parts {
                b.put_i32(*p);
            }
            put_uvarint(&mut b, 0); // the topic's tagged fields
        }
    }
    b.put_i64(v.last_update_ms);
    b.put_i64(v.start_ms);
    let mut tags: Vec<(u64, Vec<u8>)> = Vec::new();
    if v.prev_producer_id != -1 {
        tags.push((0, v.prev_producer_id.to_be_bytes().to_vec()));
    }
    if v.next_producer_id != -1 {
        tags.push((1, v.next_producer_id.to_be_bytes().to_vec()));
    }
    if v.client_transaction_version != 0 {
        tags.push((2, v.client_transaction_version.to_be_bytes().to_vec()));
    }
    put_uvarint(&mut b, tags.len() as u64);
    for (tag, bytes) in tags {
        put_uvarint(&mut b, tag);
        put_uvarint(&mut b, bytes.len() as u64);
        b.put_slice(&bytes);
    }
    b.freeze()
}

fn decode_body(r: &mut Reader<'_>, flexible: bool) -> Result<TxnValue, TxnError> {
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let txn_timeout_ms = r.i32()?;
    let status = r.i8()?;
    let state = TxnState::from_id(status)
        .filter(|s| s.is_durable())
        .ok_or_else(|| corrupt(format!("transaction status {status} is not a state a record holds")))?;
    let count = if flexible { r.compact_len()? } else { r.i32_len()? };
    let mut partitions = TxnPartitions::new();
    if let Some(count) = count {
        for _ in 0..count {
            let topic = if flexible { r.compact_string()? } else { r.string()? };
            let n = if flexible { r.compact_len()? } else { r.i32_len()? };
            let n = n.ok_or_else(|| corrupt(format!("null partition list for topic {topic}")))?;
            let mut set = BTreeSet::new();
            for _ in 0..n {
                set.insert(r.i32()?);
            }
            if flexible {
                r.skip_tags()?;
            }
            if partitions.insert(topic.clone(), set).is_some() {
                return Err(corrupt(format!("topic {topic} listed twice")));
            }
        }
    } else if state != TxnState::Empty {
        return Err(corrupt(format!("a null partition list in state {}", state.name())));
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    let mut value = TxnValue {
        producer_id,
        prev_producer_id: -1,
        next_producer_id: -1,
        producer_epoch,
        txn_timeout_ms,
        state,
        // Kafka ignores what an Empty state lists.
        partitions: if state == TxnState::Empty { TxnPartitions::new() } else { partitions },
        last_update_ms,
        start_ms,
        client_transaction_version: 0,
    };
    if flexible {
        for _ in 0..r.uvarint()? {
            let tag = r.uvarint()?;
            let size = usize::try_from(r.uvarint()?).map_err(|_| corrupt("tag size".into()))?;
            let mut field = Reader { bytes: r.take(size)?, at: 0 };
            match tag {
                0 => value.prev_producer_id = field.i64()?,
                1 => value.next_producer_id = field.i64()?,
                2 => value.client_transaction_version = field.i16()?,
                _ => continue, // a newer field: skipped
            }
            field.finish()?;
        }
    }
    Ok(value)
}

/// A non-flexible string. Transactional ids and topic names longer than `i16::MAX` bytes are
/// refused before a record is made (topic names have at most 249 characters).
fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_uvarint(b: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        b.put_u8((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    b.put_u8(n as u8);
}

/// Reads fields from a record's bytes; every error is [`TxnError::Corrupt`].
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TxnError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| corrupt(format!("truncated at byte {}", self.at)))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], TxnError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn i8(&mut self) -> Result<i8, TxnError> {
        Ok(i8::from_be_bytes(self.array()?))
    }
    fn i16(&mut self) -> Result<i16, TxnError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, TxnError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, TxnError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn uvarint(&mut self) -> Result<u64, TxnError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.array::<1>()?[0];
            n |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(corrupt("varint longer than 10 bytes".into()))
    }
    /// A count that must fit in the bytes left (each element takes at least `min` bytes).
    fn checked(&self, n: u64) -> Result<usize, TxnError> {
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.bytes.len() - self.at)
            .ok_or_else(|| corrupt(format!("a count of {n} cannot fit")))
    }
    fn i32_len(&mut self) -> Result<Option<usize>, TxnError> {
        match self.i32()? {
            -1 => Ok(None),
            n if n < 0 => Err(corrupt(format!("negative count {n}"))),
            n => self.checked(n as u64).map(Some),
        }
    }
    fn compact_len(&mut self) -> Result<Option<usize>, TxnError> {
        match self.uvarint()? {
            0 => Ok(None),
            n => self.checked(n - 1).map(Some),
        }
    }
    fn string(&mut self) -> Result<String, TxnError> {
        let n = self.i16()?;
        let n = usize::try_from(n).map_err(|_| corrupt(format!("string length {n}")))?;
        self.utf8(n)
    }
    fn compact_string(&mut self) -> Result<String, TxnError> {
        let n = self.compact_len()?.ok_or_else(|| corrupt("a null topic name".into()))?;
        self.utf8(n)
    }
    fn utf8(&mut self, n: usize) -> Result<String, TxnError> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| corrupt("a string that is not UTF-8".into()))
    }
    fn skip_tags(&mut self) -> Result<(), TxnError> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).map_err(|_| corrupt("tag size".into()))?;
            self.take(size)?;
        }
        Ok(())
    }
    fn finish(self) -> Result<(), TxnError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            n => Err(corrupt(format!("{n} bytes left over"))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ongoing() -> TxnValue {
        TxnValue {
            producer_id: 1000,
            prev_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: 3,
            txn_timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [("a".to_string(), [0, 2].into_iter().collect())].into_iter().collect(),
            last_update_ms: 5,
            start_ms: 4,
            client_transaction_version: 0,
        }
    }

    /// The bytes Kafka's generated `TransactionLogKey` / `TransactionLogValue` code writes for
    /// the same fields (laid out by hand from the message schema).
    #[test]
    fn golden_bytes() {
        let record = TxnRecord { transactional_id: "t".into(), value: Some(ongoing()) };
        let (key, value) = record.encode(0);
        assert_eq!(&key[..], &[0, 0, 0, 1, b't']);
        let mut v0 = vec![0, 0];
        v0.extend_from_slice(&1000i64.to_be_bytes());
        v0.extend_from_slice(&3i16.to_be_bytes());
        v0.extend_from_slice(&60_000i32.to_be_bytes());
        v0.push(1);
        v0.extend_from_slice(&1i32.to_be_bytes());
        v0.extend_from_slice(&[0, 1, b'a']);
        v0.extend_from_slice(&2i32.to_be_bytes());
        v0.extend_from_slice(&0i32.to_be_bytes());
        v0.extend_from_slice(&2i32.to_be_bytes());
        v0.extend_from_slice(&5i64.to_be_bytes());
        v0.extend_from_slice(&4i64.to_be_bytes());
        assert_eq!(&value.unwrap()[..], &v0[..]);

        let tv2 = TxnValue { prev_producer_id: 7, client_transaction_version: 2, ..ongoing() };
        let (_, value) = TxnRecord { transactional_id: "t".into(), value: Some(tv2) }.encode(1);
        let mut v1 = vec![0, 1];
        v1.extend_from_slice(&1000i64.to_be_bytes());
        v1.extend_from_slice(&3i16.to_be_bytes());
        v1.extend_from_slice(&60_000i32.to_be_bytes());
        v1.push(1);
        v1.extend_from_slice(&[2, 2, b'a', 3]);
        v1.extend_from_slice(&0i32.to_be_bytes());
        v1.extend_from_slice(&2i32.to_be_bytes());
        v1.push(0);
        v1.extend_from_slice(&5i64.to_be_bytes());
        v1.extend_from_slice(&4i64.to_be_bytes());
        v1.extend_from_slice(&[2, 0, 8]);
        v1.extend_from_slice(&7i64.to_be_bytes());
        v1.extend_from_slice(&[2, 2, 0, 2]);
        assert_eq!(&value.unwrap()[..], &v1[..]);

        // Empty writes a null partition list.
        let empty = TxnValue { state: TxnState::Empty, partitions: TxnPartitions::new(), start_ms: -1, ..ongoing() };
        let (_, v) = TxnRecord { transactional_id: "t".into(), value: Some(empty.clone()) }.encode(1);
        assert_eq!(v.as_ref().unwrap()[17], 0, "compact null");
        assert_eq!(TxnRecord::decode(&key, v.as_deref()).unwrap().value, Some(empty));
    }

    #[test]
    fn unknown_versions_states_and_tags() {
        let (key, value) = TxnRecord { transactional_id: "t".into(), value: Some(ongoing()) }.encode(1);
        let mut k = key.to_vec();
        k[1] = 1;
        assert_eq!(TxnRecord::decode(&k, None), Err(TxnError::UnknownKeyVersion(1)));
        let mut v = value.unwrap().to_vec();
        // A tag this version does not know is skipped.
        let last = v.len() - 1;
        assert_eq!(v[last], 0, "no tags");
        v[last] = 1;
        v.extend_from_slice(&[9, 2, 0xAB, 0xCD]);
        assert_eq!(TxnRecord::decode(&key, Some(&v)).unwrap().value, Some(ongoing()));
        // A transient state is never in a record.
        let mut dead = v.clone();
        dead[16] = 6;
        assert!(matches!(TxnRecord::decode(&key, Some(&dead)), Err(TxnError::Corrupt(_))));
        v[1] = 2;
        assert!(matches!(TxnRecord::decode(&key, Some(&v)), Err(TxnError::Corrupt(_))));
        assert_eq!(TxnRecord::decode(&key, None).unwrap().value, None, "a tombstone");
    }

    fn value() -> impl Strategy<Value = TxnValue> {
        let state = prop_oneof![
            Just(TxnState::Empty),
            Just(TxnState::Ongoing),
            Just(TxnState::PrepareCommit),
            Just(TxnState::PrepareAbort),
            Just(TxnState::CompleteCommit),
            Just(TxnState::CompleteAbort),
        ];
        let partitions =
            prop::collection::btree_map("[a-z._-]{1,12}", prop::collection::btree_set(0i32..100, 0..4), 0..4);
        (any::<i64>(), any::<i64>(), any::<i64>(), any::<i16>(), any::<i32>(), state, partitions, any::<i64>())
            .prop_map(|(pid, prev, next, epoch, timeout, state, partitions, ts)| TxnValue {
                producer_id: pid,
                prev_producer_id: prev,
                next_producer_id: next,
                producer_epoch: epoch,
                txn_timeout_ms: timeout,
                state,
                partitions: if state == TxnState::Empty { TxnPartitions::new() } else { partitions },
                last_update_ms: ts,
                start_ms: ts / 2,
                client_transaction_version: if pid % 2 == 0 { 2 } else { 0 },
            })
    }

    proptest! {
        #[test]
        fn version_1_round_trips(id in "[ -~]{1,40}", v in value()) {
            let rec = TxnRecord { transactional_id: id, value: Some(v) };
            let (key, value) = rec.encode(1);
            prop_assert_eq!(TxnRecord::decode(&key, value.as_deref()).unwrap(), rec);
        }

        #[test]
        fn version_0_keeps_what_it_has_room_for(v in value()) {
            let rec = TxnRecord { transactional_id: "x".into(), value: Some(v.clone()) };
            let (key, value) = rec.encode(0);
            let back = TxnRecord::decode(&key, value.as_deref()).unwrap().value.unwrap();
            let expected = TxnValue { prev_producer_id: -1, next_producer_id: -1, client_transaction_version: 0, ..v };
            prop_assert_eq!(back, expected);
        }

        #[test]
        fn damage_is_an_error_not_a_panic(v in value(), cut in any::<prop::sample::Index>(),
                                            junk in prop::collection::vec(any::<u8>(), 0..80)) {
            let (key, value) = TxnRecord { transactional_id: "x".into(), value: Some(v) }.encode(1);
            let value = value.unwrap();
            let cut = cut.index(value.len());
            prop_assert!(TxnRecord::decode(&key, Some(&value[..cut])).is_err());
            let _ = TxnRecord::decode(&key, Some(&junk));
            let _ = TxnRecord::decode(&junk, Some(&junk));
        }
    }
}
