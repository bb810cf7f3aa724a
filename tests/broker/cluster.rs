//! Three nodes in this process on loopback (the process-per-node tests in network
//! namespaces are tests/clients/test_cluster.py): the metadata is decided by the
//! controller quorum's leader and reaches the others, a replicated partition takes produces on its raft leader only,
//! and another node takes over when the leader's node stops.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use caudal::config::{peers::parse_peers, Config};
use caudal::executor::deadline::Deadline;
use caudal::shard::runtime::{self, BrokerHandle};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse,
    ProduceResponse,
};

use super::*;

struct Node {
    config: Config,
    handle: Option<BrokerHandle>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.base_port))
    }

    fn client(&self) -> Client {
        Client::connect_when_serving(self.addr(), Duration::from_secs(20))
    }
}

/// Three one-shard nodes on free loopback ports.
fn start_cluster() -> Vec<Node> {
    start_cluster_on(vec![
        TestBroker::temp_dir(),
        TestBroker::temp_dir(),
        TestBroker::temp_dir(),
    ])
}

/// The settings of three one-shard nodes on free loopback ports, node i on `dirs[i]`.
fn cluster_configs(dirs: &[&std::path::Path]) -> Vec<Config> {
    let kafka: Vec<u16> = (0..3).map(|_| free_ports(1)).collect();
    let peer: Vec<u16> = (0..3).map(|_| free_ports(1)).collect();
    let peers = parse_peers(
        &(0..3)
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, peer[i]))
            .collect::<Vec<_>>()
            .join(","),
    )
    .unwrap();
    dirs.iter()
        .enumerate()
        .map(|(i, dir)| Config {
            data_dir: dir.to_path_buf(),
            base_port: kafka[i],
            node_id: i as i32 + 1,
            peers: peers.clone(),
            default_replication_factor: 3,
            shards: 1,
            cpus: vec![0],
            tail_cache_bytes: 16 << 20,
            replica_lag_time_max_ms: 1000,
            ..Config::default()
        })
        .collect()
}

/// Three one-shard nodes on `dirs`, once every node lists the three.
fn start_cluster_on(dirs: Vec<tempfile::TempDir>) -> Vec<Node> {
    start_cluster_with(dirs, |c| c)
}

/// [`start_cluster_on`] with each node's settings changed by `tweak`.
fn start_cluster_with(dirs: Vec<tempfile::TempDir>, tweak: impl Fn(Config) -> Config) -> Vec<Node> {
    let configs = cluster_configs(&dirs.iter().map(|d| d.path()).collect::<Vec<_>>());
    let nodes: Vec<Node> = dirs
        .into_iter()
        .zip(configs)
        .map(|(dir, config)| {
            let config = tweak(config);
            let handle = runtime::start(config.clone()).expect("node starts");
            Node {
                config,
                handle: Some(handle),
                _dir: dir,
            }
        })
        .collect();
    for n in &nodes {
        wait_until("every node lists the three nodes", || {
            metadata(&mut n.client(), None).brokers.len() == 3
        });
    }
    nodes
}

fn wait_until(what: &str, check: impl FnMut() -> bool) {
    wait_within(what, Duration::from_secs(20), check)
}

fn wait_within(what: &str, bound: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting until {what}");
}

fn metadata(c: &mut Client, topic: Option<&str>) -> MetadataResponse {
    let req = MetadataRequest::default().with_topics(topic.map(|t| {
        vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(name(t))),
        ]
    }));
    c.call(ApiKey::Metadata, 12, &req)
}

/// The partition's leader as broker id, once one is known.
fn leader(c: &mut Client, topic: &str) -> Option<i32> {
    let m = metadata(c, Some(topic));
    let p = m.topics.first()?.partitions.first()?;
    (p.error_code == 0 && p.leader_id.0 >= 0).then_some(p.leader_id.0)
}

fn create(c: &mut Client, topic: &str, rf: i16) -> CreateTopicsResponse {
    create_with(c, topic, rf, &[])
}

fn create_with(
    c: &mut Client,
    topic: &str,
    rf: i16,
    configs: &[(&str, &str)],
) -> CreateTopicsResponse {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    use kafka_protocol::protocol::StrBytes;
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(1)
        .with_replication_factor(rf)
        .with_configs(configs)]);
    c.call(ApiKey::CreateTopics, 7, &req)
}

