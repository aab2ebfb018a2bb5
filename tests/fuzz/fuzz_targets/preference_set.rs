//! Bytes → JSON → the preference-set parser, validator and writes (`targets::preference_set`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prefsd_fuzz::preference_set(data));
