//! The controller's metadata as the state of its raft group's snapshots. The controller
//! log is cut once its records are applied (its segments are small:
//! `--metadata-log-segment-bytes`), so a voter that was away longer gets a snapshot:
//! the leader's metadata, whose revision is at or past the cut. The raft loop keeps it in
//! the controller log's directory, and the apply task adopts it (as an observer adopts
//! what the controller leader sends) when its own revision is behind the log's start:
//! `ControllerService::apply_committed`.

use std::rc::Weak;

use crate::metadata::store::snapshot;
use crate::replica::raft_snapshot::SnapshotState;

use super::state::Shard;

/// The [`SnapshotState`] of the controller group: shard 0's controller service.
pub struct ControllerSnapshots {
    /// The shard (weak: the shard owns the raft loop that holds this).
    pub shard: Weak<Shard>,
}

impl SnapshotState for ControllerSnapshots {
    fn take(&self) -> Vec<u8> {
        self.shard
            .upgrade()
            .and_then(|s| s.controller.as_ref().map(|c| snapshot(&c.metadata())))
            .unwrap_or_default()
    }
}
