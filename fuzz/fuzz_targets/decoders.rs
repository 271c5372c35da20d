#![no_main]
//! See `inflight_core::fuzz::decoders`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| inflight_core::fuzz::decoders(data));
