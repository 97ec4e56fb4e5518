//! Shared bodies of Strata's fuzz targets. Each `fuzz_targets/*.rs` is a thin `fuzz_target!`
//! around one function here, so the checks can also be run by hand on a saved input.
//!
//! Every function states the properties it asserts; a failed assertion is a finding (a bug in
//! `crates/`, or a wrong property here — check which before reporting).
//!
//! # Layout
//! - [`request`]: request frames, raw and with a valid header for every supported API/version.
//! - [`batch`]: RecordBatch v2 views, CRC, record-level decoding (including decompression).
//! - [`log`]: opening a log whose files hold arbitrary bytes (recovery), then using it.
//! - [`security`]: SASL tokens, TLS client flights, certificate subjects, JAAS and mapping rules.

pub mod batch;
pub mod log;
pub mod request;
pub mod security;

/// A tiny cursor over the fuzzer's input for structure-aware targets: reads never fail, they
/// return zeros once the input is exhausted (so every input is meaningful).
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// The next byte, or 0.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next big-endian u16 (missing bytes read as 0).
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next big-endian u32 (missing bytes read as 0).
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }
}
