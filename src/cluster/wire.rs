//! Caudal's inter-node protocol on the wire: the frames shard k of one node sends to
//! shard k of another (docs/protocol.md, "Between nodes").
//!
//! A connection carries traffic one way: the node that has something to send dials,
//! opens with a [`Hello`], reads one [`HelloReply`], then sends frames until either side
//! closes. Every frame is `{ length: u32, crc32c: u32 (of the body), body }`, the body
//! `{ kind: u8, ... }`. A raft frame carries one round's messages for the destination,
//! in order; heartbeats and their responses, the bulk of an idle cluster's traffic, are
//! coalesced: each costs its group's id and a byte when nothing changed since the last
//! one on this connection, and `term`, `commit` and `context` otherwise (Redpanda's
//! "lightweight heartbeats"). Both ends keep the last full beat per group and kind for
//! the life of the connection, so a reconnect starts from full beats again.
//!
//! Decoding is bounds-checked and never panics (fuzzed by the `peer_frame` target): bytes
//! from a socket reach raft-rs only as messages this module rebuilt. Entries' data are
//! slices of the frame they came in, not copies.

use std::collections::HashMap;

use bytes::Bytes;
use raft::eraftpb::{Message, MessageType};

use crate::codec::{magic, CodecError, CodecResult, Reader, Writer};
use crate::metadata::TopicChange;
use crate::replica::raft_message;
use crate::replica::raft_shard::{GroupId, NodeId};

/// Version of the inter-node protocol this build speaks.
pub const VERSION: u16 = 3;

/// Largest frame accepted (a round's messages to one node; an append message carries at
/// most `max_size_per_msg` of entries, 1 MiB, and a round a few of them per group).
pub const MAX_FRAME: usize = 64 << 20;

/// Bytes before a frame's body: its length and checksum.
pub const FRAME_HEADER: usize = 8;

const KIND_RAFT: u8 = 1;
const KIND_CONTROL: u8 = 2;

/// Tags of control messages.
const CONTROL_REGISTER: u8 = 1;
const CONTROL_METADATA: u8 = 2;
const CONTROL_CREATE_TOPICS: u8 = 3;
const CONTROL_ALIVE: u8 = 4;
const CONTROL_ELECT_PREFERRED: u8 = 5;
const CONTROL_ALLOCATE_PRODUCER_IDS: u8 = 6;
const CONTROL_PRODUCER_ID_BLOCK: u8 = 7;
const CONTROL_MOVE_DONE: u8 = 8;
const CONTROL_UPDATE_TOPIC: u8 = 9;
const CONTROL_ANSWER: u8 = 10;

/// Tags of the items of a raft frame.
const ITEM_MESSAGE: u8 = 0;
const ITEM_BEAT_SAME: u8 = 1;
const ITEM_BEAT_FULL: u8 = 2;
const ITEM_BEAT_RESPONSE_SAME: u8 = 3;
const ITEM_BEAT_RESPONSE_FULL: u8 = 4;

/// What a dialing shard says first: who it is, whom it wants, and its node's disk
/// identity (a node restarted on an empty disk has a new one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version of the dialer.
    pub version: u16,
    /// The cluster both must belong to.
    pub cluster_id: String,
    /// The dialing node.
    pub from_node: NodeId,
    /// The node it means to reach.
    pub to_node: NodeId,
    /// The shard on both ends (placement aligns replicas by shard index).
    pub shard: u16,
    /// Random id of the dialer's data directory, made when it was first used.
    pub disk_id: [u8; 16],
}

/// The listener's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloReply {
    /// Frames may follow.
    Accepted,
    /// The connection is refused, and why (the dialer logs it and retries later).
    Refused(String),
}

impl Hello {
    /// The hello as a frame.
    pub fn encode(&self) -> Vec<u8> {
        let (at, mut w) = start_frame(Vec::new());
        w.put_raw(&magic::PEER_HELLO);
        w.put_u16(self.version);
        w.put_str16(&self.cluster_id);
        w.put_u64(self.from_node);
        w.put_u64(self.to_node);
        w.put_u16(self.shard);
        w.put_raw(&self.disk_id);
        end_frame(w, at)
    }

