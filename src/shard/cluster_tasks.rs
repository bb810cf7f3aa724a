//! The two background tasks of a node of a cluster:
//!
//! - every shard publishes its raft groups' changes to the node's `LeaderTable` and
//!   wakes its long-polling fetches;
//! - shard 0 exchanges the metadata: the controller node (the lowest id of `--peers`)
//!   records every node's Kafka listeners as they register and sends the whole metadata
//!   to the others whenever it changes and every few seconds (so a node that was down
//!   catches up); the other nodes register until the metadata names them, adopt what the
//!   controller node sends, and hand it the topics their clients auto-create.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use crate::cluster::wire::Control;
use crate::metadata::store::{decode_snapshot, snapshot};
use crate::metadata::BrokerEndpoint;

use super::mesh::Everywhere;
use super::router::TopicSpec;
use super::state::Shard;

/// How often the controller node resends the metadata, and other nodes their listeners
/// until the metadata has them.
const RESEND: Duration = Duration::from_secs(2);

/// Every shard of a node: publishes its raft groups' changes to the node's leader table
/// and wakes the shard's long-polling fetches. Runs until the shard stops.
pub async fn publish_leadership(shard: Rc<Shard>) {
    let Some(raft) = shard.raft.as_ref() else {
        return;
    };
    loop {
        let changed: Vec<(u64, _)> = raft
            .driver
            .take_changed()
            .into_iter()
            .map(|(g, v)| (g.0, v))
            .collect();
        if !changed.is_empty() {
            raft.leaders.update(&changed);
            shard.data_arrived.notify();
        }
        raft.driver.changed().await;
    }
}

/// Shard 0 of a node of a cluster: exchanges the metadata with the other nodes (see the
/// module docs). Runs until the shard stops.
pub async fn exchange_metadata(shard: Rc<Shard>) {
    let (Some(raft), Some(service)) = (shard.raft.as_ref(), shard.controller.as_ref()) else {
        return;
    };
    let transport = raft.transport.clone();
    let me = shard.config.node_id;
    let controller = shard.controller_node();
    let decides = service.decides();
    let publish = Everywhere(&shard);
    if decides {
        if let Err(e) = service
            .register_broker(me, shard.own_endpoint(), &publish)
            .await
        {
            warn!(error = %e, "could not record this node's listeners in the metadata log");
        }
    }
    let mut sent_version = None;
    let mut refused = false;
    let mut next_resend = Instant::now();
    loop {
        let arrived = transport.inbox().control_arrived.generation();
        let changed = service.changed.generation();
        for (from, c) in transport.inbox().take_control() {
            let from = i32::try_from(from).unwrap_or(i32::MAX);
            match c {
                Control::Register { host, port, shards } if decides => {
                    let endpoint = BrokerEndpoint { host, port, shards };
                    if let Err(e) = service.register_broker(from, endpoint, &publish).await {
                        warn!(node = from, error = %e, "could not record a node's listeners");
                    }
                }
                Control::Metadata(bytes) if !decides && from == controller => {
                    match decode_snapshot(&bytes) {
                        Ok(meta) => {
                            match service.adopt_sent(meta, &publish).await {
                                Ok(()) => refused = false,
                                // Said once, not every resend.
                                Err(e) if !refused => {
                                    refused = true;
                                    warn!(error = %e, "the controller node's metadata was not adopted");
                                }
                                Err(_) => {}
                            }
                        }
                        Err(e) => warn!(error = %e, "bad metadata from the controller node"),
                    }
                }
                Control::CreateTopics(topics) if decides => {
                    let specs = topics
                        .into_iter()
                        .map(|(name, partitions, replication_factor)| TopicSpec {
                            name,
                            partitions,
                            configs: Default::default(),
                            replication_factor,
                        })
                        .collect();
                    service.create_topics(specs, false, &publish).await;
                }
                other => debug!(node = from, message = ?other, "control message not for this node"),
            }
        }
        let now = Instant::now();
        let resend = now >= next_resend;
        if resend {
            next_resend = now + RESEND;
        }
        if decides {
            let meta = service.metadata();
            if resend || sent_version != Some(meta.version) {
                sent_version = Some(meta.version);
                let bytes = Bytes::from(snapshot(&meta));
                for peer in transport.peers() {
                    transport.send_control(peer, Control::Metadata(bytes.clone()));
                }
            }
        } else if resend && shard.meta().brokers.get(&me) != Some(&shard.own_endpoint()) {
            let e = shard.own_endpoint();
            transport.send_control(
                u64::try_from(controller).unwrap_or(0),
                Control::Register {
                    host: e.host,
                    port: e.port,
                    shards: e.shards,
                },
            );
        }
        let wait = next_resend.saturating_duration_since(Instant::now());
        futures_lite::future::or(
            crate::task::sleep(wait),
            futures_lite::future::or(
                transport.inbox().control_arrived.changed_since(arrived),
                service.changed.changed_since(changed),
            ),
        )
        .await;
    }
}
