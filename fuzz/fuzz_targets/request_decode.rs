//! Arbitrary bytes as one request frame body (and as a framed stream). See `strata_fuzz::request`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::request::request_frame(data));