/// The partition's leader epoch as Metadata says.
fn epoch(c: &mut Client, topic: &str) -> i32 {
    metadata(c, Some(topic)).topics[0].partitions[0].leader_epoch
}

fn stop(nodes: &mut [Node]) {
    for n in nodes {
        if let Some(h) = n.handle.take() {
            h.shutdown();
        }
    }
}

fn produce_one(c: &mut Client, topic: &str, value: &[u8]) -> (i16, i64) {
    let r: ProduceResponse = c.call(
        ApiKey::Produce,
        10,
        &produce_request(topic, 0, batch(&[value]), -1),
    );
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn three_nodes_replicate_a_partition_and_fail_over_when_its_leader_stops() {
    let _bound = Deadline::start("three-node cluster test", Duration::from_secs(120));
    let mut nodes = start_cluster();
    // Only the controller leader decides; the others say who does.
    let ctl = controller(&nodes);
    let refused = create(&mut nodes[(ctl + 1) % 3].client(), "t", 3);
    assert_eq!(refused.topics[0].error_code, 41, "NOT_CONTROLLER");
    let m = metadata(&mut nodes[(ctl + 1) % 3].client(), None);
    assert_eq!(m.controller_id.0, (ctl as i32 + 1) * 1024);
    let too_many = create(&mut nodes[ctl].client(), "t", 4);
    assert_eq!(
        too_many.topics[0].error_code, 38,
        "INVALID_REPLICATION_FACTOR"
    );
    let created = create(&mut nodes[ctl].client(), "t", 3);
    assert_eq!(created.topics[0].error_code, 0);
    for n in &nodes {
        wait_until("every node knows the partition's leader", || {
            leader(&mut n.client(), "t").is_some()
        });
    }
    let first = leader(&mut nodes[0].client(), "t").unwrap();
    let at = (first / 1024 - 1) as usize;
    for i in 0..10i64 {
        assert_eq!(produce_one(&mut nodes[at].client(), "t", b"before"), (0, i));
    }
    // A follower refuses, naming the leader (KIP-951).
    let follower = (at + 1) % 3;
    let r: ProduceResponse = nodes[follower].client().call(
        ApiKey::Produce,
        10,
        &produce_request("t", 0, batch(&[b"nope"]), -1),
    );
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    assert_eq!(p.current_leader.leader_id.0, first);
    assert!(r.node_endpoints.iter().any(|e| e.node_id.0 == first));

    let first_epoch = epoch(&mut nodes[at].client(), "t");
    // The leader's node stops: one of the other two takes over, with every record.
    if let Some(h) = nodes[at].handle.take() {
        h.shutdown();
    }
    let rest: Vec<usize> = (0..3).filter(|&i| i != at).collect();
    let mut next = None;
    wait_until("a new leader", || {
        next = leader(&mut nodes[rest[0]].client(), "t").filter(|&l| l != first);
        next.is_some()
    });
    let next = (next.unwrap() / 1024 - 1) as usize;
    let mut c = nodes[next].client();
    for i in 10..20i64 {
        assert_eq!(produce_one(&mut c, "t", b"after"), (0, i));
    }
    let batches = read_partition(&mut c, "t", 0);
    assert_eq!(batches.len(), 20, "every acknowledged record, once");
    // A client that read under the old leader validates its position (KIP-320): the old
    // epoch ended where the new leader's records start, and the old epoch is fenced.
    let now = epoch(&mut c, "t");
    assert!(now > first_epoch, "epoch {now} after {first_epoch}");
    assert_eq!(
        super::leader_epochs::end_for(&mut c, "t", 0, now, first_epoch),
        (0, first_epoch, 10)
    );
    assert_eq!(
        super::leader_epochs::end_for(&mut c, "t", 0, first_epoch, first_epoch).0,
        74,
        "FENCED_LEADER_EPOCH"
    );

    // The stopped node comes back with its data and catches up.
    nodes[at].handle = Some(runtime::start(nodes[at].config.clone()).expect("restarts"));
    wait_until("the returning node back in sync", || {
        let m = metadata(&mut nodes[next].client(), Some("t"));
        m.topics[0].partitions[0].isr_nodes.len() == 3
    });
    // Deleted through the controller leader: every node closes its replica's raft group
    // and removes the directory.
    // (NOT_CONTROLLER or an unknown outcome while the controller moves: clients retry.)
    wait_until("the delete is made", || {
        let ctl = controller(&nodes);
        matches!(delete_topic(&mut nodes[ctl].client(), "t"), 0 | 3)
    });
    for n in &nodes {
        let dir = n.config.data_dir.join("t-0");
        wait_until("the partition's directory gone on every node", || {
            !dir.exists()
        });
    }
    stop(&mut nodes);
}

#[test]
fn acks_all_is_refused_while_fewer_replicas_than_min_insync_are_in_sync() {
    let _bound = Deadline::start("three-node min.insync test", Duration::from_secs(120));
    let mut nodes = start_cluster();
    let ctl = controller(&nodes);
    let created = create_with(
        &mut nodes[ctl].client(),
        "strict",
        3,
        &[("min.insync.replicas", "3")],
    );
    assert_eq!(created.topics[0].error_code, 0);
    wait_until("a leader", || {
        leader(&mut nodes[0].client(), "strict").is_some()
    });
    let l = leader(&mut nodes[0].client(), "strict").unwrap();
    let at = (l / 1024 - 1) as usize;
    wait_until("all three in sync", || {
        metadata(&mut nodes[at].client(), Some("strict")).topics[0].partitions[0]
            .isr_nodes
            .len()
            == 3
    });
    assert_eq!(produce_one(&mut nodes[at].client(), "strict", b"ok").0, 0);
    // A follower goes: once the leader sees it behind (1 s here), acks=all is refused
    // before anything is written, and acks=1 still goes through.
    let gone = (at + 1) % 3;
    if let Some(h) = nodes[gone].handle.take() {
        h.shutdown();
    }
    wait_until("NOT_ENOUGH_REPLICAS for acks=all", || {
        produce_one(&mut nodes[at].client(), "strict", b"refused").0 == 19
    });
    let r: ProduceResponse = nodes[at].client().call(
        ApiKey::Produce,
        10,
        &produce_request("strict", 0, batch(&[b"acks=1"]), 1),
    );
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    stop(&mut nodes);
}

#[test]
fn a_single_nodes_data_directory_is_refused_by_a_cluster_and_keeps_its_topics() {
    let _bound = Deadline::start("single node into a cluster", Duration::from_secs(120));
    // Node 2 served a topic alone.
    let dir = TestBroker::temp_dir();
    let alone = Config {
        data_dir: dir.path().to_path_buf(),
        base_port: free_ports(1),
        node_id: 2,
        shards: 1,
        cpus: vec![0],
        tail_cache_bytes: 16 << 20,
        ..Config::default()
    };
    let h = runtime::start(alone.clone()).expect("starts alone");
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], alone.base_port)));
    assert_eq!(create(&mut c, "mine", 1).topics[0].error_code, 0);
    assert_eq!(produce_one(&mut c, "mine", b"kept").0, 0);
    drop(c);
    h.shutdown();
    // Then it is started as node 2 of a cluster: it refuses to start, naming the topic,
    // rather than lose track of it; started alone again it still serves it.
    let dirs = [TestBroker::temp_dir(), TestBroker::temp_dir()];
    let configs = cluster_configs(&[dirs[0].path(), dir.path(), dirs[1].path()]);
    let err = runtime::start(configs[1].clone())
        .err()
        .expect("a single node's data directory does not join a cluster");
    assert!(err.to_string().contains("mine"), "{err}");
    assert!(dir.path().join("mine-0").exists());
    let h = runtime::start(alone.clone()).expect("starts alone again");
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], alone.base_port)));
    assert_eq!(read_partition(&mut c, "mine", 0).len(), 1, "its topic kept");
    drop(c);
    h.shutdown();
}

