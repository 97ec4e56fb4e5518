//! Arbitrary bytes as a log directory's files, then open (recover), read, append, close or
//! crash, reopen. See `strata_fuzz::log` for the input layout and the properties checked.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::log::log_recovery(data));
