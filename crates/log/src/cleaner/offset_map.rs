//! The key → latest offset map the cleaner builds over a log's dirty section (Kafka's
//! `SkimpyOffsetMap`): keys are stored as 128-bit hashes, so its memory is bounded by the
//! number of distinct keys, never by their sizes.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Bytes one slot of the table takes: the 16-byte key hash, the 8-byte offset and one control
/// byte of the hash table.
pub const BYTES_PER_ENTRY: usize = 25;

/// Fraction of the buffer filled before the map counts as full
/// (Kafka's `log.cleaner.io.buffer.load.factor`).
const LOAD_FACTOR: f64 = 0.9;

/// Key hash → offset of the key's latest record seen, for at most [`OffsetMap::capacity`] keys.
#[derive(Debug)]
pub struct OffsetMap {
    map: HashMap<u128, i64>,
    capacity: usize,
    /// Offset after the last record put in the map (the dirty section covered so far).
    end: Option<i64>,
}

/// A 128-bit hash of a key: two SipHash-1-3 passes with different prefixes. A collision would
/// make the cleaner drop a key's latest record, so 64 bits would not be enough for the
/// billions of keys a large log can hold.
pub fn key_hash(key: &[u8]) -> u128 {
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0x5a)) << 64) | u128::from(half(0xa5))
}

impl OffsetMap {
    /// A map whose table fits in `buffer_bytes` (Kafka's `log.cleaner.dedupe.buffer.size`
    /// divided among the cleaner threads); at least one entry. The table (a power of two of
    /// slots, at most 7/8 of them used) grows with the keys put, doubling, so a log with few
    /// keys works in a table that stays in the CPU caches; it never grows past the buffer
    /// (while it doubles, the old table is held too) and is kept for the next log.
    pub fn with_buffer(buffer_bytes: usize) -> OffsetMap {
        let slots = buffer_bytes / BYTES_PER_ENTRY;
        let slots =
            if slots.is_power_of_two() { slots } else { slots.checked_next_power_of_two().map_or(slots, |p| p / 2) };
        let capacity = ((slots / 8 * 7) as f64 * LOAD_FACTOR) as usize;
        OffsetMap { map: HashMap::new(), capacity: capacity.max(1), end: None }
    }

    /// Most keys the map holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `more` further keys would still fit (each may be new).
    pub fn has_room_for(&self, more: usize) -> bool {
        self.map.len().saturating_add(more) <= self.capacity
    }

    /// Records that the latest record of `key` is at `offset`. Offsets must be put in
    /// increasing order.
    pub fn put(&mut self, key: &[u8], offset: i64) {
        self.map.insert(key_hash(key), offset);
    }

    /// Marks everything below `end` as covered by the map.
    pub fn covered_to(&mut self, end: i64) {
        self.end = Some(end);
    }

    /// Offset after the last record the map covers, if any was put.
    pub fn end(&self) -> Option<i64> {
        self.end
    }

    /// Offset of the latest record of `key`, if the map saw it.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        self.map.get(&key_hash(key)).copied()
    }

    /// Empties the map for the next log.
    pub fn clear(&mut self) {
        self.map.clear();
        self.end = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_offset_wins_and_capacity_follows_the_buffer() {
        let mut m = OffsetMap::with_buffer(BYTES_PER_ENTRY * 128);
        assert_eq!(m.capacity(), 100);
        m.clear();
        m.put(b"a", 1);
        m.put(b"b", 2);
        m.put(b"a", 7);
        assert_eq!((m.get(b"a"), m.get(b"b"), m.get(b"c")), (Some(7), Some(2), None));
        assert!(m.has_room_for(98) && !m.has_room_for(99));
        assert_ne!(key_hash(b"ab"), key_hash(b"ba"));
        m.clear();
        assert!(m.is_empty());
    }
}
