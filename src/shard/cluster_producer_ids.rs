//! Producer ids in a cluster: the controller hands them out in blocks (a controller-log
//! record moves its counter past each block), so no two producers anywhere get the same
//! id — not even from a node that lost its disk and started over, whose own counter
//! would begin again at zero. Each shard takes a block at a time through shard 0, which
//! asks the controller leader (itself, or over the wire) and waits for the answer.

use std::rc::Rc;

use tracing::debug;

use crate::cluster::wire::Control;
use crate::error::ErrorCode;

use super::mesh::{self, Everywhere};
use super::router::{ShardRequest, ShardResponse};
use super::state::Shard;

/// Producer ids a shard takes from the controller at a time.
pub const BLOCK: u64 = 1000;

impl Shard {
    /// A producer id no other producer of the cluster has, or the error InitProducerId
    /// answers (retriable while the controller is being elected).
    pub async fn cluster_producer_id(self: &Rc<Self>) -> Result<i64, ErrorCode> {
        let ids = &self.cluster_producer_ids;
        let _permit = ids
            .lock
            .acquire_permit(1)
            .await
            .map_err(|_| ErrorCode::UnknownServerError)?;
        if ids.next.get() >= ids.end.get() {
            let start = match &self.controller {
                Some(_) => self.producer_id_block().await?,
                None => {
                    match mesh::call(self, self.addr_of(0), ShardRequest::ProducerIdBlock).await {
                        Ok(ShardResponse::ProducerIdBlock(r)) => r?,
                        _ => return Err(ErrorCode::CoordinatorNotAvailable),
                    }
                }
            };
            ids.next.set(start);
            ids.end.set(start + BLOCK);
        }
        let id = ids.next.get();
        ids.next.set(id + 1);
        i64::try_from(id).map_err(|_| ErrorCode::UnknownServerError)
    }
}

impl Shard {
    /// On shard 0: the first id of a new block from the controller leader.
    pub async fn producer_id_block(self: &Rc<Self>) -> Result<u64, ErrorCode> {
        block_from_controller(self).await
    }
}

/// On shard 0: the first id of a new block from the controller leader.
async fn block_from_controller(shard: &Rc<Shard>) -> Result<u64, ErrorCode> {
    let Some(service) = shard.controller.as_ref() else {
        return Err(ErrorCode::CoordinatorNotAvailable);
    };
    if service.decides() {
        return service
            .allocate_producer_ids(BLOCK, &Everywhere(shard))
            .await
            .map_err(|(code, _)| code);
    }
    let Some(raft) = shard.raft.as_ref() else {
        return Err(ErrorCode::CoordinatorNotAvailable);
    };
    let targets = shard.controller_targets();
    let answer = shard
        .producer_id_requests
        .ask(|request| {
            for to in targets {
                raft.transport
                    .send_control(to, Control::AllocateProducerIds { request });
            }
        })
        .await;
    match answer {
        Some(start) if start > 0 => Ok(start),
        _ => {
            debug!("no producer id block from the controller leader in time");
            Err(ErrorCode::CoordinatorNotAvailable)
        }
    }
}