    /// Decodes a hello frame's body. Any version is read (the layout above the version
    /// never changes), so the listener can say which it speaks.
    pub fn decode(body: &[u8]) -> CodecResult<Hello> {
        let mut r = Reader::new(body);
        if r.take_bytes(4)? != magic::PEER_HELLO {
            return Err(CodecError::Invalid("not a Caudal peer (hello magic)"));
        }
        let hello = Hello {
            version: r.take_u16()?,
            cluster_id: r.take_str16()?,
            from_node: r.take_u64()?,
            to_node: r.take_u64()?,
            shard: r.take_u16()?,
            disk_id: r
                .take_bytes(16)?
                .try_into()
                .map_err(|_| CodecError::Invalid("disk id"))?,
        };
        r.finish()?;
        Ok(hello)
    }
}

impl HelloReply {
    /// The reply as a frame.
    pub fn encode(&self) -> Vec<u8> {
        let (at, mut w) = start_frame(Vec::new());
        match self {
            HelloReply::Accepted => w.put_u8(0),
            HelloReply::Refused(why) => {
                w.put_u8(1);
                w.put_str16(why);
            }
        }
        end_frame(w, at)
    }

    /// Decodes a reply frame's body.
    pub fn decode(body: &[u8]) -> CodecResult<HelloReply> {
        let mut r = Reader::new(body);
        let reply = match r.take_u8()? {
            0 => HelloReply::Accepted,
            1 => HelloReply::Refused(r.take_str16()?),
            _ => return Err(CodecError::Invalid("hello reply")),
        };
        r.finish()?;
        Ok(reply)
    }
}

/// Starts a frame at the end of `buf`: room for its header, then its body's writer
/// (the body is written in place, never copied into a frame afterwards).
fn start_frame(buf: Vec<u8>) -> (usize, Writer) {
    let at = buf.len();
    let mut w = Writer::appending(buf);
    w.put_u32(0);
    w.put_u32(0);
    (at, w)
}

/// Ends the frame started at `at`: its body's length and checksum go in its header.
fn end_frame(w: Writer, at: usize) -> Vec<u8> {
    let mut out = w.finish();
    let body = at + FRAME_HEADER;
    let len = (out.len() - body) as u32;
    let crc = crc32c::crc32c(&out[body..]);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    out[at + 4..body].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Reads a frame header: the body's length and checksum. Refuses a length past
/// [`MAX_FRAME`] before anything is allocated for it.
pub fn frame_header(header: &[u8; FRAME_HEADER]) -> CodecResult<(usize, u32)> {
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_FRAME {
        return Err(CodecError::Invalid("peer frame longer than 64 MiB"));
    }
    Ok((len, crc))
}

/// Checks a body read after its header.
pub fn check_body(body: &[u8], crc: u32) -> CodecResult<()> {
    if crc32c::crc32c(body) == crc {
        Ok(())
    } else {
        Err(CodecError::Checksum { at: 0 })
    }
}

/// A beat as coalesced: what may change between two beats of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Beat {
    term: u64,
    commit: u64,
    context: Bytes,
}

/// Whether `m` is a heartbeat or heartbeat response that a beat item carries whole:
/// nothing set but the fields a beat keeps (anything else goes as a full message).
fn as_beat(m: &Message, from: NodeId, to: NodeId) -> Option<(bool, Beat)> {
    let response = match m.msg_type {
        MessageType::MsgHeartbeat => false,
        MessageType::MsgHeartbeatResponse => true,
        _ => return None,
    };
    let plain = m.from == from
        && m.to == to
        && m.log_term == 0
        && m.index == 0
        && m.commit_term == 0
        && m.request_snapshot == 0
        && m.reject_hint == 0
        && !m.reject
        && m.priority == 0
        && m.entries.is_empty()
        && !m.has_snapshot();
    plain.then(|| {
        (
            response,
            Beat {
                term: m.term,
                commit: m.commit,
                context: m.context.clone(),
            },
        )
    })
}