#[test]
fn leadership_returns_to_the_preferred_replica_when_its_node_is_back() {
    let _bound = Deadline::start("preferred leader test", Duration::from_secs(120));
    let mut nodes = start_cluster();
    let ctl = controller(&nodes);
    assert_eq!(
        create(&mut nodes[ctl].client(), "p", 3).topics[0].error_code,
        0
    );
    known_everywhere(&nodes, "p");
    let preferred =
        |c: &mut Client| metadata(c, Some("p")).topics[0].partitions[0].replica_nodes[0].0;
    let first = preferred(&mut nodes[0].client());
    // The whole broker suite runs side by side: balancing (every 5 s) gets a wide bound.
    let long = Duration::from_secs(60);
    wait_within("the preferred replica leads", long, || {
        leader(&mut nodes[0].client(), "p") == Some(first)
    });
    let at = (first / 1024 - 1) as usize;
    if let Some(h) = nodes[at].handle.take() {
        h.shutdown();
    }
    let other = (at + 1) % 3;
    wait_until("another node leads", || {
        leader(&mut nodes[other].client(), "p").is_some_and(|l| l != first)
    });
    nodes[at].handle = Some(runtime::start(nodes[at].config.clone()).expect("restarts"));
    // Caught up and answering, it gets leadership back (checked every 5 s).
    wait_within("the preferred replica leads again", long, || {
        leader(&mut nodes[other].client(), "p") == Some(first)
            && leader(&mut nodes[at].client(), "p") == Some(first)
    });
    assert_eq!(produce_one(&mut nodes[at].client(), "p", b"back").0, 0);
    stop(&mut nodes);
}

