//! Cross-shard requests over glommio's shared channels: one channel per ordered pair of
//! shards, each carrying requests and the responses to them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use crate::task::local_channel::{self, LocalSender};
use crate::task::shared_channel::{ConnectedReceiver, ConnectedSender};

use crate::error::ErrorCode;
use crate::metadata::{ClusterMetadata, ShardId};

/// A topic to create, as the controller (shard 0) receives it.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// Topic name (already validated).
    pub name: String,
    /// Partition count (already validated).
    pub partitions: i32,
    /// Config overrides (already validated).
    pub configs: std::collections::BTreeMap<String, String>,
}

/// Result of creating one topic: its id, or an error code and message.
pub type CreateOutcome = Result<uuid::Uuid, (ErrorCode, String)>;

/// A request from one shard to another.
#[derive(Debug)]
pub enum ShardRequest {
    /// To shard 0: create topics (or only check, when `validate_only`).
    CreateTopics {
        /// Topics to create.
        topics: Vec<TopicSpec>,
        /// Check only.
        validate_only: bool,
    },
    /// To shard 0: delete topics by name.
    DeleteTopics(Vec<String>),
    /// To every shard: adopt this metadata snapshot (open and drop partitions).
    ApplyMetadata(Arc<ClusterMetadata>),
    /// To every shard: list the groups it coordinates.
    ListGroups,
    /// To shard 0: change an existing topic.
    UpdateTopic {
        /// Topic name.
        name: String,
        /// The change.
        change: TopicChange,
        /// Check only.
        validate_only: bool,
    },
}

/// A change to an existing topic.
#[derive(Debug, Clone)]
pub enum TopicChange {
    /// Replace the topic's config overrides (already validated).
    SetConfigs(std::collections::BTreeMap<String, String>),
    /// Grow the topic to this many partitions.
    GrowPartitions(i32),
}

/// The answer to a [`ShardRequest`].
#[derive(Debug)]
pub enum ShardResponse {
    /// One outcome per requested topic.
    Created(Vec<CreateOutcome>),
    /// One error code per requested topic.
    Deleted(Vec<ErrorCode>),
    /// The snapshot is applied.
    Applied,
    /// Groups: (id, protocol type, state).
    Groups(Vec<(String, String, String)>),
    /// Outcome of a topic update.
    Updated(Result<(), (ErrorCode, String)>),
    /// The target shard could not be reached or failed.
    Failed(String),
}

/// What travels on a channel between two shards.
#[derive(Debug)]
pub enum Envelope {
    /// A request to answer.
    Request {
        /// Correlates the response.
        id: u64,
        /// The request.
        request: ShardRequest,
    },
    /// The answer to an earlier request.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        response: ShardResponse,
    },
}

/// This shard's ends of the mesh.
pub struct Router {
    shard: ShardId,
    senders: Vec<Option<ConnectedSender<Envelope>>>,
    pending: RefCell<HashMap<u64, LocalSender<ShardResponse>>>,
    next_id: Cell<u64>,
}

impl Router {
    /// Wraps the connected senders (index = destination shard, `None` for this shard).
    pub fn new(shard: ShardId, senders: Vec<Option<ConnectedSender<Envelope>>>) -> Router {
        Router {
            shard,
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
        }
    }

    /// Sends `request` to shard `to` (not this one) and waits for the answer.
    pub async fn call(&self, to: ShardId, request: ShardRequest) -> ShardResponse {
        let Some(Some(sender)) = self.senders.get(to) else {
            return ShardResponse::Failed(format!(
                "shard {} has no route to shard {to}",
                self.shard
            ));
        };
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, tx);
        if sender
            .send(Envelope::Request { id, request })
            .await
            .is_err()
        {
            self.pending.borrow_mut().remove(&id);
            return ShardResponse::Failed(format!("shard {to} is gone"));
        }
        rx.recv()
            .await
            .unwrap_or_else(|| ShardResponse::Failed(format!("shard {to} dropped the request")))
    }

    /// Sends the answer to request `id` back to shard `to`.
    pub async fn reply(&self, to: ShardId, id: u64, response: ShardResponse) {
        if let Some(Some(sender)) = self.senders.get(to) {
            let _ = sender.send(Envelope::Response { id, response }).await;
        }
    }

    /// Delivers a response that arrived from another shard to its waiting caller.
    pub async fn deliver(&self, id: u64, response: ShardResponse) {
        let waiter = self.pending.borrow_mut().remove(&id);
        if let Some(tx) = waiter {
            let _ = tx.send(response).await;
        }
    }
}

/// Receives envelopes from one peer until the channel closes; requests are handed to
/// `on_request` (which answers through the router), responses to waiting callers.
pub async fn receive_loop<F, Fut>(
    from: ShardId,
    rx: ConnectedReceiver<Envelope>,
    router: std::rc::Rc<Router>,
    on_request: F,
) where
    F: Fn(ShardId, u64, ShardRequest) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    while let Some(env) = rx.recv().await {
        match env {
            Envelope::Request { id, request } => {
                crate::task::spawn(on_request(from, id, request)).detach();
            }
            Envelope::Response { id, response } => router.deliver(id, response).await,
        }
    }
}
