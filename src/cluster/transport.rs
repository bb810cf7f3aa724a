//! One shard's connections to the same shard of every other node: a listener that takes
//! their raft frames into an inbox, and one sender per peer that dials it, says hello,
//! and writes each round's messages as one frame (`cluster::wire`).
//!
//! Raft tolerates lost messages, so a sender never waits for room: when its peer is
//! unreachable it drops what is queued (and reports the peer, so leaders stop streaming
//! appends to it and probe instead), and when more than [`MAX_QUEUED`] bytes wait it
//! drops the new round. It redials with a backoff from 50 ms to 1 s.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use raft::eraftpb::Message;
use tracing::{debug, info, warn};

use crate::io::{TcpListener, TcpStream};
use crate::notify::Notify;
use crate::replica::raft_shard::{GroupId, NodeId};
use crate::task::TaskSet;

use super::wire::{self, BeatCache, Control, Frame, Hello, HelloReply, FRAME_HEADER};
use crate::config::Peer;
use crate::metadata::peer_disks::PeerDisks;
use std::sync::Arc;

/// Bytes of rounds a sender holds for a peer before it drops new ones.
pub const MAX_QUEUED: usize = 32 << 20;

/// How long a dial, a hello or one frame's write may take before the link is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Who this shard is on the cluster's wire.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The cluster every node must name in its hello.
    pub cluster_id: String,
    /// This node.
    pub node: NodeId,
    /// This shard's index (the same on both ends of every connection).
    pub shard: u16,
    /// This node's disk identity.
    pub disk_id: [u8; 16],
}

/// Bytes of received frames the raft loop may have waiting before the connections stop
/// reading (TCP then slows the senders down).
const MAX_INBOX: usize = 64 << 20;

/// Messages received, by sending node, until the raft loop takes them.
#[derive(Default)]
pub struct Inbox {
    messages: RefCell<Vec<(GroupId, Message)>>,
    /// Bytes of the frames the waiting messages came in.
    bytes: Cell<usize>,
    /// Woken when messages arrive.
    pub arrived: Notify,
    /// Woken when the raft loop takes what waited.
    taken: Notify,
    /// Control messages received, with their sender, until taken.
    control: RefCell<Vec<(NodeId, Control)>>,
    /// Woken when a control message arrives.
    pub control_arrived: Notify,
    /// When each peer last sent a frame here.
    heard: RefCell<BTreeMap<NodeId, Instant>>,
}

impl Inbox {
    /// True when no received message waits to be taken.
    pub fn is_empty(&self) -> bool {
        self.messages.borrow().is_empty()
    }

    /// Takes everything received so far, in arrival order.
    pub fn take(&self) -> Vec<(GroupId, Message)> {
        self.bytes.set(0);
        self.taken.notify();
        std::mem::take(&mut *self.messages.borrow_mut())
    }

    /// Takes the control messages received so far, in arrival order.
    pub fn take_control(&self) -> Vec<(NodeId, Control)> {
        std::mem::take(&mut *self.control.borrow_mut())
    }

    /// When each peer last sent a frame to this shard.
    pub fn last_heard(&self) -> BTreeMap<NodeId, Instant> {
        self.heard.borrow().clone()
    }

    fn heard_from(&self, from: NodeId) {
        self.heard.borrow_mut().insert(from, Instant::now());
    }

    fn push_control(&self, from: NodeId, c: Control) {
        let mut waiting = self.control.borrow_mut();
        // Control messages are resent periodically: a backlog is never worth keeping.
        if waiting.len() >= MAX_CONTROL_WAITING {
            waiting.remove(0);
        }
        waiting.push((from, c));
        self.control_arrived.notify();
    }

    /// Adds one frame's messages, then waits while too much waits to be taken.
    async fn push(&self, mut msgs: Vec<(GroupId, Message)>, frame_bytes: usize) {
        self.messages.borrow_mut().append(&mut msgs);
        self.bytes.set(self.bytes.get() + frame_bytes);
        self.arrived.notify();
        loop {
            let generation = self.taken.generation();
            if self.bytes.get() <= MAX_INBOX {
                return;
            }
            self.taken.changed_since(generation).await;
        }
    }
}

/// Control messages kept for the shard before older ones are dropped.
const MAX_CONTROL_WAITING: usize = 64;