/// Waits until every running node knows `topic` and its partitions (a create answers
/// once the controller's node applied it; the others apply it right after).
fn known_everywhere(nodes: &[Node], topic: &str) {
    for n in nodes.iter().filter(|n| n.handle.is_some()) {
        wait_until("every node knows the topic", || {
            metadata(&mut n.client(), Some(topic))
                .topics
                .first()
                .is_some_and(|t| t.error_code == 0 && !t.partitions.is_empty())
        });
    }
}

/// Node (index into `nodes`) that leads the controller, once the running nodes know.
fn controller(nodes: &[Node]) -> usize {
    let mut found = None;
    wait_until("the nodes know the controller leader", || {
        // A running node's answer naming a running node (one just stopped may still be
        // named until a new leader is elected).
        found = (0..nodes.len())
            .filter(|&i| nodes[i].handle.is_some())
            .find_map(|i| controller_at(nodes, i))
            .filter(|&c| nodes[c].handle.is_some());
        found.is_some()
    });
    found.unwrap_or(0)
}

/// Node (index into `nodes`) that leads the controller, as node `ask` says.
fn controller_at(nodes: &[Node], ask: usize) -> Option<usize> {
    let id = metadata(&mut nodes[ask].client(), None).controller_id.0;
    (id >= 0).then(|| (id / 1024 - 1) as usize)
}

fn topic_names(c: &mut Client) -> Vec<String> {
    let mut names: Vec<String> = metadata(c, None)
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect();
    names.sort();
    names
}

fn delete_topic(c: &mut Client, topic: &str) -> i16 {
    use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
    let req = DeleteTopicsRequest::default().with_topic_names(vec![name(topic)]);
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 4, &req);
    r.responses[0].error_code
}

#[test]
fn topic_changes_are_kept_by_the_controller_quorum_through_the_loss_of_its_leader() {
    let _bound = Deadline::start("controller failover test", Duration::from_secs(150));
    let mut nodes = start_cluster();
    let mut lead = None;
    wait_until("a controller is elected", || {
        lead = controller_at(&nodes, 0);
        lead.is_some()
    });
    let lead = lead.unwrap_or(0);
    let other = (lead + 1) % 3;
    // Only the leader decides; the others say NOT_CONTROLLER, which clients retry.
    assert_eq!(
        create(&mut nodes[other].client(), "x", 3).topics[0].error_code,
        41
    );
    for t in ["a1", "a2", "a3"] {
        assert_eq!(
            create(&mut nodes[lead].client(), t, 3).topics[0].error_code,
            0
        );
    }
    for n in &nodes {
        wait_until("every node knows the three topics", || {
            topic_names(&mut n.client()) == ["a1", "a2", "a3"]
        });
    }
    if let Some(h) = nodes[lead].handle.take() {
        h.shutdown();
    }
    let mut next = None;
    wait_until("another node leads the controller", || {
        next = controller_at(&nodes, other).filter(|&n| n != lead);
        next.is_some()
    });
    let next = next.unwrap_or(other);
    assert_eq!(delete_topic(&mut nodes[next].client(), "a1"), 0);
    assert_eq!(
        create(&mut nodes[next].client(), "b1", 3).topics[0].error_code,
        0
    );
    // The old leader comes back and learns what was decided while it was away.
    nodes[lead].handle = Some(runtime::start(nodes[lead].config.clone()).expect("restarts"));
    for n in &nodes {
        wait_until("every node has the same topics", || {
            topic_names(&mut n.client()) == ["a2", "a3", "b1"]
        });
    }
    assert!(!nodes[lead].config.data_dir.join("a1-0").exists());
    wait_until("the restarted node hosts the new topic", || {
        nodes[lead].config.data_dir.join("b1-0").exists()
    });
    stop(&mut nodes);
}

