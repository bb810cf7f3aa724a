//! Cluster metadata: brokers, partition leaders, topic creation, offsets by time.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, ApiKey, BrokerId, CreateTopicsRequest, ListOffsetsRequest,
    MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::{error_name, Conn};

/// Where each partition of the topic lives.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Broker id -> `host:port`.
    pub brokers: HashMap<i32, String>,
    /// Partition -> leader broker id, sorted by partition.
    pub leaders: BTreeMap<i32, i32>,
}

impl Topology {
    /// Address of a partition's leader.
    pub fn leader_addr(&self, partition: i32) -> Result<&str> {
        let leader = self
            .leaders
            .get(&partition)
            .ok_or_else(|| anyhow!("partition {partition} is unknown"))?;
        self.brokers.get(leader).map(|s| s.as_str()).ok_or_else(|| {
            anyhow!("leader {leader} of partition {partition} is not a known broker")
        })
    }

    /// Partitions grouped by the address of their leader.
    pub fn by_leader(&self, partitions: &[i32]) -> Result<BTreeMap<String, Vec<i32>>> {
        let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for &p in partitions {
            out.entry(self.leader_addr(p)?.to_string())
                .or_default()
                .push(p);
        }
        Ok(out)
    }

    /// All partition ids.
    pub fn partitions(&self) -> Vec<i32> {
        self.leaders.keys().copied().collect()
    }
}

/// Topic name as the protocol types want it.
pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// The topic's topology, its error, its partition count, and where the controller is
/// (when Metadata names it).
async fn metadata(conn: &mut Conn, topic: &str) -> Result<(Topology, i16, i32, Option<String>)> {
    let mut req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
    ]));
    req.allow_auto_topic_creation = false;
    let resp = conn.call(&req).await?;
    let brokers = resp
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let t = resp
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .ok_or_else(|| anyhow!("metadata has no entry for topic {topic}"))?;
    let mut leaders = BTreeMap::new();
    for p in &t.partitions {
        if p.error_code == 0 && p.leader_id.0 >= 0 {
            leaders.insert(p.partition_index, p.leader_id.0);
        }
    }
    let all = t.partitions.len() as i32;
    let topo = Topology { brokers, leaders };
    let controller = topo.brokers.get(&resp.controller_id.0).cloned();
    Ok((topo, t.error_code, all, controller))
}

/// Where the topic's partitions are led now, as one broker sees it.
pub async fn read_topology(conn: &mut Conn, topic: &str) -> Result<Topology> {
    let (topo, err, _, _) = metadata(conn, topic).await?;
    if err != 0 {
        bail!("metadata for {topic}: {}", error_name(err));
    }
    Ok(topo)
}

