//! Which other nodes of the cluster are up, as this node last heard: shard 0 hears from
//! every live peer at least every second (`Control::Alive`) and copies when here; every
//! shard reads it to leave nodes that went quiet out of the brokers clients are told of,
//! as Kafka leaves out a broker whose session lapsed (clients would otherwise keep
//! dialling a dead node, which some, such as kafkajs's fetch loop, never give up on).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::replica::raft_shard::NodeId;

/// How long a node stays listed after it was last heard from (Kafka's
/// `broker.session.timeout.ms` is 9 s; a node that is up is heard every second).
pub const SESSION: Duration = Duration::from_secs(6);

/// When each peer was last heard from.
#[derive(Debug, Default)]
pub struct PeerLiveness {
    heard: Mutex<BTreeMap<NodeId, Instant>>,
}

impl PeerLiveness {
    /// Takes the latest times a shard's connections heard from its peers.
    pub fn record(&self, heard: &BTreeMap<NodeId, Instant>) {
        let mut mine = match self.heard.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (&node, &at) in heard {
            let e = mine.entry(node).or_insert(at);
            *e = (*e).max(at);
        }
    }

    /// True when `node` was heard from within [`SESSION`].
    pub fn is_up(&self, node: NodeId) -> bool {
        let heard = match self.heard.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        heard.get(&node).is_some_and(|t| t.elapsed() <= SESSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_up_while_heard_from_within_the_session() {
        let l = PeerLiveness::default();
        assert!(!l.is_up(2), "never heard from");
        let now = Instant::now();
        l.record(&BTreeMap::from([(2, now)]));
        assert!(l.is_up(2));
        if let Some(long_ago) = now.checked_sub(SESSION * 2) {
            l.record(&BTreeMap::from([(3, long_ago)]));
            assert!(!l.is_up(3), "quiet for longer than the session");
            // An older time never replaces a newer one.
            l.record(&BTreeMap::from([(2, long_ago)]));
            assert!(l.is_up(2));
        }
    }
}