/// One end's memory of the beats on a connection: the last full beat per group and kind.
#[derive(Debug, Default)]
pub struct BeatCache {
    last: HashMap<(GroupId, bool), Beat>,
}

/// What nodes tell each other beside raft, on shard 0's connections. In this part the
/// metadata is decided by one node (the controller node, the lowest id of `--peers`)
/// and pushed to the others; part 3 puts it in a raft group of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// A node's Kafka listeners and peer listener, sent to the controller leader until
    /// its metadata has them.
    Register {
        /// Host the node advertises to clients.
        host: String,
        /// Port of its shard 0's Kafka listener.
        port: u16,
        /// Its shard count.
        shards: u16,
        /// Host its peer listeners are reached at.
        peer_host: String,
        /// Port of its shard 0's peer listener.
        peer_port: u16,
    },
    /// The whole metadata as the controller node holds it (`metadata::store::snapshot`).
    Metadata(Bytes),
    /// Topics a client asked another node to auto-create: (name, partitions, replicas).
    CreateTopics(Vec<(String, i32, i16)>),
    /// Sent to every peer every second, and when the groups it leads change: the sender
    /// is up (brokers of nodes not heard from lately are left out of Metadata, as Kafka
    /// fences them), and leads these raft groups, with their terms, so that nodes that
    /// host no replica of a partition can name its leader.
    Alive {
        /// `(group, term)` of every group the sender leads.
        leading: Vec<(u64, u64)>,
    },
    /// A preferred-leader election (ElectLeaders): every node hands leadership of these
    /// raft groups, where it leads them, to their preferred replicas.
    ElectPreferred(Vec<u64>),
    /// To the controller leader: a block of producer ids, please.
    AllocateProducerIds {
        /// Matches the answer to the question.
        request: u64,
    },
    /// The controller leader's answer: the block starts at `start` (0: refused).
    ProducerIdBlock {
        /// The question's `request`.
        request: u64,
        /// First id of the block.
        start: u64,
    },
    /// To the controller leader: make this topic change (AlterConfigs, CreatePartitions
    /// that reached another node).
    UpdateTopic {
        /// Matches the answer to the question.
        request: u64,
        /// The topic.
        name: String,
        /// The change.
        change: TopicChange,
        /// Check only.
        validate_only: bool,
    },
    /// The controller leader's answer to a forwarded change: an error code (0: done)
    /// and a message.
    Answer {
        /// The question's `request`.
        request: u64,
        /// Kafka error code.
        code: i16,
        /// What went wrong, if anything.
        message: String,
    },
    /// To the controller leader, from a moving group's leader: its voters are now the
    /// move's target (sent until the move is recorded as over).
    MoveDone {
        /// The raft group.
        group: u64,
        /// Its voters.
        voters: Vec<u64>,
    },
}

/// A frame's contents.
#[derive(Debug)]
pub enum Frame {
    /// One round's raft messages.
    Raft(Vec<(GroupId, Message)>),
    /// A control message.
    Control(Control),
}

