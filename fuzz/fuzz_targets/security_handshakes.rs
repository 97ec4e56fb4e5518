//! Arbitrary SASL tokens, TLS client flights, certificate subjects, JAAS entries and principal
//! mapping rules. See `strata_fuzz::security`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::security::security_input(data));
