//! Arbitrary bytes as concatenated RecordBatch v2. See `strata_fuzz::batch::batches`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::batch::batches(data));