/// Encodes a control message as a frame, appended to `out`.
pub fn encode_control_into(out: Vec<u8>, c: &Control) -> Vec<u8> {
    let (at, mut w) = start_frame(out);
    w.put_u8(KIND_CONTROL);
    match c {
        Control::Register {
            host,
            port,
            shards,
            peer_host,
            peer_port,
        } => {
            w.put_u8(CONTROL_REGISTER);
            w.put_str16(host);
            w.put_u16(*port);
            w.put_u16(*shards);
            w.put_str16(peer_host);
            w.put_u16(*peer_port);
        }
        Control::Metadata(snapshot) => {
            w.put_u8(CONTROL_METADATA);
            w.put_bytes32(snapshot);
        }
        Control::Alive { leading } => {
            w.put_u8(CONTROL_ALIVE);
            w.put_u32(u32::try_from(leading.len()).unwrap_or(u32::MAX));
            for (group, term) in leading {
                w.put_u64(*group);
                w.put_u64(*term);
            }
        }
        Control::UpdateTopic {
            request,
            name,
            change,
            validate_only,
        } => {
            w.put_u8(CONTROL_UPDATE_TOPIC);
            w.put_u64(*request);
            w.put_str16(name);
            match change {
                TopicChange::SetConfigs(configs) => {
                    w.put_u8(1);
                    w.put_u16(u16::try_from(configs.len()).unwrap_or(u16::MAX));
                    for (k, v) in configs {
                        w.put_str16(k);
                        w.put_str16(v);
                    }
                }
                TopicChange::GrowPartitions(n) => {
                    w.put_u8(2);
                    w.put_i32(*n);
                }
            }
            w.put_u8(u8::from(*validate_only));
        }
        Control::Answer {
            request,
            code,
            message,
        } => {
            w.put_u8(CONTROL_ANSWER);
            w.put_u64(*request);
            w.put_u16(*code as u16);
            w.put_str16(message);
        }
        Control::MoveDone { group, voters } => {
            w.put_u8(CONTROL_MOVE_DONE);
            w.put_u64(*group);
            w.put_u32(u32::try_from(voters.len()).unwrap_or(u32::MAX));
            for v in voters {
                w.put_u64(*v);
            }
        }
        Control::AllocateProducerIds { request } => {
            w.put_u8(CONTROL_ALLOCATE_PRODUCER_IDS);
            w.put_u64(*request);
        }
        Control::ProducerIdBlock { request, start } => {
            w.put_u8(CONTROL_PRODUCER_ID_BLOCK);
            w.put_u64(*request);
            w.put_u64(*start);
        }
        Control::ElectPreferred(groups) => {
            w.put_u8(CONTROL_ELECT_PREFERRED);
            w.put_u32(u32::try_from(groups.len()).unwrap_or(u32::MAX));
            for g in groups {
                w.put_u64(*g);
            }
        }
        Control::CreateTopics(topics) => {
            w.put_u8(CONTROL_CREATE_TOPICS);
            w.put_u32(topics.len() as u32);
            for (name, partitions, replicas) in topics {
                w.put_str16(name);
                w.put_i32(*partitions);
                w.put_u16(*replicas as u16);
            }
        }
    }
    end_frame(w, at)
}

