//! Frame size check, header peek and every request decoder (see `caudal_fuzz::frame`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caudal_fuzz::frame(data));
