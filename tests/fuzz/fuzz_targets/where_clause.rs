//! libFuzzer entry point; the target itself is `shapesync_fuzz::where_clause`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shapesync_fuzz::where_clause::run(data));