fn decode_control(r: &mut Reader<'_>, body: &Bytes) -> CodecResult<Control> {
    let c = match r.take_u8()? {
        CONTROL_REGISTER => Control::Register {
            host: r.take_str16()?,
            port: r.take_u16()?,
            shards: r.take_u16()?,
            peer_host: r.take_str16()?,
            peer_port: r.take_u16()?,
        },
        CONTROL_METADATA => Control::Metadata(body.slice_ref(r.take_bytes32()?)),
        CONTROL_CREATE_TOPICS => {
            // The smallest topic: an empty name, a count and a factor.
            let n = r.take_count(2 + 4 + 2)?;
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                topics.push((r.take_str16()?, r.take_i32()?, r.take_u16()? as i16));
            }
            Control::CreateTopics(topics)
        }
        CONTROL_ALIVE => {
            let n = r.take_count(16)?;
            let mut leading = Vec::with_capacity(n);
            for _ in 0..n {
                leading.push((r.take_u64()?, r.take_u64()?));
            }
            Control::Alive { leading }
        }
        CONTROL_UPDATE_TOPIC => {
            let request = r.take_u64()?;
            let name = r.take_str16()?;
            let change = match r.take_u8()? {
                1 => {
                    let n = r.take_count(4)?;
                    let mut configs = std::collections::BTreeMap::new();
                    for _ in 0..n {
                        let k = r.take_str16()?;
                        let v = r.take_str16()?;
                        configs.insert(k, v);
                    }
                    TopicChange::SetConfigs(configs)
                }
                2 => TopicChange::GrowPartitions(r.take_i32()?),
                _ => return Err(CodecError::Invalid("topic change kind")),
            };
            let validate_only = r.take_u8()? != 0;
            Control::UpdateTopic {
                request,
                name,
                change,
                validate_only,
            }
        }
        CONTROL_ANSWER => Control::Answer {
            request: r.take_u64()?,
            code: r.take_u16()? as i16,
            message: r.take_str16()?,
        },
        CONTROL_MOVE_DONE => {
            let group = r.take_u64()?;
            let n = r.take_count(8)?;
            let mut voters = Vec::with_capacity(n);
            for _ in 0..n {
                voters.push(r.take_u64()?);
            }
            Control::MoveDone { group, voters }
        }
        CONTROL_ALLOCATE_PRODUCER_IDS => Control::AllocateProducerIds {
            request: r.take_u64()?,
        },
        CONTROL_PRODUCER_ID_BLOCK => Control::ProducerIdBlock {
            request: r.take_u64()?,
            start: r.take_u64()?,
        },
        CONTROL_ELECT_PREFERRED => {
            let n = r.take_count(8)?;
            let mut groups = Vec::with_capacity(n);
            for _ in 0..n {
                groups.push(r.take_u64()?);
            }
            Control::ElectPreferred(groups)
        }
        _ => return Err(CodecError::Invalid("control message kind")),
    };
    r.finish()?;
    Ok(c)
}

/// Decodes any frame's body from node `from` to node `to` (see [`decode_raft`]).
pub fn decode_frame(
    from: NodeId,
    to: NodeId,
    body: &Bytes,
    received: &mut BeatCache,
) -> CodecResult<Frame> {
    match body.first() {
        Some(&KIND_CONTROL) => {
            let mut r = Reader::new(body);
            r.take_u8()?;
            decode_control(&mut r, body).map(Frame::Control)
        }
        _ => decode_raft(from, to, body, received).map(Frame::Raft),
    }
}

/// Encodes one round's messages from node `from` to node `to` as a raft frame, coalescing
/// beats against what `sent` remembers of this connection.
pub fn encode_raft(
    from: NodeId,
    to: NodeId,
    messages: &[(GroupId, Message)],
    sent: &mut BeatCache,
) -> Vec<u8> {
    encode_raft_into(Vec::new(), from, to, messages, sent)
}

/// [`encode_raft`], appending the frame to `out` (a sender writes several rounds in one
/// buffer; entries' data are copied once, into it).
pub fn encode_raft_into(
    out: Vec<u8>,
    from: NodeId,
    to: NodeId,
    messages: &[(GroupId, Message)],
    sent: &mut BeatCache,
) -> Vec<u8> {
    let (at, mut w) = start_frame(out);
    w.put_u8(KIND_RAFT);
    w.put_u32(messages.len() as u32);
    for (group, m) in messages {
        match as_beat(m, from, to) {
            Some((response, beat)) => {
                let same = sent.last.get(&(*group, response)) == Some(&beat);
                let tag = match (response, same) {
                    (false, true) => ITEM_BEAT_SAME,
                    (false, false) => ITEM_BEAT_FULL,
                    (true, true) => ITEM_BEAT_RESPONSE_SAME,
                    (true, false) => ITEM_BEAT_RESPONSE_FULL,
                };
                w.put_u8(tag);
                w.put_u64(group.0);
                if !same {
                    w.put_u64(beat.term);
                    w.put_u64(beat.commit);
                    w.put_bytes32(&beat.context);
                    sent.last.insert((*group, response), beat);
                }
            }
            None => {
                w.put_u8(ITEM_MESSAGE);
                w.put_u64(group.0);
                w.put_bytes32_with(|w| raft_message::encode_into(w, m));
            }
        }
    }
    end_frame(w, at)
}

