//! Configuration changes of a raft group (adding a learner, promoting it, removing a
//! voter), as entries of its log. raft-rs writes a proposed change as protobuf bytes;
//! they reach other nodes inside entries, so this module reads them back itself — a
//! bounded reader of the three fields a `ConfChangeV2` has — rather than handing bytes
//! from a socket to the protobuf 2 parser (RUSTSEC-2024-0437).

use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};

/// Why a configuration change entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    /// The bytes end inside a field.
    #[error("configuration change entry truncated")]
    Truncated,
    /// A field is not what a `ConfChangeV2` holds.
    #[error("configuration change entry: {0}")]
    Invalid(&'static str),
}

/// A change of several nodes at once: simple when it moves at most one voter, joint
/// consensus (left automatically) otherwise, as raft-rs decides.
pub fn proposal(changes: &[(ConfChangeType, u64)]) -> ConfChangeV2 {
    let mut cc = ConfChangeV2 {
        transition: ConfChangeTransition::Auto,
        ..ConfChangeV2::default()
    };
    for &(change_type, node_id) in changes {
        cc.mut_changes().push(ConfChangeSingle {
            change_type,
            node_id,
            ..ConfChangeSingle::default()
        });
    }
    cc
}

/// Reads a `ConfChangeV2` entry's data (empty data is the change that leaves a joint
/// configuration).
pub fn decode(data: &[u8]) -> Result<ConfChangeV2, ConfChangeError> {
    let mut cc = ConfChangeV2::default();
    let mut r = data;
    while !r.is_empty() {
        let key = varint(&mut r)?;
        match (key >> 3, key & 7) {
            (1, 0) => {
                cc.transition = match varint(&mut r)? {
                    0 => ConfChangeTransition::Auto,
                    1 => ConfChangeTransition::Implicit,
                    2 => ConfChangeTransition::Explicit,
                    _ => return Err(ConfChangeError::Invalid("transition")),
                }
            }
            (2, 2) => {
                let mut single = bytes(&mut r)?;
                let mut change = ConfChangeSingle::default();
                while !single.is_empty() {
                    let key = varint(&mut single)?;
                    match (key >> 3, key & 7) {
                        (1, 0) => {
                            change.change_type = match varint(&mut single)? {
                                0 => ConfChangeType::AddNode,
                                1 => ConfChangeType::RemoveNode,
                                2 => ConfChangeType::AddLearnerNode,
                                _ => return Err(ConfChangeError::Invalid("change type")),
                            }
                        }
                        (2, 0) => change.node_id = varint(&mut single)?,
                        (_, wire) => skip(&mut single, wire)?,
                    }
                }
                cc.mut_changes().push(change);
            }
            (3, 2) => cc.context = bytes::Bytes::copy_from_slice(bytes(&mut r)?),
            (_, wire) => skip(&mut r, wire)?,
        }
    }
    Ok(cc)
}

fn varint(r: &mut &[u8]) -> Result<u64, ConfChangeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = r.split_first().ok_or(ConfChangeError::Truncated)?;
        *r = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ConfChangeError::Invalid("varint longer than 10 bytes"))
}

fn bytes<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], ConfChangeError> {
    let len = usize::try_from(varint(r)?).map_err(|_| ConfChangeError::Truncated)?;
    let (b, rest) = r.split_at_checked(len).ok_or(ConfChangeError::Truncated)?;
    *r = rest;
    Ok(b)
}

fn skip(r: &mut &[u8], wire: u64) -> Result<(), ConfChangeError> {
    let n = match wire {
        0 => return varint(r).map(|_| ()),
        1 => 8,
        2 => return bytes(r).map(|_| ()),
        5 => 4,
        _ => return Err(ConfChangeError::Invalid("wire type")),
    };
    *r = r.get(n..).ok_or(ConfChangeError::Truncated)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message as _;

    #[test]
    fn reads_back_what_raft_writes() {
        let cases = [
            proposal(&[(ConfChangeType::AddLearnerNode, 4)]),
            proposal(&[
                (ConfChangeType::AddNode, 4),
                (ConfChangeType::RemoveNode, 1),
                (ConfChangeType::AddNode, 300),
            ]),
            ConfChangeV2::default(),
        ];
        for cc in cases {
            let data = cc.write_to_bytes().unwrap();
            assert_eq!(decode(&data).unwrap(), cc);
        }
    }

    #[test]
    fn refuses_damage_without_panicking() {
        let data = proposal(&[(ConfChangeType::AddNode, 1 << 40)])
            .write_to_bytes()
            .unwrap();
        for cut in 1..data.len() {
            assert!(decode(&data[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[0x08, 9]).is_err(), "unknown transition");
        assert!(decode(&[0xff; 11]).is_err(), "endless varint");
    }
}
