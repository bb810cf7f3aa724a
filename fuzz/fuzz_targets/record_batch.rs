//! The record-batch validator and the walks over runs of batches
//! (see `caudal_fuzz::record_batch`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caudal_fuzz::record_batch(data));