fn new_producer_id(c: &mut Client) -> (i16, i64) {
    use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
    let req = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let r: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &req);
    (r.error_code, r.producer_id.0)
}

#[test]
fn producer_ids_come_from_the_controller_and_are_never_handed_out_twice() {
    let _bound = Deadline::start("cluster producer id test", Duration::from_secs(120));
    let mut nodes = start_cluster();
    let mut seen = std::collections::BTreeSet::new();
    let mut take = |n: &Node| {
        let mut got = None;
        wait_until("a producer id", || {
            let (code, id) = new_producer_id(&mut n.client());
            got = (code == 0).then_some(id);
            got.is_some()
        });
        let id = got.unwrap_or(-1);
        assert!(id >= 1 << 48, "{id} is not from the controller's range");
        assert!(seen.insert(id), "producer id {id} handed out twice");
    };
    for n in &nodes {
        take(n);
        take(n);
    }
    // A restarted node takes a new block: its ids are new too, whoever leads the
    // controller meanwhile.
    let ctl = controller(&nodes);
    if let Some(h) = nodes[ctl].handle.take() {
        h.shutdown();
    }
    let other = (ctl + 1) % 3;
    take(&nodes[other]);
    nodes[ctl].handle = Some(runtime::start(nodes[ctl].config.clone()).expect("restarts"));
    for n in &nodes {
        take(n);
    }
    assert_eq!(seen.len(), 10);
    stop(&mut nodes);
}

fn reassign(c: &mut Client, topic: &str, partition: i32, replicas: Vec<i32>) -> i16 {
    reassign_or_cancel(c, topic, partition, Some(replicas))
}

/// AlterPartitionReassignments for one partition: a move, or (`None`) its cancellation.
fn reassign_or_cancel(
    c: &mut Client,
    topic: &str,
    partition: i32,
    replicas: Option<Vec<i32>>,
) -> i16 {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    };
    let req = AlterPartitionReassignmentsRequest::default().with_topics(vec![
        ReassignableTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect()))]),
    ]);
    let r: AlterPartitionReassignmentsResponse =
        c.call(ApiKey::AlterPartitionReassignments, 0, &req);
    r.responses[0].partitions[0].error_code
}

fn moves_under_way(c: &mut Client) -> usize {
    use kafka_protocol::messages::{
        ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    };
    let r: ListPartitionReassignmentsResponse = c.call(
        ApiKey::ListPartitionReassignments,
        0,
        &ListPartitionReassignmentsRequest::default(),
    );
    r.topics.iter().map(|t| t.partitions.len()).sum()
}

#[test]
fn a_partition_moves_to_another_node_and_its_leader_and_data_follow() {
    let _bound = Deadline::start("partition move test", Duration::from_secs(150));
    let mut nodes = start_cluster();
    let ctl = controller(&nodes);
    assert_eq!(
        create(&mut nodes[ctl].client(), "m", 2).topics[0].error_code,
        0
    );
    let replicas = |c: &mut Client| -> Vec<i32> {
        metadata(c, Some("m")).topics[0].partitions[0]
            .replica_nodes
            .iter()
            .map(|b| b.0)
            .collect()
    };
    known_everywhere(&nodes, "m");
    let before = replicas(&mut nodes[0].client());
    assert_eq!(before.len(), 2);
    let newcomer = (1..=3)
        .map(|n| n * 1024)
        .find(|b| !before.contains(b))
        .unwrap_or(0);
    let leader_index = |b: i32| (b / 1024 - 1) as usize;
    wait_until("a leader", || leader(&mut nodes[0].client(), "m").is_some());
    for i in 0..50u32 {
        let l = leader(&mut nodes[0].client(), "m").unwrap_or(before[0]);
        let (code, _) = produce_one(&mut nodes[leader_index(l)].client(), "m", &i.to_be_bytes());
        assert_eq!(code, 0);
    }
    // The preferred (first) replica leaves; the node that had none joins.
    let target = vec![newcomer, before[1]];
    assert_eq!(
        reassign(&mut nodes[ctl].client(), "m", 0, target.clone()),
        0
    );
    // A second move of the same partition waits for the first.
    assert_ne!(
        reassign(&mut nodes[ctl].client(), "m", 0, before.clone()),
        0
    );
    wait_within("the move is over", Duration::from_secs(60), || {
        let mut c = nodes[ctl].client();
        moves_under_way(&mut c) == 0 && replicas(&mut c) == target
    });
    for n in &nodes {
        wait_until(
            "every node knows the new replicas and a leader among them",
            || {
                let mut c = n.client();
                replicas(&mut c) == target
                    && leader(&mut c, "m").is_some_and(|l| target.contains(&l))
            },
        );
    }
    let gone = leader_index(before[0]);
    wait_until("the old replica's directory is removed", || {
        !nodes[gone].config.data_dir.join("m-0").exists()
    });
    for i in 50..60u32 {
        let l = leader(&mut nodes[0].client(), "m").unwrap_or(target[0]);
        let (code, _) = produce_one(&mut nodes[leader_index(l)].client(), "m", &i.to_be_bytes());
        assert_eq!(code, 0, "produce after the move");
    }
    // The newcomer holds everything: it leads once the others stop... ask it directly
    // once it leads (the preferred replica of the target, it gets leadership back).
    let arrived = leader_index(newcomer);
    wait_within("the newcomer leads", Duration::from_secs(60), || {
        leader(&mut nodes[arrived].client(), "m") == Some(newcomer)
    });
    assert_eq!(
        read_partition(&mut nodes[arrived].client(), "m", 0).len(),
        60
    );
    stop(&mut nodes);
}

