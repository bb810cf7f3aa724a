//! The background tasks of a node of a cluster:
//!
//! - every shard publishes its raft groups' changes to the node's `LeaderTable` and
//!   wakes its long-polling fetches;
//! - shard 0 of a controller voter applies the controller log as it commits;
//! - shard 0 exchanges the metadata: every node registers its Kafka listeners with the
//!   controller leader until the metadata has them and hands it the topics its clients
//!   auto-create; the leader sends its metadata to the nodes outside the quorum whenever
//!   it changes and every few seconds (so a node that was down catches up), and those
//!   adopt it.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use crate::cluster::wire::Control;
use crate::metadata::controller_log::CONTROLLER_GROUP;
use crate::metadata::store::{decode_snapshot, snapshot};
use crate::metadata::BrokerEndpoint;
use crate::replica::raft_shard::GroupId;

use super::mesh::Everywhere;
use super::router::TopicSpec;
use super::state::Shard;

/// How often the controller leader resends the metadata, and other nodes their
/// listeners until the metadata has them.
const RESEND: Duration = Duration::from_secs(2);
/// How often a node tells every peer it is up.
const ALIVE_EVERY: Duration = Duration::from_secs(1);
/// Wait before applying the controller log again after failing to.
const APPLY_RETRY: Duration = Duration::from_secs(1);

/// How often a controller voter cuts the applied part of its controller log.
const COMPACT_EVERY: Duration = Duration::from_secs(5);

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
        let moved: Vec<(u64, Vec<u64>)> = raft
            .driver
            .take_moved()
            .into_iter()
            .map(|(g, v)| (g.0, v))
            .collect();
        if !moved.is_empty() {
            let request = super::router::ShardRequest::MovesDone(moved);
            if let Err(e) = super::mesh::call(&shard, shard.addr_of(0), request).await {
                warn!(error = %e, "could not report finished moves");
            }
            continue;
        }
        raft.driver.changed().await;
    }
}