/// Something queued for a peer.
enum Outgoing {
    /// One round's raft messages.
    Raft(Vec<(GroupId, Message)>),
    /// A control message.
    Control(Control),
}

/// What is queued for a peer, and the bytes it is counted as.
type QueuedRound = (Outgoing, usize);

/// A peer's sending side.
struct Link {
    peer: Peer,
    queue: RefCell<VecDeque<QueuedRound>>,
    queued_bytes: Cell<usize>,
    wake: Notify,
    /// Rounds dropped because the peer was unreachable or too far behind.
    dropped: Cell<u64>,
}

impl Link {
    /// Queues `item`, counted as `bytes`, for the sender; dropped when more than
    /// [`MAX_QUEUED`] would wait.
    fn enqueue(&self, item: Outgoing, bytes: usize) {
        if self.queued_bytes.get() + bytes > MAX_QUEUED {
            self.dropped.set(self.dropped.get() + 1);
            return;
        }
        self.queued_bytes.set(self.queued_bytes.get() + bytes);
        self.queue.borrow_mut().push_back((item, bytes));
        self.wake.notify();
    }
}

/// The shard's inter-node transport. See the module docs.
pub struct Transport {
    me: Identity,
    /// A sender per peer: those `--peers` names, then those the metadata adds.
    links: RefCell<BTreeMap<NodeId, Rc<Link>>>,
    inbox: Rc<Inbox>,
    /// Peers a sender found unreachable since the raft loop last asked.
    unreachable: Rc<RefCell<Vec<NodeId>>>,
    local_addr: SocketAddr,
    tasks: TaskSet,
}

impl Transport {
    /// Starts the shard's peer listener on `listener` and a sender for every other node
    /// of `peers`.
    pub fn start(
        me: Identity,
        listener: TcpListener,
        peers: &[Peer],
        disks: Option<Arc<PeerDisks>>,
    ) -> std::io::Result<Transport> {
        let local_addr = listener.local_addr()?;
        let tasks = TaskSet::new(format!("peer transport of shard {}", me.shard));
        let inbox = Rc::new(Inbox::default());
        let unreachable = Rc::new(RefCell::new(Vec::new()));
        tasks.spawn(
            "peer listener",
            accept_loop(listener, me.clone(), inbox.clone(), disks),
        );
        let transport = Transport {
            me,
            links: RefCell::new(BTreeMap::new()),
            inbox,
            unreachable,
            local_addr,
            tasks,
        };
        for peer in peers {
            transport.add_peer(peer);
        }
        Ok(transport)
    }

    /// Starts sending to `peer` (a node that joined: the metadata names where it takes
    /// connections); nothing when it is this node or already known.
    pub fn add_peer(&self, peer: &Peer) {
        if peer.node == self.me.node || self.links.borrow().contains_key(&peer.node) {
            return;
        }
        let link = Rc::new(Link {
            peer: peer.clone(),
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            wake: Notify::default(),
            dropped: Cell::new(0),
        });
        self.tasks.spawn(
            format!("peer sender to node {}", peer.node),
            send_loop(self.me.clone(), link.clone(), self.unreachable.clone()),
        );
        self.links.borrow_mut().insert(peer.node, link);
    }

    /// Where the listener took its socket (tests bind port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What arrived from the other nodes.
    pub fn inbox(&self) -> &Rc<Inbox> {
        &self.inbox
    }

    /// Queues one round's messages for node `to`; dropped when it is unknown or its
    /// queue is full (raft sends again).
    pub fn send(&self, to: NodeId, messages: Vec<(GroupId, Message)>) {
        let Some(link) = self.links.borrow().get(&to).cloned() else {
            debug!(node = to, "message for a node not among the peers dropped");
            return;
        };
        let bytes: usize = messages
            .iter()
            .map(|(_, m)| 64 + m.entries.iter().map(|e| e.data.len() + 32).sum::<usize>())
            .sum();
        link.enqueue(Outgoing::Raft(messages), bytes);
    }

    /// Queues a control message for node `to` (dropped as raft rounds are; senders of
    /// control messages repeat them until they see their effect).
    pub fn send_control(&self, to: NodeId, c: Control) {
        let Some(link) = self.links.borrow().get(&to).cloned() else {
            return;
        };
        let bytes = match &c {
            Control::Metadata(b) => b.len() + 64,
            _ => 256,
        };
        link.enqueue(Outgoing::Control(c), bytes);
    }

