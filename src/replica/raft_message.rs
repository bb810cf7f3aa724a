//! Raft messages on the wire, in Caudal's own framing: raft-rs 0.7's own codec is
//! protobuf 2, whose parser can be crashed by hostile input (RUSTSEC-2024-0437, fixed only
//! in unreleased versions), so bytes from a socket never reach it. Decoding here is
//! bounds-checked by [`crate::codec::Reader`]: it never panics and never allocates more
//! than the input could hold (fuzzed by `fuzz/fuzz_targets/raft_message.rs`).
//!
//! Layout, version 1 (all integers big-endian): `{ version: u8, msg_type: u8, to, from,
//! term, log_term, index, commit, commit_term, request_snapshot, reject_hint: u64,
//! reject: u8, priority: i64, context: bytes32, entries: u32 count of { entry_type: u8,
//! term, index: u64, data, context: bytes32, sync_log: u8 }, snapshot: u8 present, then
//! { data: bytes32, metadata: u8 present, then { index, term: u64, conf_state: u8
//! present, then { voters, learners, voters_outgoing, learners_next: u32 count of u64,
//! auto_leave: u8 } } } }`. The deprecated priority field is not carried.

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata};

use crate::codec::{CodecError, CodecResult, Reader, Writer};

use super::conf_state_codec::{put_conf_state, take_conf_state};

const VERSION: u8 = 1;

/// Every message type, by its wire number (raft-rs's own numbering).
const MESSAGE_TYPES: [MessageType; 19] = [
    MessageType::MsgHup,
    MessageType::MsgBeat,
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgUnreachable,
    MessageType::MsgSnapStatus,
    MessageType::MsgCheckQuorum,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

const ENTRY_TYPES: [EntryType; 3] = [
    EntryType::EntryNormal,
    EntryType::EntryConfChange,
    EntryType::EntryConfChangeV2,
];

fn put_bool(w: &mut Writer, b: bool) {
    w.put_u8(u8::from(b));
}

fn take_bool(r: &mut Reader<'_>) -> CodecResult<bool> {
    match r.take_u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(CodecError::Invalid("boolean")),
    }
}

/// Encodes `m`.
pub fn encode(m: &Message) -> Vec<u8> {
    let mut w = Writer::new();
    encode_into(&mut w, m);
    w.finish()
}

/// Appends `m`, as [`encode`] writes it, to `w` (a frame of many messages is written
/// once, entries' data copied straight into it).
pub fn encode_into(w: &mut Writer, m: &Message) {
    w.put_u8(VERSION);
    w.put_u8(m.msg_type as u8);
    for v in [
        m.to,
        m.from,
        m.term,
        m.log_term,
        m.index,
        m.commit,
        m.commit_term,
        m.request_snapshot,
        m.reject_hint,
    ] {
        w.put_u64(v);
    }
    put_bool(w, m.reject);
    w.put_i64(m.priority);
    w.put_bytes32(&m.context);
    w.put_u32(m.entries.len() as u32);
    for e in m.entries.iter() {
        w.put_u8(e.entry_type as u8);
        w.put_u64(e.term);
        w.put_u64(e.index);
        w.put_bytes32(&e.data);
        w.put_bytes32(&e.context);
        put_bool(w, e.sync_log);
    }
    put_bool(w, m.has_snapshot());
    if m.has_snapshot() {
        let s = m.get_snapshot();
        w.put_bytes32(&s.data);
        put_bool(w, s.has_metadata());
        if s.has_metadata() {
            let md = s.get_metadata();
            w.put_u64(md.index);
            w.put_u64(md.term);
            put_bool(w, md.has_conf_state());
            if md.has_conf_state() {
                let cs = md.get_conf_state();
                put_conf_state(w, cs);
            }
        }
    }
}

/// Decodes a message written by [`encode`]; refuses anything else with an error.
pub fn decode(data: &[u8]) -> CodecResult<Message> {
    decode_with(data, Bytes::copy_from_slice)
}

/// [`decode`], with the entries' data as slices of `data` instead of copies (a frame
/// read off a socket is kept whole while raft holds the entries).
pub fn decode_shared(data: &Bytes) -> CodecResult<Message> {
    decode_with(data, |part| data.slice_ref(part))
}

