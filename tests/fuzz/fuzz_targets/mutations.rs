//! libFuzzer entry point; the target itself is `shapesync_fuzz::mutations`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shapesync_fuzz::mutations::run(data));
