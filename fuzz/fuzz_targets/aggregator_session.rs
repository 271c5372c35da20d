#![no_main]
//! See `inflight_core::fuzz::aggregator_session`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    inflight_core::fuzz::aggregator_session(data);
});
