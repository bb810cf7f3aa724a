//! What a replica needs to rebuild its state from storage: the newest state snapshot the
//! log holds and the producer batches after it.

use std::path::Path;
use std::rc::Rc;

use crate::protocol::record_batch::BatchHeader;

use super::error::LogResult;
use super::format::{segment_path, SNAPSHOT_SUFFIX};
use super::segment::Segment;
use super::storage::{Log, Recovered};
use super::Offset;

/// What a state rebuild needs of a segment, without borrowing it.
pub(super) struct SegmentRef {
    base_offset: Offset,
    file: Rc<crate::io::DmaFile>,
    size: u64,
}

pub(super) fn sealed_ref(s: &Segment) -> SegmentRef {
    SegmentRef {
        base_offset: s.base_offset,
        file: s.file.clone(),
        size: s.size,
    }
}

pub(super) fn sealed_refs(segments: &[Segment]) -> Vec<SegmentRef> {
    segments.iter().map(sealed_ref).collect()
}

/// The newest snapshot and the producer batches after it: the snapshot taken when the
/// active segment was created when there is one, else the newest usable one of a sealed
/// segment with every sealed segment after it scanned; the active segment's batches on
/// top.
pub(super) async fn recover_state(
    dir: &Path,
    segments: &[Segment],
    active_batches: Vec<BatchHeader>,
    interval: u64,
) -> LogResult<Recovered> {
    let Some((active, sealed)) = segments.split_last() else {
        return Ok(Recovered::default());
    };
    recover_state_from(
        dir,
        &sealed_refs(sealed),
        active.base_offset,
        active_batches,
        interval,
    )
    .await
}

pub(super) async fn recover_state_from(
    dir: &Path,
    sealed: &[SegmentRef],
    active_base: Offset,
    active_batches: Vec<BatchHeader>,
    interval: u64,
) -> LogResult<Recovered> {
    let load = |base: Offset| {
        let path = segment_path(dir, base, SNAPSHOT_SUFFIX);
        async move { crate::io::small_file::read_all(&path).await }
    };
    let mut recovered = Recovered {
        snapshot: load(active_base).await?,
        snapshot_offset: active_base,
        replay: Vec::new(),
    };
    if recovered.snapshot.is_none() {
        // Walk back to the newest snapshot, then replay the segments after it. (A snapshot
        // the replica cannot read leaves it with empty producer state, and a warning.)
        let mut start = 0;
        recovered.snapshot_offset = sealed.first().map_or(active_base, |s| s.base_offset);
        for (i, seg) in sealed.iter().enumerate().rev() {
            if let Some(t) = load(seg.base_offset).await? {
                recovered.snapshot = Some(t);
                recovered.snapshot_offset = seg.base_offset;
                start = i;
                break;
            }
        }
        for seg in &sealed[start..] {
            let scan =
                super::recovery::scan_segment(&seg.file, seg.size, seg.base_offset, interval)
                    .await?;
            recovered.replay.extend(scan.producer_batches);
        }
    }
    recovered.replay.extend(active_batches);
    Ok(recovered)
}

impl Log {
    /// The newest state snapshot and the producer batches after it, as of now.
    pub(super) async fn recover_current(&self) -> LogResult<Recovered> {
        let interval = self.config.borrow().index_interval_bytes;
        let (sealed, active) = {
            let st = self.state.borrow();
            let (active, sealed) = st.segments.split_last().expect("log has an active segment"); // unwrap: never empty
            (sealed_refs(sealed), sealed_ref(active))
        };
        let scan =
            super::recovery::scan_segment(&active.file, active.size, active.base_offset, interval)
                .await?;
        recover_state_from(
            &self.dir,
            &sealed,
            active.base_offset,
            scan.producer_batches,
            interval,
        )
        .await
    }
}
