//! Parsers of files read back at start: indexes, producer snapshots, the metadata log,
//! producer-id blocks, group offsets records, in every version the broker reads
//! (see `caudal_fuzz::disk_parsers`).
#![no_main]

extern "C" fn remove_scratch_dir() {
    caudal_fuzz::remove_scratch_dir();
}

libfuzzer_sys::fuzz_target!(
    init: {
        // libFuzzer ends a bounded run with exit(), which runs this.
        // SAFETY: registering a plain extern "C" function has no preconditions.
        unsafe { libc::atexit(remove_scratch_dir) };
    },
    |data: &[u8]| caudal_fuzz::disk_parsers(data)
);