/// Reads the topic's metadata, creating the topic with `partitions` partitions (and the
/// given topic configs and replication factor, -1 for the brokers' default) first if it
/// does not exist, and waits (up to 15 s) until every
/// partition has a leader, and, for a topic it created, until every leader serves it.
pub async fn load_topology(
    bootstrap: &str,
    client_id: &str,
    topic: &str,
    partitions: i32,
    create: bool,
    configs: &[(String, String)],
    replication_factor: i16,
) -> Result<Topology> {
    let mut conn = Conn::connect(bootstrap, client_id).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    // A broker that has just (re)started may answer before its metadata has every topic
    // (Kafka replays its metadata log): like Kafka's clients, ask again for a while.
    let unknown_until = Instant::now() + Duration::from_secs(5);
    let mut created = false;
    loop {
        let (topo, err, count, controller) = metadata(&mut conn, topic).await?;
        if err == 0 && count > 0 && topo.leaders.len() as i32 == count {
            if create && count != partitions && partitions > 0 {
                eprintln!(
                    "caudal-loadgen: topic {topic} exists with {count} partitions (asked for {partitions}); using {count}"
                );
            }
            // Kafka names a new partition's leader in its metadata before that broker
            // serves it (NOT_LEADER_OR_FOLLOWER for a while; seconds for 1,000
            // partitions on one core): wait until every leader answers for its
            // partitions, as a client's retries would.
            if !created {
                return Ok(topo);
            }
            match list_offsets(&topo, client_id, topic, &topo.partitions(), LATEST).await {
                Ok(_) => return Ok(topo),
                Err(e) if Instant::now() > deadline => {
                    bail!("topic {topic}: leaders not serving after 15 s: {e:#}")
                }
                Err(_) => {}
            }
        }
        if err == 3 && create && !created {
            // Like Kafka's admin clients: to the controller Metadata names, again while
            // it answers NOT_CONTROLLER (a cluster's controller is elected).
            created = match controller {
                Some(addr) if addr != bootstrap => {
                    let mut to = Conn::connect(&addr, client_id).await?;
                    create_topic(&mut to, topic, partitions, configs, replication_factor).await?
                }
                _ => {
                    create_topic(&mut conn, topic, partitions, configs, replication_factor).await?
                }
            };
        } else if err == 3 && !create && Instant::now() > unknown_until {
            bail!("topic {topic} does not exist");
        }
        if Instant::now() > deadline {
            bail!(
                "topic {topic}: partitions have no leader after 15 s (error {})",
                error_name(err)
            );
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the topic; false when the broker asked is not the controller (ask again).
async fn create_topic(
    conn: &mut Conn,
    topic: &str,
    partitions: i32,
    configs: &[(String, String)],
    replication_factor: i16,
) -> Result<bool> {
    let v = conn.version::<CreateTopicsRequest>()?;
    let configs = configs
        .iter()
        .map(|(k, val)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_value(Some(StrBytes::from_string(val.clone())))
        })
        .collect();
    let t = CreatableTopic::default()
        .with_name(topic_name(topic))
        .with_num_partitions(partitions.max(1))
        .with_configs(configs)
        // -1 (broker default) needs v4; a single node has one replica anyway.
        .with_replication_factor(match replication_factor {
            rf if rf > 0 => rf,
            _ if v >= 4 => -1,
            _ => 1,
        });
    let req = CreateTopicsRequest::default()
        .with_topics(vec![t])
        .with_timeout_ms(30_000);
    let resp = conn.call(&req).await?;
    for t in &resp.topics {
        match t.error_code {
            0 | 36 => {}
            41 => return Ok(false),
            code => bail!(
                "creating topic {topic}: {} ({})",
                error_name(code),
                t.error_message.as_ref().map(|m| m.as_str()).unwrap_or("")
            ),
        }
    }
    Ok(true)
}

/// `ListOffsets` timestamp for the earliest offset.
pub const EARLIEST: i64 = -2;
/// `ListOffsets` timestamp for the end of the log.
pub const LATEST: i64 = -1;

/// Offsets of `partitions` at `timestamp` (`EARLIEST` or `LATEST`), asking each leader.
pub async fn list_offsets(
    topo: &Topology,
    client_id: &str,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<HashMap<i32, i64>> {
    let mut out = HashMap::new();
    for (addr, parts) in topo.by_leader(partitions)? {
        let mut conn = Conn::connect(&addr, client_id).await?;
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    parts
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let resp = conn.call(&req).await?;
        for t in &resp.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    bail!(
                        "ListOffsets {topic}-{}: {}",
                        p.partition_index,
                        error_name(p.error_code)
                    );
                }
                out.insert(p.partition_index, p.offset);
            }
        }
    }
    Ok(out)
}

/// Moves `partition` of `topic` to `replicas` (AlterPartitionReassignments, as Kafka's
/// reassignment tool sends it); returns once the move has started.
pub async fn reassign(
    bootstrap: &str,
    client_id: &str,
    topic: &str,
    partition: i32,
    replicas: &[i32],
) -> Result<()> {
    // Sent to the controller, as Kafka's admin client does.
    let mut conn = Conn::connect(bootstrap, client_id).await?;
    let (_, _, _, controller) = metadata(&mut conn, topic).await?;
    let controller = controller.ok_or_else(|| anyhow!("{bootstrap} knows no controller"))?;
    let mut conn = Conn::connect(&controller, client_id).await?;
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(Some(
                    replicas.iter().map(|&b| BrokerId(b)).collect(),
                ))])]);
    let resp = conn.call(&req).await?;
    if resp.error_code != 0 {
        bail!(
            "AlterPartitionReassignments: {} {}",
            error_name(resp.error_code),
            resp.error_message.as_deref().unwrap_or("")
        );
    }
    for t in &resp.responses {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!(
                    "AlterPartitionReassignments {topic}-{}: {} {}",
                    p.partition_index,
                    error_name(p.error_code),
                    p.error_message.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

/// The APIs and versions a broker supports, for `caudal-loadgen probe`.
pub async fn probe(bootstrap: &str, client_id: &str) -> Result<String> {
    let conn = Conn::connect(bootstrap, client_id).await?;
    let mut s = String::new();
    for key in ApiKey::iter() {
        if let Some((lo, hi)) = conn.versions.broker_range(key) {
            let used = match conn.versions.pick(key) {
                Ok(v) => format!("loadgen uses v{v}"),
                Err(_) => "not used".to_string(),
            };
            s.push_str(&format!("{key:?} {lo}..={hi} ({used})\n"));
        }
    }
    Ok(s)
}
