//! libFuzzer entry point; the target itself is `shapesync_fuzz::shape_log`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shapesync_fuzz::shape_log::run(data));
