//! libFuzzer target: the body is `sentinel::fuzz::jwt`, which `cargo test` also replays over
//! the seeds and saved regressions.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sentinel::fuzz::jwt(data));
