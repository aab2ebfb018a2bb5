//! Bytes → one JSON-RPC request into the daemon's method table on a temp database, in
//! process (`targets::Requests`).
#![no_main]

use std::sync::OnceLock;

static REQUESTS: OnceLock<prefsd_fuzz::Requests> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = REQUESTS.get_or_init(prefsd_fuzz::Requests::new).run(data);
});
