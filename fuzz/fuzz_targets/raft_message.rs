//! Raft messages in Caudal's framing, as a peer node would send them
//! (see `caudal_fuzz::raft_message`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caudal_fuzz::raft_message(data));