#[test]
fn topic_changes_asked_of_any_node_are_made_by_the_controller_leader() {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
    let _bound = Deadline::start("forwarded topic change test", Duration::from_secs(120));
    let mut nodes = start_cluster();
    let ctl = controller(&nodes);
    assert_eq!(
        create(&mut nodes[ctl].client(), "grow", 3).topics[0].error_code,
        0
    );
    // Kafka's brokers forward CreatePartitions and AlterConfigs to their controller: so
    // does a node that does not lead it.
    let other = (ctl + 1) % 3;
    let req = CreatePartitionsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name("grow"))
            .with_count(3)]);
    let r: CreatePartitionsResponse = nodes[other]
        .client()
        .call(ApiKey::CreatePartitions, 3, &req);
    assert_eq!(
        r.results[0].error_code, 0,
        "{:?}",
        r.results[0].error_message
    );
    for n in &nodes {
        wait_until("every node sees three partitions", || {
            metadata(&mut n.client(), Some("grow")).topics[0]
                .partitions
                .len()
                == 3
        });
    }
    stop(&mut nodes);
}

#[test]
fn a_cancelled_move_puts_the_partition_back_on_its_replicas() {
    let _bound = Deadline::start("cancelled move test", Duration::from_secs(150));
    let mut nodes = start_cluster();
    let ctl = controller(&nodes);
    assert_eq!(
        create(&mut nodes[ctl].client(), "c", 2).topics[0].error_code,
        0
    );
    known_everywhere(&nodes, "c");
    let replicas = |c: &mut Client| -> Vec<i32> {
        metadata(c, Some("c")).topics[0].partitions[0]
            .replica_nodes
            .iter()
            .map(|b| b.0)
            .collect()
    };
    let before = replicas(&mut nodes[ctl].client());
    let newcomer = (1..=3)
        .map(|n| n * 1024)
        .find(|b| !before.contains(b))
        .unwrap_or(0);
    let down = (newcomer / 1024 - 1) as usize;
    // The node the partition would move to is down: the move cannot finish.
    if let Some(h) = nodes[down].handle.take() {
        h.shutdown();
    }
    let ctl = controller(&nodes);
    assert_eq!(
        reassign(&mut nodes[ctl].client(), "c", 0, vec![newcomer, before[1]]),
        0
    );
    assert_eq!(moves_under_way(&mut nodes[ctl].client()), 1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        reassign_or_cancel(&mut nodes[ctl].client(), "c", 0, None),
        0
    );
    wait_within("the move is cancelled", Duration::from_secs(60), || {
        let mut c = nodes[ctl].client();
        moves_under_way(&mut c) == 0 && replicas(&mut c) == before
    });
    // Nothing is moving now: cancelling again says so (85 NO_REASSIGNMENT_IN_PROGRESS).
    assert_eq!(
        reassign_or_cancel(&mut nodes[ctl].client(), "c", 0, None),
        85
    );
    let l = leader(&mut nodes[ctl].client(), "c").unwrap_or(before[0]);
    assert!(before.contains(&l), "led by one of its replicas");
    let at = (l / 1024 - 1) as usize;
    assert_eq!(
        produce_one(&mut nodes[at].client(), "c", b"still here").0,
        0
    );
    stop(&mut nodes);
}

