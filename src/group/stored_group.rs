//! A group's generation and members as the offsets log keeps them (Kafka's
//! `GroupMetadataValue`): written when a rebalance ends (the group Stable) and when the
//! group empties, so a coordinator that takes the group over — its offsets partition's
//! new leader, or the shard after a restart — rebuilds it, and members carry on with
//! their generation (heartbeats and commits accepted) instead of rejoining.
//!
//! Record body (after the kind byte of `offsets::OffsetRecord`, in a value of version
//! 3): `{ group: str16, generation: i32, protocol_type, protocol, leader: nullable
//! str16, count: u32, members: { id: str16, instance_id: nullable str16, client_id,
//! client_host: str16, session_timeout_ms, rebalance_timeout_ms: i32, subscription,
//! assignment: bytes32 } }`.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{CodecResult, Reader, Writer};

use super::state::{Group, GroupState, Member};

/// One member as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    /// Member id.
    pub id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Its metadata for the group's protocol (the subscription).
    pub subscription: Bytes,
    /// Its assignment.
    pub assignment: Bytes,
}

/// A group as stored: its generation, protocol, leader and members (none: Empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    /// Group id.
    pub group: String,
    /// Generation.
    pub generation: i32,
    /// Protocol type ("consumer").
    pub protocol_type: Option<String>,
    /// Selected protocol (assignor).
    pub protocol: Option<String>,
    /// Leader's member id.
    pub leader: Option<String>,
    /// Members, with their assignments.
    pub members: Vec<StoredMember>,
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

impl StoredGroup {
    /// The stored form of `g`, when it is Stable or Empty (a rebalance under way is
    /// not stored: the last stable generation stands for it).
    pub fn of(g: &Group) -> Option<StoredGroup> {
        match g.state {
            GroupState::Stable | GroupState::Empty => Some(StoredGroup::stable(g)),
            _ => None,
        }
    }

    /// The stored form of `g` as the Stable group it becomes once its leader's
    /// assignment is stored (or as Empty, when it is).
    pub fn stable(g: &Group) -> StoredGroup {
        let members = match g.state {
            GroupState::Empty => Vec::new(),
            _ => {
                let protocol = g.protocol.clone().unwrap_or_default();
                g.members
                    .values()
                    .map(|m| StoredMember {
                        id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        session_timeout_ms: millis(m.session_timeout),
                        rebalance_timeout_ms: millis(m.rebalance_timeout),
                        subscription: m.metadata_for(&protocol),
                        assignment: m.assignment.clone(),
                    })
                    .collect()
            }
        };
        StoredGroup {
            group: g.id.clone(),
            generation: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            leader: g.leader.clone(),
            members,
        }
    }

    /// The group rebuilt: Stable with its members (each heard from now, so its session
    /// runs from the takeover), or Empty.
    pub fn rebuild(&self) -> Group {
        let mut g = Group::new(&self.group);
        g.generation = self.generation;
        g.protocol_type = self.protocol_type.clone();
        if self.members.is_empty() {
            return g;
        }
        g.state = GroupState::Stable;
        g.protocol = self.protocol.clone();
        g.leader = self.leader.clone();
        let now = Instant::now();
        let protocol = self.protocol.clone().unwrap_or_default();
        for m in &self.members {
            g.members.insert(
                m.id.clone(),
                Member {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout: Duration::from_millis(
                        u64::try_from(m.session_timeout_ms).unwrap_or(0),
                    ),
                    rebalance_timeout: Duration::from_millis(
                        u64::try_from(m.rebalance_timeout_ms).unwrap_or(0),
                    ),
                    protocols: vec![(protocol.clone(), m.subscription.clone())],
                    assignment: m.assignment.clone(),
                    last_seen: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        g
    }

    /// What a stored form says changed: the generation, and whether it has members.
    pub fn signature(&self) -> (i32, bool) {
        (self.generation, !self.members.is_empty())
    }

    /// Writes the record body.
    pub fn write_to(&self, w: &mut Writer) {
        w.put_str16(&self.group);
        w.put_i32(self.generation);
        w.put_nullable_str16(self.protocol_type.as_deref());
        w.put_nullable_str16(self.protocol.as_deref());
        w.put_nullable_str16(self.leader.as_deref());
        w.put_u32(u32::try_from(self.members.len()).unwrap_or(u32::MAX));
        for m in &self.members {
            w.put_str16(&m.id);
            w.put_nullable_str16(m.instance_id.as_deref());
            w.put_str16(&m.client_id);
            w.put_str16(&m.client_host);
            w.put_i32(m.session_timeout_ms);
            w.put_i32(m.rebalance_timeout_ms);
            w.put_bytes32(&m.subscription);
            w.put_bytes32(&m.assignment);
        }
    }

    /// Reads a record body written by [`StoredGroup::write_to`].
    pub fn read_from(r: &mut Reader<'_>) -> CodecResult<StoredGroup> {
        let group = r.take_str16()?;
        let generation = r.take_i32()?;
        let protocol_type = r.take_nullable_str16()?;
        let protocol = r.take_nullable_str16()?;
        let leader = r.take_nullable_str16()?;
        // Each member takes at least its fixed fields.
        let count = r.take_count(2 + 2 + 2 + 2 + 4 + 4 + 4 + 4)?;
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            members.push(StoredMember {
                id: r.take_str16()?,
                instance_id: r.take_nullable_str16()?,
                client_id: r.take_str16()?,
                client_host: r.take_str16()?,
                session_timeout_ms: r.take_i32()?,
                rebalance_timeout_ms: r.take_i32()?,
                subscription: Bytes::copy_from_slice(r.take_bytes32()?),
                assignment: Bytes::copy_from_slice(r.take_bytes32()?),
            });
        }
        Ok(StoredGroup {
            group,
            generation,
            protocol_type,
            protocol,
            leader,
            members,
        })
    }
}
