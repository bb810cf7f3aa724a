//! The cluster's static membership: `--peers 1@host:port,2@host:port,3@host:port` names
//! every node (this one too) and the port its shard 0 takes inter-node connections on;
//! shard k listens on `port + k`, as the Kafka listeners do.

use std::collections::BTreeSet;
use std::str::FromStr;

/// One node of the cluster as `--peers` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node's id (raft's: never 0).
    pub node: u64,
    /// Host its peer listeners are reached at.
    pub host: String,
    /// Port of its shard 0's peer listener.
    pub port: u16,
}

impl Peer {
    /// `host:port` of shard `shard`'s peer listener.
    pub fn shard_addr(&self, shard: usize) -> String {
        let port = usize::from(self.port) + shard;
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

/// The value of `--peers`: every node, in node order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerList(pub Vec<Peer>);

impl FromStr for PeerList {
    type Err = String;

    fn from_str(text: &str) -> Result<PeerList, String> {
        parse_peers(text).map(PeerList)
    }
}

/// Parses `--peers`: comma-separated `id@host:port`, ids distinct and non-zero.
pub fn parse_peers(text: &str) -> Result<Vec<Peer>, String> {
    let mut peers = Vec::new();
    let mut ids = BTreeSet::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('@')
            .ok_or_else(|| format!("peer {item:?}: expected id@host:port"))?;
        let node: u64 = id
            .parse()
            .map_err(|_| format!("peer {item:?}: node id {id:?} is not a number"))?;
        if node == 0 {
            return Err(format!("peer {item:?}: node ids start at 1 in a cluster"));
        }
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("peer {item:?}: expected host:port after @"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("peer {item:?}: empty host"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("peer {item:?}: port {port:?} is not a port number"))?;
        if !ids.insert(node) {
            return Err(format!("peer {item:?}: node {node} is named twice"));
        }
        peers.push(Peer {
            node,
            host: host.to_string(),
            port,
        });
    }
    peers.sort_by_key(|p| p.node);
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_in_node_order_with_their_shard_ports() {
        let peers = parse_peers("3@10.0.0.3:9300, 1@node1:9300,2@[::1]:9400").unwrap();
        assert_eq!(
            peers.iter().map(|p| p.node).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(peers[0].shard_addr(2), "node1:9302");
        assert_eq!(peers[1].shard_addr(0), "[::1]:9400");
    }

    #[test]
    fn bad_peer_lists_say_what_is_wrong() {
        for (text, says) in [
            ("1@a:1,1@b:2", "named twice"),
            ("0@a:1", "start at 1"),
            ("x@a:1", "not a number"),
            ("1@a", "host:port"),
            ("1:a:9", "id@host:port"),
            ("1@a:99999", "port number"),
        ] {
            let err = parse_peers(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
