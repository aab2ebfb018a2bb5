//! Bytes → a hierarchy of sets, a workflow, channels and a context → `eval::decide`
//! (`targets::evaluate`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prefsd_fuzz::evaluate(data));