    /// The nodes this shard sends to.
    pub fn peers(&self) -> Vec<NodeId> {
        self.links.borrow().keys().copied().collect()
    }

    /// Peers found unreachable since the last call (for raft's `report_unreachable`).
    pub fn take_unreachable(&self) -> Vec<NodeId> {
        std::mem::take(&mut *self.unreachable.borrow_mut())
    }

    /// Rounds dropped for `node` so far.
    pub fn dropped(&self, node: NodeId) -> u64 {
        self.links
            .borrow()
            .get(&node)
            .map_or(0, |l| l.dropped.get())
    }

    /// This shard's identity on the wire.
    pub fn identity(&self) -> &Identity {
        &self.me
    }

    /// Stops the listener and the senders; queued messages are dropped.
    pub fn stop(&self) {
        self.tasks.stop_all();
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.tasks.stop_all();
    }
}

/// Runs `f`, failing with `TimedOut` after [`IO_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    futures_lite::future::or(f, async {
        crate::task::sleep(IO_TIMEOUT).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} took longer than {IO_TIMEOUT:?}"),
        ))
    })
    .await
}

/// Longest hello or hello reply: a stranger on the peer port gets no bigger buffer.
const MAX_HELLO: usize = 4096;

/// Reads one frame's body, refusing one longer than `max` before reading it.
async fn read_frame(stream: &mut TcpStream, max: usize) -> std::io::Result<Bytes> {
    let mut header = [0u8; FRAME_HEADER];
    stream.read_exact(&mut header).await?;
    let (len, crc) = wire::frame_header(&header).map_err(std::io::Error::other)?;
    if len > max {
        return Err(std::io::Error::other(format!(
            "peer frame of {len} bytes where at most {max} were expected"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    wire::check_body(&body, crc).map_err(std::io::Error::other)?;
    Ok(Bytes::from(body))
}

async fn accept_loop(
    listener: TcpListener,
    me: Identity,
    inbox: Rc<Inbox>,
    disks: Option<Arc<PeerDisks>>,
) {
    let connections = TaskSet::new(format!("peer connections of shard {}", me.shard));
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "peer accept failed");
                crate::task::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(
            "peer connection",
            receive(stream, me.clone(), inbox.clone(), disks.clone()),
        );
    }
}

/// Serves one inbound connection: checks the hello, then takes frames until it closes.
async fn receive(
    mut stream: TcpStream,
    me: Identity,
    inbox: Rc<Inbox>,
    disks: Option<Arc<PeerDisks>>,
) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let hello = match bounded("a peer's hello", read_frame(&mut stream, MAX_HELLO)).await {
        Ok(body) => match Hello::decode(&body) {
            Ok(h) => h,
            Err(e) => {
                warn!(%peer, error = %e, "not a Caudal peer; connection closed");
                return;
            }
        },
        Err(e) => {
            debug!(%peer, error = %e, "peer connection closed before its hello");
            return;
        }
    };
    let refusal = if hello.version != wire::VERSION {
        Some(format!(
            "inter-node protocol version {} (this node speaks {})",
            hello.version,
            wire::VERSION
        ))
    } else if hello.cluster_id != me.cluster_id {
        Some(format!(
            "cluster {:?}, this node belongs to {:?}",
            hello.cluster_id, me.cluster_id
        ))
    } else if hello.to_node != me.node || usize::from(hello.shard) != usize::from(me.shard) {
        Some(format!(
            "meant for node {} shard {}, this is node {} shard {}",
            hello.to_node, hello.shard, me.node, me.shard
        ))
    } else if hello.from_node == me.node || hello.from_node == 0 {
        // Any other node of the cluster may connect: one that joins is not in this
        // node's `--peers` (it registers with the controller over this connection).
        Some(format!(
            "node {} cannot be a peer of this node",
            hello.from_node
        ))
    } else if let Some(disks) = &disks {
        // A peer back on an empty disk under its old id must not vote (KIP-903).
        disks
            .admit(hello.from_node, hello.disk_id)
            .await
            .err()
            .map(|e| e.to_string())
    } else {
        None
    };
    let reply = match &refusal {
        Some(why) => HelloReply::Refused(why.clone()),
        None => HelloReply::Accepted,
    };
    if bounded("the hello reply", stream.write_all(&reply.encode()))
        .await
        .is_err()
    {
        return;
    }
    if let Some(why) = refusal {
        warn!(%peer, from = hello.from_node, reason = %why, "peer refused");
        return;
    }
    let from = hello.from_node;
    info!(node = from, shard = me.shard, "peer connected");
    let mut beats = BeatCache::default();
    loop {
        let body = match read_frame(&mut stream, wire::MAX_FRAME).await {
            Ok(b) => b,
            Err(e) => {
                debug!(node = from, error = %e, "peer connection closed");
                return;
            }
        };
        inbox.heard_from(from);
        match wire::decode_frame(from, me.node, &body, &mut beats) {
            Ok(Frame::Raft(msgs)) => inbox.push(msgs, body.len()).await,
            Ok(Frame::Control(c)) => inbox.push_control(from, c),
            Err(e) => {
                // The stream is out of step (a bug, or not our protocol): start over.
                warn!(node = from, error = %e, "bad frame from a peer; connection closed");
                return;
            }
        }
    }
}

/// Dials `link`'s peer and sends its queued rounds, redialling after failures.
async fn send_loop(me: Identity, link: Rc<Link>, unreachable: Rc<RefCell<Vec<NodeId>>>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        // Nothing to send: no connection needed yet.
        while link.queue.borrow().is_empty() {
            let generation = link.wake.generation();
            if !link.queue.borrow().is_empty() {
                break;
            }
            link.wake.changed_since(generation).await;
        }
        match connect(&me, &link.peer).await {
            Ok(stream) => {
                backoff = Duration::from_millis(50);
                if let Err(e) = pump(&me, &link, stream).await {
                    debug!(node = link.peer.node, error = %e, "peer link lost");
                }
            }
            Err(e) => {
                debug!(node = link.peer.node, addr = %link.peer.shard_addr(usize::from(me.shard)), error = %e, "peer unreachable");
            }
        }
        // Whatever waited was meant for a connection that is gone: raft sends again.
        let lost = link.queue.borrow_mut().drain(..).count() as u64;
        link.queued_bytes.set(0);
        link.dropped.set(link.dropped.get() + lost);
        unreachable.borrow_mut().push(link.peer.node);
        crate::task::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn connect(me: &Identity, peer: &Peer) -> std::io::Result<TcpStream> {
    let addr = peer.shard_addr(usize::from(me.shard));
    let mut stream = bounded("dialing a peer", async {
        TcpStream::connect(addr.as_str())
            .await
            .map_err(std::io::Error::from)
    })
    .await
    .map_err(|e| std::io::Error::new(e.kind(), format!("{addr}: {e}")))?;
    stream.set_nodelay(true)?;
    let hello = Hello {
        version: wire::VERSION,
        cluster_id: me.cluster_id.clone(),
        from_node: me.node,
        to_node: peer.node,
        shard: me.shard,
        disk_id: me.disk_id,
    };
    bounded("sending the hello", stream.write_all(&hello.encode())).await?;
    let body = bounded("the peer's hello reply", read_frame(&mut stream, MAX_HELLO)).await?;
    match HelloReply::decode(&body).map_err(std::io::Error::other)? {
        HelloReply::Accepted => Ok(stream),
        HelloReply::Refused(why) => {
            warn!(node = peer.node, %addr, reason = %why, "peer refused this node");
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                why,
            ))
        }
    }
}

/// Writes queued rounds as they come, until the connection fails.
async fn pump(me: &Identity, link: &Link, mut stream: TcpStream) -> std::io::Result<()> {
    let mut beats = BeatCache::default();
    loop {
        let generation = link.wake.generation();
        let rounds: Vec<QueuedRound> = link.queue.borrow_mut().drain(..).collect();
        if rounds.is_empty() {
            link.wake.changed_since(generation).await;
            continue;
        }
        let mut out = Vec::new();
        for (item, bytes) in rounds {
            out = match item {
                Outgoing::Raft(messages) => {
                    wire::encode_raft_into(out, me.node, link.peer.node, &messages, &mut beats)
                }
                Outgoing::Control(c) => wire::encode_control_into(out, &c),
            };
            link.queued_bytes
                .set(link.queued_bytes.get().saturating_sub(bytes));
        }
        bounded("writing to a peer", stream.write_all(&out)).await?;
    }
}
