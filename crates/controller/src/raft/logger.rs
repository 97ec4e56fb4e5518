//! raft-rs logs through `slog`; this drain hands its records to `tracing` (target
//! `strata::raft`), key-value pairs included, so one subscriber sees everything.

use std::fmt::Write as _;

use slog::{Drain, Key, OwnedKVList, Record, Serializer, KV};

/// A `slog` drain that emits each record as a `tracing` event at the matching level.
struct TracingDrain;

/// Collects a record's key-value pairs as `key=value` text.
struct Pairs(String);

impl Serializer for Pairs {
    fn emit_arguments(&mut self, key: Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let sep = if self.0.is_empty() { "" } else { " " };
        let _ = write!(self.0, "{sep}{key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut pairs = Pairs(String::new());
        let _ = record.kv().serialize(record, &mut pairs);
        let _ = values.serialize(record, &mut pairs);
        let msg = record.msg();
        let kv = pairs.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "strata::raft", %kv, "{msg}"),
            slog::Level::Warning => tracing::warn!(target: "strata::raft", %kv, "{msg}"),
            slog::Level::Info => tracing::info!(target: "strata::raft", %kv, "{msg}"),
            slog::Level::Debug => tracing::debug!(target: "strata::raft", %kv, "{msg}"),
            slog::Level::Trace => tracing::trace!(target: "strata::raft", %kv, "{msg}"),
        }
        Ok(())
    }
}

/// The logger to give raft-rs: everything goes to `tracing`.
pub fn logger(node_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!("raft_id" => node_id))
}
