//! Like `record_batch`, with every batch's CRC fixed up first so parsing reaches the records
//! and the decompressors. See `strata_fuzz::batch::fix_crcs`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::batch::batches(&strata_fuzz::batch::fix_crcs(data)));
