//! libFuzzer entry point; the target itself is `shapesync_fuzz::pgoutput`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shapesync_fuzz::pgoutput::run(data));
