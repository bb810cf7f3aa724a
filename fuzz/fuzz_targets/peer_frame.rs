//! Inter-node frames as a peer node would send them (see `caudal_fuzz::peer_frame`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caudal_fuzz::peer_frame(data));
