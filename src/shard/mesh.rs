//! Requests between shards, both sides: [`call`] addresses a shard (this one is served
//! in place, others through the shard's transport), [`serve`] answers what arrives, and
//! [`Everywhere`] publishes the controller's metadata to every shard.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use tracing::warn;

use crate::metadata::{ClusterMetadata, ShardAddr};

use super::controller::Publish;
use super::router::{MeshError, MeshResult, ShardRequest, ShardResponse};
use super::state::Shard;

/// Sends `request` to `to` and waits for the answer; served in place when `to` is this
/// shard.
pub async fn call(
    shard: &Rc<Shard>,
    to: ShardAddr,
    request: ShardRequest,
) -> MeshResult<ShardResponse> {
    if to == shard.addr() {
        // Boxed: a request served here may itself call another shard.
        match Box::pin(serve(shard.clone(), request)).await {
            ShardResponse::Failed(e) => Err(e),
            response => Ok(response),
        }
    } else {
        shard.mesh.call(to, request).await
    }
}

/// Answers a request that arrived from another shard (or from this one).
pub async fn serve(shard: Rc<Shard>, request: ShardRequest) -> ShardResponse {
    let everywhere = Everywhere(&shard);
    let controller = shard.controller.as_ref();
    let not_controller = || ShardResponse::Failed(MeshError::NotController(shard.addr()));
    match request {
        ShardRequest::CreateTopics {
            topics,
            validate_only,
        } => match controller {
            Some(c) => {
                ShardResponse::Created(c.create_topics(topics, validate_only, &everywhere).await)
            }
            None => not_controller(),
        },
        ShardRequest::DeleteTopics(names) => match controller {
            Some(c) => ShardResponse::Deleted(c.delete_topics(names, &everywhere).await),
            None => not_controller(),
        },
        ShardRequest::UpdateTopic {
            name,
            change,
            validate_only,
        } => match controller {
            // Kafka's brokers forward topic changes to their controller.
            Some(_) => {
                ShardResponse::Updated(shard.change_topic(name, change, validate_only).await)
            }
            None => not_controller(),
        },
        ShardRequest::ListGroups => ShardResponse::Groups(
            shard
                .coordinator
                .get()
                .into_iter()
                .cloned()
                .chain(shard.group_coordinators.all())
                .flat_map(|c| c.list())
                .collect(),
        ),
        ShardRequest::DescribeQuorum => match controller {
            Some(c) => {
                let mut q = c.quorum_state(&shard.config.controller_voters()).await;
                if q.leader.is_none() {
                    // A node outside the quorum knows the leader from its metadata.
                    q.leader = shard.controller_node().filter(|_| shard.in_cluster());
                }
                ShardResponse::Quorum(q)
            }
            None => not_controller(),
        },
        ShardRequest::MovesDone(moved) => {
            report_moves(&shard, moved).await;
            ShardResponse::Done
        }
        ShardRequest::Reassign(moves) => match controller {
            Some(c) => ShardResponse::Reassigned(c.reassign(moves, &everywhere).await),
            None => not_controller(),
        },
        ShardRequest::ProducerIdBlock => {
            ShardResponse::ProducerIdBlock(shard.producer_id_block().await)
        }
        ShardRequest::ElectPreferred { groups, everywhere } => {
            elect_preferred(&shard, groups, everywhere).await;
            ShardResponse::Done
        }
        ShardRequest::ApplyMetadata(meta) => match shard.apply_metadata(meta).await {
            Ok(()) => ShardResponse::Applied,
            Err(source) => {
                warn!(shard = shard.id, error = %source, "applying metadata failed");
                ShardResponse::Failed(MeshError::Apply {
                    at: shard.addr(),
                    source,
                })
            }
        },
    }
}

/// Publishes the controller's metadata to every shard of this node, from `shard`.
pub struct Everywhere<'a>(pub &'a Rc<Shard>);

impl Publish for Everywhere<'_> {
    fn publish(&self, meta: Arc<ClusterMetadata>) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(broadcast(self.0, meta))
    }
}

/// Has every shard apply `meta`, all at once, and waits for all of them.
async fn broadcast(shard: &Rc<Shard>, meta: Arc<ClusterMetadata>) {
    let mut tasks = Vec::new();
    for k in 0..shard.config.shards {
        let shard = shard.clone();
        let meta = meta.clone();
        let to = shard.addr_of(k);
        tasks.push(crate::task::spawn(async move {
            (
                to,
                call(&shard, to, ShardRequest::ApplyMetadata(meta)).await,
            )
        }));
    }
    for t in tasks {
        let (to, outcome) = t.await;
        match outcome {
            Ok(ShardResponse::Applied) => {}
            Ok(other) => warn!(%to, response = ?other, "shard did not apply metadata"),
            Err(e) => warn!(%to, error = %e, "shard did not apply metadata"),
        }
    }
}

/// Serves [`ShardRequest::ElectPreferred`]: asks this shard's raft loop to hand the
/// groups back; with `everywhere` (on shard 0) first tells every other node and every
/// other shard of this one.
pub async fn elect_preferred(shard: &Rc<Shard>, groups: Vec<u64>, everywhere: bool) {
    let Some(raft) = shard.raft.as_ref() else {
        return;
    };
    if everywhere {
        for peer in raft.transport.peers() {
            raft.transport.send_control(
                peer,
                crate::cluster::wire::Control::ElectPreferred(groups.clone()),
            );
        }
        for k in (0..shard.config.shards).filter(|&k| k != shard.id) {
            let request = ShardRequest::ElectPreferred {
                groups: groups.clone(),
                everywhere: false,
            };
            if let Err(e) = call(shard, shard.addr_of(k), request).await {
                warn!(shard = k, error = %e, "could not pass on a preferred-leader election");
            }
        }
    }
    raft.driver.hand_back(
        groups
            .into_iter()
            .map(crate::replica::raft_shard::GroupId)
            .collect(),
    );
}

/// On shard 0: tells the controller leader (this node's service, or over the wire) that
/// these moving groups have their target voters.
pub async fn report_moves(shard: &Rc<Shard>, moved: Vec<(u64, Vec<u64>)>) {
    let (Some(service), Some(raft)) = (shard.controller.as_ref(), shard.raft.as_ref()) else {
        return;
    };
    for (group, voters) in moved {
        if service.decides() {
            let nodes = voters
                .iter()
                .map(|&v| i32::try_from(v).unwrap_or(i32::MAX))
                .collect();
            if let Err((_, e)) = service
                .reassignment_done(group, nodes, &Everywhere(shard))
                .await
            {
                warn!(group, error = %e, "could not record the end of a move");
            }
        } else {
            for to in shard.controller_targets() {
                raft.transport.send_control(
                    to,
                    crate::cluster::wire::Control::MoveDone {
                        group,
                        voters: voters.clone(),
                    },
                );
            }
        }
    }
}
