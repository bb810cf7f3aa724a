//! The controller as a handler reaches it from any shard: topic changes go to the
//! controller service (in place on its shard, over the mesh from the others), and
//! node-wide questions to every shard.

use std::rc::Rc;

use tracing::warn;

use crate::error::ErrorCode;
use crate::metadata::ShardAddr;

use super::controller::CONTROLLER_SHARD;
use super::mesh::{self, Everywhere};
use super::router::{
    CreateOutcome, MeshError, QuorumState, ShardRequest, ShardResponse, TopicChange, TopicSpec,
};
use super::state::Shard;

/// The controller, reached from one shard.
pub struct Controller<'a> {
    shard: &'a Rc<Shard>,
}

impl<'a> Controller<'a> {
    /// The controller reached from `shard`.
    pub fn new(shard: &'a Rc<Shard>) -> Self {
        Controller { shard }
    }

    /// Where the controller service runs.
    fn addr(&self) -> ShardAddr {
        self.shard.addr_of(CONTROLLER_SHARD)
    }

    /// Creates topics: placed, persisted and applied on every shard before this returns.
    pub async fn create_topics(
        &self,
        topics: Vec<TopicSpec>,
        validate_only: bool,
    ) -> Vec<CreateOutcome> {
        if let Some(service) = &self.shard.controller {
            return service
                .create_topics(topics, validate_only, &Everywhere(self.shard))
                .await;
        }
        let n = topics.len();
        let request = ShardRequest::CreateTopics {
            topics,
            validate_only,
        };
        match mesh::call(self.shard, self.addr(), request).await {
            Ok(ShardResponse::Created(r)) => r,
            other => vec![Err(unreachable_controller(self.addr(), other)); n],
        }
    }

    /// Deletes topics; every shard drops their partitions before this returns.
    pub async fn delete_topics(&self, names: Vec<String>) -> Vec<ErrorCode> {
        if let Some(service) = &self.shard.controller {
            return service.delete_topics(names, &Everywhere(self.shard)).await;
        }
        let n = names.len();
        match mesh::call(self.shard, self.addr(), ShardRequest::DeleteTopics(names)).await {
            Ok(ShardResponse::Deleted(r)) => r,
            other => vec![unreachable_controller(self.addr(), other).0; n],
        }
    }

    /// Changes a topic's configs or partition count.
    pub async fn update_topic(
        &self,
        name: String,
        change: TopicChange,
        validate_only: bool,
    ) -> Result<(), (ErrorCode, String)> {
        if self.shard.controller.is_some() {
            return self.shard.change_topic(name, change, validate_only).await;
        }
        let request = ShardRequest::UpdateTopic {
            name,
            change,
            validate_only,
        };
        match mesh::call(self.shard, self.addr(), request).await {
            Ok(ShardResponse::Updated(r)) => r,
            other => Err(unreachable_controller(self.addr(), other)),
        }
    }

    /// Starts a preferred-leader election of these raft groups on every node (the
    /// leaders hand leadership back where the preferred replica is caught up).
    pub async fn elect_preferred(&self, groups: Vec<u64>) {
        let request = ShardRequest::ElectPreferred {
            groups,
            everywhere: true,
        };
        if let Err(e) = mesh::call(self.shard, self.addr(), request).await {
            warn!(error = %e, "could not start a preferred-leader election");
        }
    }

    /// Starts moving partitions to new replica sets; one outcome per move.
    pub async fn reassign(
        &self,
        moves: Vec<(String, crate::metadata::PartitionId, Option<Vec<i32>>)>,
    ) -> Vec<Result<(), (ErrorCode, String)>> {
        let n = moves.len();
        match mesh::call(self.shard, self.addr(), ShardRequest::Reassign(moves)).await {
            Ok(ShardResponse::Reassigned(r)) => r,
            other => vec![Err(unreachable_controller(self.addr(), other)); n],
        }
    }

    /// The controller quorum as this node sees it.
    pub async fn quorum(&self) -> Result<QuorumState, (ErrorCode, String)> {
        match mesh::call(self.shard, self.addr(), ShardRequest::DescribeQuorum).await {
            Ok(ShardResponse::Quorum(q)) => Ok(q),
            other => Err(unreachable_controller(self.addr(), other)),
        }
    }

    /// Every group of every shard of this node: (id, protocol type, state).
    pub async fn list_groups(&self) -> Vec<(String, String, String)> {
        let mut groups = Vec::new();
        for k in 0..self.shard.config.shards {
            let to = self.shard.addr_of(k);
            match mesh::call(self.shard, to, ShardRequest::ListGroups).await {
                Ok(ShardResponse::Groups(g)) => groups.extend(g),
                Ok(other) => warn!(%to, response = ?other, "unexpected answer to ListGroups"),
                Err(e) => warn!(%to, error = %e, "could not list groups"),
            }
        }
        groups
    }
}

/// The error a handler answers with when the controller could not be asked.
fn unreachable_controller(
    at: ShardAddr,
    outcome: Result<ShardResponse, MeshError>,
) -> (ErrorCode, String) {
    let e = match outcome {
        Ok(_) => MeshError::Unexpected(at),
        Err(e) => e,
    };
    (ErrorCode::UnknownServerError, format!("controller: {e}"))
}
