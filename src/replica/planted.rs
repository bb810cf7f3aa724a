//! Deliberate bugs, for proving that the history checker of the fault tests catches
//! what it should (tests/clients/test_nemesis.py). Only a debug build honours them, and
//! only when `CAUDAL_PLANTED_BUG` names one; a release build compiles them out.

/// Whether acks=all produces are answered once the leader has the batch, before the
/// raft group commits it (`CAUDAL_PLANTED_BUG=ack-before-commit`): a leader cut off from
/// its followers then acknowledges batches that a new leader never had.
pub fn ack_before_commit() -> bool {
    planted("ack-before-commit")
}

/// Whether storing a group's new generation fails (`CAUDAL_PLANTED_BUG=group-store-fails`):
/// not a bug but a fault, standing in for a coordinator that loses its offsets
/// partition while a rebalance completes, which a test cannot time.
pub fn group_store_fails() -> bool {
    planted("group-store-fails")
}

#[cfg(debug_assertions)]
fn planted(bug: &str) -> bool {
    thread_local! {
        static PLANTED: Option<String> = std::env::var("CAUDAL_PLANTED_BUG").ok();
    }
    PLANTED.with(|p| p.as_deref() == Some(bug))
}

#[cfg(not(debug_assertions))]
fn planted(_bug: &str) -> bool {
    false
}