fn decode_with(data: &[u8], share: impl Fn(&[u8]) -> Bytes) -> CodecResult<Message> {
    let mut r = Reader::new(data);
    if r.take_u8()? != VERSION {
        return Err(CodecError::Invalid("raft message version"));
    }
    let mut m = Message {
        msg_type: *MESSAGE_TYPES
            .get(usize::from(r.take_u8()?))
            .ok_or(CodecError::Invalid("raft message type"))?,
        to: r.take_u64()?,
        from: r.take_u64()?,
        term: r.take_u64()?,
        log_term: r.take_u64()?,
        index: r.take_u64()?,
        commit: r.take_u64()?,
        commit_term: r.take_u64()?,
        request_snapshot: r.take_u64()?,
        reject_hint: r.take_u64()?,
        reject: take_bool(&mut r)?,
        priority: r.take_i64()?,
        context: Bytes::copy_from_slice(r.take_bytes32()?),
        ..Message::default()
    };
    // The smallest entry is 1 + 8 + 8 + 4 + 4 + 1 bytes.
    let n = r.take_count(26)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(Entry {
            entry_type: *ENTRY_TYPES
                .get(usize::from(r.take_u8()?))
                .ok_or(CodecError::Invalid("raft entry type"))?,
            term: r.take_u64()?,
            index: r.take_u64()?,
            data: share(r.take_bytes32()?),
            context: Bytes::copy_from_slice(r.take_bytes32()?),
            sync_log: take_bool(&mut r)?,
            ..Entry::default()
        });
    }
    m.entries = entries.into();
    if take_bool(&mut r)? {
        let mut s = Snapshot {
            data: share(r.take_bytes32()?),
            ..Snapshot::default()
        };
        if take_bool(&mut r)? {
            let mut md = SnapshotMetadata {
                index: r.take_u64()?,
                term: r.take_u64()?,
                ..SnapshotMetadata::default()
            };
            if take_bool(&mut r)? {
                md.set_conf_state(take_conf_state(&mut r)?);
            }
            s.set_metadata(md);
        }
        m.set_snapshot(s);
    }
    r.finish()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::ConfState;
    use rand::{Rng, SeedableRng};

    fn random_bytes(rng: &mut rand::rngs::StdRng, max: usize) -> Bytes {
        let n = rng.gen_range(0..=max);
        Bytes::from((0..n).map(|_| rng.gen()).collect::<Vec<u8>>())
    }

    /// A message with every field set at random (snapshot parts present or not).
    pub(crate) fn random_message(seed: u64) -> Message {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut m = Message {
            msg_type: MESSAGE_TYPES[rng.gen_range(0..MESSAGE_TYPES.len())],
            to: rng.gen(),
            from: rng.gen(),
            term: rng.gen(),
            log_term: rng.gen(),
            index: rng.gen(),
            commit: rng.gen(),
            commit_term: rng.gen(),
            request_snapshot: rng.gen(),
            reject_hint: rng.gen(),
            reject: rng.gen(),
            priority: rng.gen(),
            context: random_bytes(&mut rng, 8),
            ..Message::default()
        };
        let entries: Vec<Entry> = (0..rng.gen_range(0..5))
            .map(|_| Entry {
                entry_type: ENTRY_TYPES[rng.gen_range(0..3)],
                term: rng.gen(),
                index: rng.gen(),
                data: random_bytes(&mut rng, 64),
                context: random_bytes(&mut rng, 4),
                sync_log: rng.gen(),
                ..Entry::default()
            })
            .collect();
        m.entries = entries.into();
        if rng.gen() {
            let mut s = Snapshot {
                data: random_bytes(&mut rng, 32),
                ..Snapshot::default()
            };
            if rng.gen() {
                let mut md = SnapshotMetadata {
                    index: rng.gen(),
                    term: rng.gen(),
                    ..SnapshotMetadata::default()
                };
                if rng.gen() {
                    let ids = |rng: &mut rand::rngs::StdRng| {
                        (0..rng.gen_range(0..4))
                            .map(|_| rng.gen())
                            .collect::<Vec<u64>>()
                    };
                    md.set_conf_state(ConfState {
                        voters: ids(&mut rng),
                        learners: ids(&mut rng),
                        voters_outgoing: ids(&mut rng),
                        learners_next: ids(&mut rng),
                        auto_leave: rng.gen(),
                        ..ConfState::default()
                    });
                }
                s.set_metadata(md);
            }
            m.set_snapshot(s);
        }
        m
    }

    #[test]
    fn every_field_survives_a_round_trip() {
        for seed in 0..500 {
            let m = random_message(seed);
            assert_eq!(decode(&encode(&m)).unwrap(), m, "seed {seed}");
        }
    }

    #[test]
    fn truncated_or_padded_messages_are_refused() {
        let bytes = encode(&random_message(7));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(decode(&padded).is_err());
        let mut bad_type = bytes;
        bad_type[1] = 200;
        assert!(decode(&bad_type).is_err());
    }
}
