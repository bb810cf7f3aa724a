//! A raft ConfState in Caudal's own codec: `{ voters, learners, voters_outgoing,
//! learners_next: (count u32, u64 each), auto_leave: u8 (0 or 1) }`, as `raft.state`,
//! the journal's raft records and `raft.snapshot` write it.

use raft::eraftpb::ConfState;

use crate::codec::{CodecError, CodecResult, Reader, Writer};

fn put_ids(p: &mut Writer, ids: &[u64]) {
    p.put_u32(ids.len() as u32);
    for id in ids {
        p.put_u64(*id);
    }
}

fn take_ids(r: &mut Reader<'_>) -> CodecResult<Vec<u64>> {
    let n = r.take_count(8)?;
    (0..n).map(|_| r.take_u64()).collect()
}

/// Writes `cs`.
pub fn put_conf_state(p: &mut Writer, cs: &ConfState) {
    put_ids(p, &cs.voters);
    put_ids(p, &cs.learners);
    put_ids(p, &cs.voters_outgoing);
    put_ids(p, &cs.learners_next);
    p.put_u8(u8::from(cs.auto_leave));
}

/// Reads a ConfState written by [`put_conf_state`].
pub fn take_conf_state(r: &mut Reader<'_>) -> CodecResult<ConfState> {
    Ok(ConfState {
        voters: take_ids(r)?,
        learners: take_ids(r)?,
        voters_outgoing: take_ids(r)?,
        learners_next: take_ids(r)?,
        auto_leave: match r.take_u8()? {
            0 => false,
            1 => true,
            _ => return Err(CodecError::Invalid("conf state auto_leave")),
        },
        ..ConfState::default()
    })
}