/// Base offset of the oldest segment of the log in `dir` (its log start).
fn log_start_in(dir: &std::path::Path) -> i64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.strip_suffix(".log")
                        .and_then(|b| b.parse::<i64>().ok())
                })
                .min()
                .unwrap_or(-1)
        })
        .unwrap_or(-1)
}

#[test]
fn a_node_away_past_the_cut_of_the_logs_is_sent_snapshots_and_serves_again() {
    let _bound = Deadline::start("snapshot test", Duration::from_secs(150));
    let dirs = vec![
        TestBroker::temp_dir(),
        TestBroker::temp_dir(),
        TestBroker::temp_dir(),
    ];
    let mut nodes = start_cluster_with(dirs, |config| Config {
        metadata_log_segment_bytes: 4096,
        retention_check_ms: 300,
        ..config
    });
    let lead = controller(&nodes);
    assert_eq!(
        create_with(
            &mut nodes[lead].client(),
            "data",
            3,
            &[("segment.bytes", "4096"), ("retention.bytes", "8192")]
        )
        .topics[0]
            .error_code,
        0
    );
    known_everywhere(&nodes, "data");
    let away = (lead + 1) % 3;
    if let Some(h) = nodes[away].handle.take() {
        h.shutdown();
    }
    // While it is away: the partition's log is cut by retention and the controller's
    // once applied, both past everything the node holds.
    let mut data_leader = None;
    wait_until("the partition has a leader on a running node", || {
        data_leader = (0..3)
            .filter(|&i| nodes[i].handle.is_some())
            .find_map(|i| leader(&mut nodes[i].client(), "data"))
            .map(|id| (id / 1024 - 1) as usize)
            .filter(|&i| nodes[i].handle.is_some());
        data_leader.is_some()
    });
    let data_leader = data_leader.unwrap_or(lead);
    let value = vec![b'v'; 1000];
    for _ in 0..60 {
        assert_eq!(
            produce_one(&mut nodes[data_leader].client(), "data", &value).0,
            0
        );
    }
    for i in 0..30 {
        let t = format!("churn-{i}");
        assert_eq!(
            create(&mut nodes[lead].client(), &t, 1).topics[0].error_code,
            0
        );
        assert_eq!(delete_topic(&mut nodes[lead].client(), &t), 0);
    }
    assert_eq!(
        create(&mut nodes[lead].client(), "last", 3).topics[0].error_code,
        0
    );
    let data_dirs: Vec<std::path::PathBuf> =
        nodes.iter().map(|n| n.config.data_dir.clone()).collect();
    let controller_dir = |i: usize| data_dirs[i].join("__cluster_metadata-0");
    let data_dir = |i: usize| data_dirs[i].join("data-0");
    for i in (0..3).filter(|&i| i != away) {
        wait_until("the running nodes cut the partition's log", || {
            log_start_in(&data_dir(i)) > 0
        });
        wait_until("the running nodes cut the controller log", || {
            log_start_in(&controller_dir(i)) > 0
        });
    }
    assert_eq!(log_start_in(&controller_dir(away)), 0);
    assert_eq!(log_start_in(&data_dir(away)), 0);

    nodes[away].handle = Some(runtime::start(nodes[away].config.clone()).expect("restarts"));
    wait_until("the node that was away knows every topic", || {
        topic_names(&mut nodes[away].client()) == ["data", "last"]
    });
    wait_until("its controller log starts at the leader's cut", || {
        log_start_in(&controller_dir(away)) > 0
    });
    let away_broker = (away as i32 + 1) * 1024;
    wait_until(
        "it is in sync on the partition again, its log starting at the cut",
        || {
            let m = metadata(&mut nodes[data_leader].client(), Some("data"));
            let in_sync = m.topics[0].partitions[0]
                .isr_nodes
                .iter()
                .any(|b| b.0 == away_broker);
            in_sync && log_start_in(&data_dir(away)) > 0
        },
    );
    // It serves: with the partition's leader gone, the two left elect a leader and
    // take writes with acks=all.
    if let Some(h) = nodes[data_leader].handle.take() {
        h.shutdown();
    }
    let other = (0..3)
        .find(|&i| i != away && i != data_leader)
        .unwrap_or(away);
    let mut written = false;
    wait_until("the two left take an acks=all write", || {
        written = [away, other].iter().any(|&i| {
            let mut c = nodes[i].client();
            leader(&mut c, "data").is_some_and(|id| (id / 1024 - 1) as usize == i)
                && produce_one(&mut c, "data", b"after").0 == 0
        });
        written
    });
    stop(&mut nodes);
}

