//! The mesh between shards: the requests they send each other, addressed to a
//! [`ShardAddr`] (node, shard) through a [`Transport`], and typed errors. The transport
//! today is in-process ([`Router`]: one channel per ordered pair of this node's shards);
//! the inter-node transport of the replication work implements the same trait.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use thiserror::Error;

use crate::task::local_channel::{self, LocalSender};
use crate::task::shared_channel::{ConnectedReceiver, ConnectedSender};

use crate::error::ErrorCode;
use crate::log::LogError;
use crate::metadata::{ClusterMetadata, NodeId, ShardAddr, ShardId};

/// A topic to create, as the controller (shard 0) receives it.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// Topic name (already validated).
    pub name: String,
    /// Partition count (already validated).
    pub partitions: i32,
    /// Config overrides (already validated).
    pub configs: std::collections::BTreeMap<String, String>,
    /// Replicas of each partition (-1: the node's default).
    pub replication_factor: i16,
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
    /// To shard 0: the controller quorum as this node sees it.
    DescribeQuorum,
    /// To shard 0: a block of producer ids from the controller.
    ProducerIdBlock,
    /// To shard 0: moving groups this node leads whose voters are now their target
    /// (raft group, voters), for the controller to end the moves.
    MovesDone(Vec<(u64, Vec<u64>)>),
    /// To shard 0: start moving partitions (AlterPartitionReassignments).
    Reassign(Vec<(String, crate::metadata::PartitionId, Option<Vec<i32>>)>),
    /// To a shard: hand leadership of these raft groups to their preferred replicas
    /// where it leads them; to shard 0 with `everywhere`, to every shard of every node.
    ElectPreferred {
        /// Raft groups of the partitions.
        groups: Vec<u64>,
        /// Spread it to the other nodes and to this node's other shards.
        everywhere: bool,
    },
}

pub use crate::metadata::TopicChange;

/// The controller quorum as this node sees it (DescribeQuorum).
#[derive(Debug, Clone, Default)]
pub struct QuorumState {
    /// The leader, when known.
    pub leader: Option<crate::metadata::NodeId>,
    /// Its term (the quorum's epoch); 0 when unknown.
    pub term: u64,
    /// Offset after the last committed record; -1 when this node does not keep the log.
    pub high_watermark: i64,
    /// Each voter with the offset after what it holds, when this node leads (else -1).
    pub voters: Vec<(crate::metadata::NodeId, i64)>,
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
    /// The request was passed on.
    Done,
    /// The controller quorum.
    Quorum(QuorumState),
    /// The first id of a block of producer ids, or why there is none.
    ProducerIdBlock(Result<u64, ErrorCode>),
    /// One outcome per move asked.
    Reassigned(Vec<Result<(), (ErrorCode, String)>>),
    /// The target shard could not be reached, or failed.
    Failed(MeshError),
}

/// Why a shard could not adopt a metadata snapshot.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// A partition placed on the shard could not be opened.
    #[error("opening {dir}: {source}")]
    Open {
        /// The partition's directory.
        dir: std::path::PathBuf,
        /// What the log said.
        source: LogError,
    },
    /// A replicated partition's raft group could not be opened.
    #[error("opening the raft group of {dir}: {reason}")]
    Raft {
        /// The partition's directory.
        dir: std::path::PathBuf,
        /// What the raft loop said.
        reason: String,
    },
    /// The shard is shutting down.
    #[error("the shard is shutting down")]
    Closed,
}

/// Why a request between shards failed.
#[derive(Debug, Error)]
pub enum MeshError {
    /// No transport reaches the destination (another node, before the inter-node one).
    #[error("{from} has no route to {to}")]
    NoRoute {
        /// Sender.
        from: ShardAddr,
        /// Destination.
        to: ShardAddr,
    },
    /// The destination's end of the channel is closed.
    #[error("{0} is gone")]
    Gone(ShardAddr),
    /// The destination dropped the request without answering.
    #[error("{0} dropped the request")]
    Dropped(ShardAddr),
    /// The destination does not host the controller.
    #[error("{0} is not the controller")]
    NotController(ShardAddr),
    /// The destination could not apply a metadata snapshot.
    #[error("{at} could not apply the metadata: {source}")]
    Apply {
        /// The shard that failed.
        at: ShardAddr,
        /// Why.
        source: ApplyError,
    },
    /// The answer was not the kind the request expects.
    #[error("unexpected answer from {0}")]
    Unexpected(ShardAddr),
}

/// Result of a request between shards.
pub type MeshResult<T> = Result<T, MeshError>;

/// A future a transport returns.
pub type MeshFuture<'a> = Pin<Box<dyn Future<Output = MeshResult<ShardResponse>> + 'a>>;

/// Carries requests to other shards and brings back their answers.
pub trait Transport {
    /// Sends `request` to `to` (never the caller itself) and waits for the answer.
    fn call(&self, to: ShardAddr, request: ShardRequest) -> MeshFuture<'_>;
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

/// This shard's ends of the in-process mesh: the [`Transport`] to the other shards of
/// this node.
pub struct Router {
    node: NodeId,
    shard: ShardId,
    senders: Vec<Option<ConnectedSender<Envelope>>>,
    pending: RefCell<HashMap<u64, LocalSender<ShardResponse>>>,
    next_id: Cell<u64>,
}

impl Router {
    /// Wraps the connected senders (index = destination shard, `None` for this shard).
    pub fn new(
        node: NodeId,
        shard: ShardId,
        senders: Vec<Option<ConnectedSender<Envelope>>>,
    ) -> Router {
        Router {
            node,
            shard,
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
        }
    }

    async fn send(&self, to: ShardAddr, request: ShardRequest) -> MeshResult<ShardResponse> {
        let from = ShardAddr {
            node: self.node,
            shard: self.shard,
        };
        let route = (to.node == self.node)
            .then(|| self.senders.get(to.shard))
            .flatten()
            .and_then(Option::as_ref);
        let Some(sender) = route else {
            return Err(MeshError::NoRoute { from, to });
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
            return Err(MeshError::Gone(to));
        }
        match rx.recv().await {
            Some(ShardResponse::Failed(e)) => Err(e),
            Some(response) => Ok(response),
            None => Err(MeshError::Dropped(to)),
        }
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

impl Transport for Router {
    fn call(&self, to: ShardAddr, request: ShardRequest) -> MeshFuture<'_> {
        Box::pin(self.send(to, request))
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
