//! Changes a node hands to the controller leader over the wire, and the answers it waits
//! for: shard 0 numbers each question, sends it to the leader (or to every voter while
//! none is known) and wakes the asker when the answer with that number comes back, or
//! gives up after a bound. Topic changes that reach a node outside the leader
//! (AlterConfigs, CreatePartitions: Kafka's brokers forward those to their controller)
//! go this way; so do producer id blocks (`cluster_producer_ids`). The questions wait in
//! `cluster_state::Awaiting`.

use std::rc::Rc;

use crate::cluster::wire::Control;
use crate::error::ErrorCode;

use super::mesh::Everywhere;
use super::router::TopicChange;
use super::state::Shard;

impl Shard {
    /// On shard 0: makes a topic change here when this node's service decides (or on a
    /// single node), else has the controller leader make it.
    pub async fn change_topic(
        self: &Rc<Self>,
        name: String,
        change: TopicChange,
        validate_only: bool,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(service) = self.controller.as_ref() else {
            return Err((ErrorCode::NotController, "not shard 0".into()));
        };
        if service.decides() || !self.in_cluster() {
            service
                .update_topic(name, change, validate_only, &Everywhere(self))
                .await
        } else {
            update_topic(self, name, change, validate_only).await
        }
    }
}

/// On shard 0 of a node that does not lead the controller: has the leader make a topic
/// change, and returns its outcome.
async fn update_topic(
    shard: &Rc<Shard>,
    name: String,
    change: TopicChange,
    validate_only: bool,
) -> Result<(), (ErrorCode, String)> {
    let Some(raft) = shard.raft.as_ref() else {
        return Err((ErrorCode::NotController, "not a node of a cluster".into()));
    };
    let targets = shard.controller_targets();
    let answer = shard
        .topic_answers
        .ask(|request| {
            for to in targets {
                raft.transport.send_control(
                    to,
                    Control::UpdateTopic {
                        request,
                        name: name.clone(),
                        change: change.clone(),
                        validate_only,
                    },
                );
            }
        })
        .await;
    match answer {
        Some((0, _)) => Ok(()),
        Some((code, message)) => Err((error_code(code), message)),
        None => Err((
            ErrorCode::RequestTimedOut,
            "the controller leader did not answer in time".into(),
        )),
    }
}

/// The error code a forwarded answer carries.
fn error_code(code: i16) -> ErrorCode {
    [
        ErrorCode::NotController,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::InvalidPartitions,
        ErrorCode::InvalidConfig,
        ErrorCode::InvalidRequest,
        ErrorCode::RequestTimedOut,
        ErrorCode::KafkaStorageError,
    ]
    .into_iter()
    .find(|c| c.code() == code)
    .unwrap_or(ErrorCode::UnknownServerError)
}