/// Decodes a raft frame's body from node `from` to node `to`, expanding coalesced beats
/// from what `received` remembers of this connection. A beat that names a group the
/// connection has not seen a full beat of is an error: the sender is out of step.
pub fn decode_raft(
    from: NodeId,
    to: NodeId,
    body: &Bytes,
    received: &mut BeatCache,
) -> CodecResult<Vec<(GroupId, Message)>> {
    let mut r = Reader::new(body);
    if r.take_u8()? != KIND_RAFT {
        return Err(CodecError::Invalid("peer frame kind"));
    }
    // The smallest item is a tag and a group id.
    let n = r.take_count(9)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let tag = r.take_u8()?;
        let group = GroupId(r.take_u64()?);
        let m = match tag {
            ITEM_MESSAGE => {
                // Entries' data stay slices of the frame: no copy on the way in.
                let m = raft_message::decode_shared(&body.slice_ref(r.take_bytes32()?))?;
                if m.from != from || m.to != to {
                    return Err(CodecError::Invalid("raft message between other nodes"));
                }
                m
            }
            ITEM_BEAT_SAME | ITEM_BEAT_FULL | ITEM_BEAT_RESPONSE_SAME | ITEM_BEAT_RESPONSE_FULL => {
                let response = tag >= ITEM_BEAT_RESPONSE_SAME;
                let beat = if tag == ITEM_BEAT_SAME || tag == ITEM_BEAT_RESPONSE_SAME {
                    received
                        .last
                        .get(&(group, response))
                        .cloned()
                        .ok_or(CodecError::Invalid("beat of a group never beaten in full"))?
                } else {
                    let beat = Beat {
                        term: r.take_u64()?,
                        commit: r.take_u64()?,
                        context: Bytes::copy_from_slice(r.take_bytes32()?),
                    };
                    received.last.insert((group, response), beat.clone());
                    beat
                };
                Message {
                    msg_type: if response {
                        MessageType::MsgHeartbeatResponse
                    } else {
                        MessageType::MsgHeartbeat
                    },
                    from,
                    to,
                    term: beat.term,
                    commit: beat.commit,
                    context: beat.context,
                    ..Message::default()
                }
            }
            _ => return Err(CodecError::Invalid("raft frame item")),
        };
        out.push((group, m));
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(term: u64, commit: u64, response: bool) -> Message {
        Message {
            msg_type: if response {
                MessageType::MsgHeartbeatResponse
            } else {
                MessageType::MsgHeartbeat
            },
            from: 1,
            to: 2,
            term,
            commit,
            ..Message::default()
        }
    }

    fn body(frame: &[u8]) -> Bytes {
        let header: [u8; FRAME_HEADER] = frame[..FRAME_HEADER].try_into().unwrap();
        let (len, crc) = frame_header(&header).unwrap();
        let body = &frame[FRAME_HEADER..];
        assert_eq!(body.len(), len);
        check_body(body, crc).unwrap();
        Bytes::copy_from_slice(body)
    }

    #[test]
    fn unchanged_beats_cost_their_group_id_and_decode_whole() {
        let mut sent = BeatCache::default();
        let mut received = BeatCache::default();
        let round: Vec<(GroupId, Message)> = (0..100)
            .map(|g| (GroupId(g), beat(3, 40 + g, g % 2 == 0)))
            .collect();
        let first = encode_raft(1, 2, &round, &mut sent);
        assert_eq!(
            decode_raft(1, 2, &body(&first), &mut received).unwrap(),
            round
        );
        let again = encode_raft(1, 2, &round, &mut sent);
        // A tag and a group id each, after the kind and the count.
        assert_eq!(again.len(), FRAME_HEADER + 1 + 4 + 100 * 9);
        assert!(first.len() > again.len() * 3);
        assert_eq!(
            decode_raft(1, 2, &body(&again), &mut received).unwrap(),
            round
        );
        // One group moves on: only it is sent in full.
        let mut next = round.clone();
        next[7].1.commit += 1;
        let moved = encode_raft(1, 2, &next, &mut sent);
        assert_eq!(moved.len(), again.len() + 8 + 8 + 4);
        assert_eq!(
            decode_raft(1, 2, &body(&moved), &mut received).unwrap(),
            next
        );
    }

    #[test]
    fn other_messages_travel_whole_and_in_order() {
        let mut sent = BeatCache::default();
        let mut received = BeatCache::default();
        let append = Message {
            msg_type: MessageType::MsgAppend,
            from: 1,
            to: 2,
            term: 4,
            index: 9,
            log_term: 3,
            commit: 8,
            entries: vec![raft::eraftpb::Entry {
                term: 4,
                index: 10,
                data: Bytes::from_static(b"batch"),
                ..Default::default()
            }]
            .into(),
            ..Message::default()
        };
        let mut rejected = beat(4, 8, true);
        rejected.reject = true;
        let round = vec![
            (GroupId(1), beat(4, 8, false)),
            (GroupId(1), append),
            (GroupId(2), rejected),
            (GroupId(1), beat(4, 8, false)),
        ];
        let f = encode_raft(1, 2, &round, &mut sent);
        let frame = body(&f);
        let decoded = decode_raft(1, 2, &frame, &mut received).unwrap();
        assert_eq!(decoded, round);
        // The entry's data is a slice of the frame, not a copy.
        let data = decoded[1].1.entries[0].data.as_ptr() as usize;
        let start = frame.as_ptr() as usize;
        assert!((start..start + frame.len()).contains(&data));
    }

    #[test]
    fn a_beat_without_its_full_form_or_for_other_nodes_is_refused() {
        let mut sent = BeatCache::default();
        let round = vec![(GroupId(5), beat(2, 1, false))];
        encode_raft(1, 2, &round, &mut sent);
        let same = encode_raft(1, 2, &round, &mut sent);
        let err = decode_raft(1, 2, &body(&same), &mut BeatCache::default()).unwrap_err();
        assert!(err.to_string().contains("never beaten in full"), "{err}");
        let other = Message {
            msg_type: MessageType::MsgAppend,
            from: 1,
            to: 3,
            term: 2,
            ..Message::default()
        };
        let f = encode_raft(1, 3, &[(GroupId(5), other)], &mut BeatCache::default());
        assert!(decode_raft(1, 2, &body(&f), &mut BeatCache::default()).is_err());
    }

    #[test]
    fn alive_carries_the_groups_its_sender_leads() {
        for leading in [vec![], vec![(7, 3), (u64::MAX, 1)]] {
            let c = Control::Alive { leading };
            let frame = body(&encode_control_into(Vec::new(), &c));
            match decode_frame(1, 2, &frame, &mut BeatCache::default()).unwrap() {
                Frame::Control(back) => assert_eq!(back, c),
                other => panic!("not a control frame: {other:?}"),
            }
        }
    }

    #[test]
    fn hello_and_reply_round_trip_and_strangers_are_refused() {
        let hello = Hello {
            version: VERSION,
            cluster_id: "c1".into(),
            from_node: 3,
            to_node: 1,
            shard: 0,
            disk_id: [7; 16],
        };
        assert_eq!(Hello::decode(&body(&hello.encode())).unwrap(), hello);
        for reply in [
            HelloReply::Accepted,
            HelloReply::Refused("wrong cluster".into()),
        ] {
            assert_eq!(HelloReply::decode(&body(&reply.encode())).unwrap(), reply);
        }
        // A Kafka client speaking to the peer port.
        assert!(Hello::decode(b"\x00\x12\x00\x03\x00\x00\x00\x07").is_err());
        let mut too_long = [0u8; FRAME_HEADER];
        too_long[..4].copy_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(frame_header(&too_long).is_err());
    }
}