/// Shard 0 of a controller voter: applies the controller log's committed records as
/// they come, publishing each new state to every shard. Runs until the shard stops.
pub async fn apply_controller_log(shard: Rc<Shard>) {
    let (Some(raft), Some(service)) = (shard.raft.as_ref(), shard.controller.as_ref()) else {
        return;
    };
    let publish = Everywhere(&shard);
    let mut next_compaction = Instant::now() + COMPACT_EVERY;
    loop {
        if Instant::now() >= next_compaction {
            next_compaction = Instant::now() + COMPACT_EVERY;
            // The log before what the metadata holds is cut (whole sealed segments); a
            // voter behind the cut is sent the metadata as a snapshot.
            let applied = i64::try_from(service.revision()).unwrap_or(i64::MAX);
            match raft
                .driver
                .compact(GroupId(CONTROLLER_GROUP), applied)
                .await
            {
                Ok(Some(start)) => debug!(start, "controller log cut"),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "could not cut the controller log"),
            }
        }
        let generation = raft.driver.generation();
        match service.apply_committed(&publish).await {
            Ok(true) => continue,
            Ok(false) => {
                // Nothing to apply: wait for the group to change, or for the next cut.
                let cut_due = next_compaction.saturating_duration_since(Instant::now());
                futures_lite::future::or(
                    raft.driver.changed_since(generation),
                    crate::task::sleep(cut_due),
                )
                .await
            }
            Err(e) => {
                warn!(error = %e, "could not apply the controller log; retrying");
                crate::task::sleep(APPLY_RETRY).await;
            }
        }
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
    let voters = shard.config.controller_voters();
    let publish = Everywhere(&shard);
    let mut sent_revision = None;
    let mut refused = false;
    let mut next_resend = Instant::now();
    let mut next_alive = Instant::now();
    let me_node = u64::try_from(me).unwrap_or(0);
    let mut sent_leading = Vec::new();
    loop {
        let arrived = transport.inbox().control_arrived.generation();
        let changed = service.changed.generation();
        let decides = service.decides();
        for (from, c) in transport.inbox().take_control() {
            let node = i32::try_from(from).unwrap_or(i32::MAX);
            match c {
                Control::Register {
                    host,
                    port,
                    shards,
                    peer_host,
                    peer_port,
                } if decides => {
                    let endpoint = BrokerEndpoint { host, port, shards };
                    let peer = (peer_host, peer_port);
                    if let Err((_, e)) = service
                        .register_broker(node, endpoint, peer, &publish)
                        .await
                    {
                        warn!(node, error = %e, "could not record a node's listeners");
                    }
                }
                Control::Metadata(bytes) if !voters.contains(&u64::try_from(me).unwrap_or(0)) => {
                    match decode_snapshot(&bytes) {
                        Ok(meta) => {
                            // The sender leads the controller (or did): clients are told so.
                            raft.leaders.set_leader(CONTROLLER_GROUP, Some(from));
                            match service.adopt_sent(meta, &publish).await {
                                Ok(()) => refused = false,
                                // Said once, not every resend.
                                Err(e) if !refused => {
                                    refused = true;
                                    warn!(error = %e, "the controller's metadata was not adopted");
                                }
                                Err(_) => {}
                            }
                        }
                        Err(e) => warn!(node, error = %e, "bad metadata from the controller"),
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
                // Its arrival says the sender is up (recorded below); what it leads
                // names leaders for the partitions this node hosts no replica of.
                Control::Alive { leading } => raft.leaders.told(from, &leading),
                Control::AllocateProducerIds { request } if decides => {
                    let start = service
                        .allocate_producer_ids(super::cluster_producer_ids::BLOCK, &publish)
                        .await
                        .unwrap_or(0);
                    transport.send_control(from, Control::ProducerIdBlock { request, start });
                }
                Control::UpdateTopic {
                    request,
                    name,
                    change,
                    validate_only,
                } if decides => {
                    let (code, message) = match service
                        .update_topic(name, change, validate_only, &publish)
                        .await
                    {
                        Ok(()) => (0, String::new()),
                        Err((code, message)) => (code.code(), message),
                    };
                    transport.send_control(
                        from,
                        Control::Answer {
                            request,
                            code,
                            message,
                        },
                    );
                }
                Control::Answer {
                    request,
                    code,
                    message,
                } => shard.topic_answers.answered(request, (code, message)),
                Control::MoveDone { group, voters } if decides => {
                    super::mesh::report_moves(&shard, vec![(group, voters)]).await;
                }
                Control::ProducerIdBlock { request, start } => {
                    shard.producer_id_requests.answered(request, start);
                }
                Control::ElectPreferred(groups) => {
                    super::mesh::elect_preferred(&shard, groups.clone(), false).await;
                    for k in (1..shard.config.shards).filter(|&k| k != shard.id) {
                        let request = super::router::ShardRequest::ElectPreferred {
                            groups: groups.clone(),
                            everywhere: false,
                        };
                        if let Err(e) = super::mesh::call(&shard, shard.addr_of(k), request).await {
                            warn!(shard = k, error = %e, "could not pass on a preferred-leader election");
                        }
                    }
                }
                other => debug!(node, message = ?other, "control message not for this node"),
            }
        }
        let now = Instant::now();
        let leading = raft.leaders.led_by(me_node);
        if now >= next_alive || leading != sent_leading {
            next_alive = now + ALIVE_EVERY;
            for peer in transport.peers() {
                transport.send_control(
                    peer,
                    Control::Alive {
                        leading: leading.clone(),
                    },
                );
            }
            sent_leading = leading;
            raft.liveness.record(&transport.inbox().last_heard());
        }
        let resend = now >= next_resend;
        if resend {
            next_resend = now + RESEND;
        }
        let own_peer = shard.own_peer_address();
        let registered = shard.is_registered();
        if decides {
            if !registered {
                if let Err((_, e)) = service
                    .register_broker(me, shard.own_endpoint(), own_peer, &publish)
                    .await
                {
                    debug!(error = %e, "could not record this node's listeners yet");
                }
            }
            if resend || sent_revision != Some(service.revision()) {
                let meta = service.metadata();
                sent_revision = Some(meta.revision);
                let bytes = Bytes::from(snapshot(&meta));
                for peer in transport
                    .peers()
                    .into_iter()
                    .filter(|p| !voters.contains(p))
                {
                    transport.send_control(peer, Control::Metadata(bytes.clone()));
                }
            }
        } else {
            sent_revision = None;
            if resend && !registered {
                let e = shard.own_endpoint();
                for to in shard.controller_targets() {
                    transport.send_control(
                        to,
                        Control::Register {
                            host: e.host.clone(),
                            port: e.port,
                            shards: e.shards,
                            peer_host: own_peer.0.clone(),
                            peer_port: own_peer.1,
                        },
                    );
                }
            }
        }
        let wait = next_resend
            .min(next_alive)
            .saturating_duration_since(Instant::now());
        futures_lite::future::or(
            crate::task::sleep(wait),
            futures_lite::future::or(
                transport.inbox().control_arrived.changed_since(arrived),
                // Also woken when the controller's leader changes.
                service.changed.changed_since(changed),
            ),
        )
        .await;
    }
}
