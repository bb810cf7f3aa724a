//! Changes a node hands to the controller leader over the wire, and the answers it waits
//! for: shard 0 numbers each question, sends it to the leader (or to every voter while
//! none is known) and wakes the asker when the answer with that number comes back, or
//! gives up after a bound. Topic changes that reach a node outside the leader
//! (AlterConfigs, CreatePartitions: Kafka's brokers forward those to their controller)
//! go this way; so do producer id blocks (`cluster_producer_ids`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use crate::cluster::wire::Control;
use crate::error::ErrorCode;
use crate::task::local_channel;

use super::router::TopicChange;
use super::state::Shard;

/// How long shard 0 waits for the controller leader to answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Questions waiting for their answers, by number.
pub struct Awaiting<T> {
    next: Cell<u64>,
    waiting: RefCell<HashMap<u64, local_channel::LocalSender<T>>>,
}

impl<T> Default for Awaiting<T> {
    fn default() -> Self {
        Awaiting {
            next: Cell::new(0),
            waiting: RefCell::new(HashMap::new()),
        }
    }
}

impl<T: 'static> Awaiting<T> {
    /// Numbers a question; `send` sends it with that number; waits for its answer.
    pub async fn ask(&self, send: impl FnOnce(u64)) -> Option<T> {
        let request = self.next.get();
        self.next.set(request + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.waiting.borrow_mut().insert(request, tx);
        send(request);
        let answer = futures_lite::future::or(async { rx.recv().await }, async {
            crate::task::sleep(ANSWER_TIMEOUT).await;
            None
        })
        .await;
        self.waiting.borrow_mut().remove(&request);
        answer
    }

    /// Hands the answer to question `request` to whoever waits for it.
    pub fn answered(&self, request: u64, answer: T) {
        if let Some(tx) = self.waiting.borrow_mut().remove(&request) {
            let _ = tx.try_send(answer);
        }
    }
}

/// On shard 0: makes a topic change here when this node's service decides (or on a
/// single node), else has the controller leader make it.
pub async fn change_topic(
    shard: &Rc<Shard>,
    name: String,
    change: TopicChange,
    validate_only: bool,
) -> Result<(), (ErrorCode, String)> {
    let Some(service) = shard.controller.as_ref() else {
        return Err((ErrorCode::NotController, "not shard 0".into()));
    };
    if service.decides() || !shard.in_cluster() {
        service
            .update_topic(name, change, validate_only, &super::mesh::Everywhere(shard))
            .await
    } else {
        update_topic(shard, name, change, validate_only).await
    }
}

/// On shard 0 of a node that does not lead the controller: has the leader make a topic
/// change, and returns its outcome.
pub async fn update_topic(
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