/// The node (index into `nodes`) coordinating `group`, as node `ask` says.
fn group_coordinator(nodes: &[Node], ask: usize, group: &str) -> Option<usize> {
    use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
    let r: FindCoordinatorResponse = nodes[ask].client().call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(
            kafka_protocol::protocol::StrBytes::from_string(group.to_string()),
        ),
    );
    (r.error_code == 0 && r.node_id.0 >= 0).then(|| (r.node_id.0 / 1024 - 1) as usize)
}

fn group_heartbeat(c: &mut Client, group: &str, member: &str, generation: i32) -> i16 {
    use kafka_protocol::messages::{GroupId, HeartbeatRequest, HeartbeatResponse};
    use kafka_protocol::protocol::StrBytes;
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id(generation)
        .with_member_id(StrBytes::from_string(member.to_string()));
    let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 4, &req);
    r.error_code
}

#[test]
fn a_groups_new_coordinator_rebuilds_it_and_its_members_carry_on_without_a_rebalance() {
    use bytes::Bytes;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::{
        GroupId, JoinGroupRequest, JoinGroupResponse, SyncGroupRequest, SyncGroupResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    let _bound = Deadline::start("group takeover test", Duration::from_secs(150));
    let dirs = vec![
        TestBroker::temp_dir(),
        TestBroker::temp_dir(),
        TestBroker::temp_dir(),
    ];
    let mut nodes = start_cluster_with(dirs, |config| Config {
        offsets_topic_num_partitions: 3,
        ..config
    });
    let group = "takeover";
    let mut coord = None;
    wait_until("the group has a coordinator", || {
        coord = group_coordinator(&nodes, 0, group);
        coord.is_some()
    });
    let coord = coord.unwrap_or(0);
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(5000)
            .with_member_id(StrBytes::from_string(member.to_string()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(b"subscription"))])
    };
    let mut c = nodes[coord].client();
    let mut member = String::new();
    let mut joined = None;
    wait_until("a member joins the group", || {
        let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 9, &join(&member));
        if r.error_code == 79 {
            member = r.member_id.to_string();
            return false;
        }
        let ok = r.error_code == 0;
        joined = ok.then_some(r.generation_id);
        ok
    });
    let generation = joined.unwrap_or(-1);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id(generation)
        .with_member_id(StrBytes::from_string(member.clone()))
        .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
        .with_protocol_name(Some(StrBytes::from_static_str("range")))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(StrBytes::from_string(member.clone()))
            .with_assignment(Bytes::from_static(b"every-partition"))]);
    let s: SyncGroupResponse = c.call(ApiKey::SyncGroup, 5, &sync);
    assert_eq!(s.error_code, 0);
    // Stored within a session check; then the coordinator's node goes.
    std::thread::sleep(Duration::from_millis(800));
    if let Some(h) = nodes[coord].handle.take() {
        h.shutdown();
    }
    let ask = (coord + 1) % 3;
    let mut next = None;
    wait_until("another node coordinates the group", || {
        next = group_coordinator(&nodes, ask, group).filter(|&n| n != coord);
        next.is_some()
    });
    let mut answer = -1;
    wait_until(
        "the member's heartbeat is answered by the new coordinator",
        || {
            let Some(at) = next
                .take()
                .or_else(|| group_coordinator(&nodes, ask, group))
                .filter(|&n| nodes[n].handle.is_some())
            else {
                return false;
            };
            answer = group_heartbeat(&mut nodes[at].client(), group, &member, generation);
            // Asked again while the coordinator moves (NOT_COORDINATOR 16, not available
            // 15) or loads (COORDINATOR_LOAD_IN_PROGRESS 14).
            !matches!(answer, 14..=16)
        },
    );
    assert_eq!(
        answer, 0,
        "the member carries on with its generation (not a rejoin: 25 or 22)"
    );
    stop(&mut nodes);
}
