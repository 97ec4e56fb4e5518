//! A valid header for a served (API key, version) picked by the first 4 bytes, then arbitrary
//! body bytes. See `strata_fuzz::request::keyed_frame`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::request::keyed_frame(data));
