//! A data directory written by the previous release opens, is upgraded, and serves what
//! it held. The fixture `tests/fixtures/datadir-617d542.tar.gz` was written by release
//! 617d542 (2 shards) with `tests/fixtures/make_datadir_fixture.py`, which says what is
//! in it: the constants below must match that script.

use std::collections::BTreeMap;
use std::path::Path;

use caudal::protocol::record_batch::{parse_header, set_producer, uncompressed_records};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, InitProducerIdRequest, InitProducerIdResponse,
    MetadataRequest, MetadataResponse, OffsetFetchRequest, OffsetFetchResponse, ProducerId,
};
use uuid::Uuid;

use super::*;

const FIXTURE: &str = "tests/fixtures/datadir-617d542.tar.gz";
/// Shards of the broker that wrote the fixture: a partition lives on one of them.
const SHARDS: usize = 2;
const ORDERS_ID: u128 = 0x31c1_4a42_6e38_41ac_a7e4_728e_8d34_3c42;
const AUDIT_ID: u128 = 0x432b_54a7_64e8_45b4_9d7e_f029_90db_88b2;
const ORDERS_RECORDS: i64 = 300;
const AUDIT_RECORDS: i64 = 30;
/// Where the old release placed the partitions of "orders" (shard = broker id).
const ORDERS_LEADERS: [i32; 3] = [0, 1, 0];
const AUDIT_LEADER: i32 = 1;
/// The last batch of the old idempotent producer on "audit": id 0, epoch 0.
const OLD_PID: i64 = 0;
const OLD_LAST_BATCH: (i32, i64, usize) = (25, 25, 5); // (base sequence, base offset, records)

fn orders_value(p: i32, i: i64) -> Vec<u8> {
    let mut v = format!("orders-{p}-{i:04}-").into_bytes();
    v.resize(100, b'x');
    v
}

/// Unpacks the fixture into a fresh temporary directory.
fn unpack_fixture() -> tempfile::TempDir {
    let dir = TestBroker::temp_dir();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "unpacking {}", fixture.display());
    dir
}

fn metadata(c: &mut Client) -> MetadataResponse {
    let req = MetadataRequest::default().with_topics(None);
    c.call(ApiKey::Metadata, 12, &req)
}

/// Topic configs that are not defaults, by name.
fn topic_overrides(c: &mut Client, topic: &str) -> BTreeMap<String, String> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None)]);
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &req);
    assert_eq!(r.results[0].error_code, 0);
    r.results[0]
        .configs
        .iter()
        .filter(|c| c.config_source == 1) // TOPIC_CONFIG: set on the topic
        .map(|c| {
            let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
            (c.name.to_string(), value)
        })
        .collect()
}

/// (offset, key, value) of every record of a partition, read from its leader.
fn records(broker: &TestBroker, topic: &str, partition: i32, leader: i32) -> Vec<Record> {
    let mut c = Client::connect(broker.addr(leader as usize));
    let mut out = Vec::new();
    for b in read_partition(&mut c, topic, partition) {
        let h = parse_header(&b).unwrap();
        for r in uncompressed_records(&b).unwrap() {
            out.push((
                h.base_offset + r.offset_delta,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
            ));
        }
    }
    out
}

type Record = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn committed(broker: &TestBroker, group: &str, topic: &str) -> Vec<(i32, i64)> {
    let mut c = Client::connect(broker.addr(0));
    let r: FindCoordinatorResponse = c.call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string())),
    );
    assert_eq!(r.error_code, 0);
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], r.port as u16)));
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(name(topic))
            .with_partition_indexes(vec![0, 1, 2])]));
    let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 7, &fetch);
    assert_eq!(r.error_code, 0);
    r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect()
}

fn init_producer_id(c: &mut Client) -> i64 {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let r: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &req);
    assert_eq!(r.error_code, 0);
    r.producer_id.0
}

fn base_offset(r: &ProduceResponse) -> (i16, i64) {
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// What a user of the old release had: topics, placements, configs, every record at its
/// offset, committed offsets. `extra` records were produced after the upgrade.
fn check_old_data(broker: &TestBroker, extra: i64) {
    let mut c = Client::connect(broker.addr(0));
    let meta = metadata(&mut c);
    let topics: BTreeMap<String, _> = meta
        .topics
        .iter()
        .map(|t| (t.name.as_ref().unwrap().to_string(), t))
        .collect();
    assert_eq!(
        topics.keys().collect::<Vec<_>>(),
        ["audit", "orders"],
        "the topic deleted before the upgrade stays deleted"
    );
    for (topic, id, leaders) in [
        ("orders", ORDERS_ID, &ORDERS_LEADERS[..]),
        ("audit", AUDIT_ID, &[AUDIT_LEADER][..]),
    ] {
        let t = topics[topic];
        assert_eq!(t.error_code, 0);
        assert_eq!(t.topic_id, Uuid::from_u128(id), "{topic} keeps its id");
        let mut parts: Vec<_> = t.partitions.iter().collect();
        parts.sort_by_key(|p| p.partition_index);
        assert_eq!(parts.len(), leaders.len(), "{topic} partitions");
        for (p, &leader) in parts.iter().zip(leaders) {
            assert_eq!(
                p.leader_id.0, leader,
                "{topic}-{} leader",
                p.partition_index
            );
            assert_eq!(p.leader_epoch, 0);
            assert_eq!(p.replica_nodes, vec![p.leader_id]);
            assert_eq!(p.isr_nodes, vec![p.leader_id]);
        }
    }
    assert_eq!(
        topic_overrides(&mut c, "orders"),
        BTreeMap::from([
            ("max.message.bytes".to_string(), "65536".to_string()),
            ("retention.ms".to_string(), "-1".to_string()),
            ("segment.bytes".to_string(), "16384".to_string()),
        ])
    );
    assert!(topic_overrides(&mut c, "audit").is_empty());

    for (p, &leader) in ORDERS_LEADERS.iter().enumerate() {
        let p = p as i32;
        let got = records(broker, "orders", p, leader);
        assert_eq!(got.len() as i64, ORDERS_RECORDS + extra, "orders-{p}");
        for (i, (offset, key, value)) in got.iter().take(ORDERS_RECORDS as usize).enumerate() {
            let i = i as i64;
            assert_eq!(*offset, i);
            assert_eq!(key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(value.as_deref(), Some(&orders_value(p, i)[..]));
        }
    }
    let got = records(broker, "audit", 0, AUDIT_LEADER);
    assert_eq!(got.len() as i64, AUDIT_RECORDS + extra);
    for (i, (offset, _, value)) in got.iter().take(AUDIT_RECORDS as usize).enumerate() {
        assert_eq!(*offset, i as i64);
        assert_eq!(value.as_deref(), Some(format!("audit-{i:04}").as_bytes()));
    }

    assert_eq!(
        committed(broker, "billing", "orders"),
        vec![(0, 100), (1, 50), (2, 7)]
    );
}

#[test]
fn opens_and_upgrades_a_data_directory_from_the_previous_release() {
    let mut broker = TestBroker::start_in(unpack_fixture(), SHARDS);
    let data = broker.data_dir();
    check_old_data(&broker, 0);
    // The old release shut down cleanly, and its markers and (headerless) indexes are
    // read as they are: no partition is scanned, no sealed index rebuilt.
    let clean: u64 = (0..SHARDS)
        .map(|s| broker.stat(s, |st| &st.opened_clean))
        .sum();
    assert_eq!(clean, 4, "orders-0..2 and audit-0 open without a scan");
    let sealed = std::fs::read(data.join("orders-1/00000000000000000130.index")).unwrap();
    assert_eq!(sealed.len(), 24, "a version 1 index of three entries, kept");

    // Every Caudal file that was rewritten on open now starts with its magic and version.
    let metadata_log = std::fs::read(data.join("meta/metadata.log")).unwrap();
    assert!(
        metadata_log.starts_with(b"CDMT\x00\x04"),
        "metadata log upgraded"
    );
    let producer_ids = std::fs::read(data.join("meta/producer-ids-0")).unwrap();
    assert!(
        producer_ids.starts_with(b"CDPI\x00\x02"),
        "producer ids upgraded"
    );

    // New records continue at the next offset of every partition.
    for (p, &leader) in ORDERS_LEADERS.iter().enumerate() {
        let mut c = Client::connect(broker.addr(leader as usize));
        let value = orders_value(p as i32, ORDERS_RECORDS);
        let r = produce(&mut c, "orders", p as i32, batch(&[&value]));
        assert_eq!(base_offset(&r), (0, ORDERS_RECORDS), "orders-{p}");
    }

    // The old idempotent producer's state survived: its last batch, retried, is a
    // duplicate answered with its old offset, and its next sequence is taken.
    let mut c = Client::connect(broker.addr(AUDIT_LEADER as usize));
    let (last_seq, last_offset, last_count) = OLD_LAST_BATCH;
    let values: Vec<Vec<u8>> = (last_offset..last_offset + last_count as i64)
        .map(|i| format!("audit-{i:04}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let mut retry = batch(&refs);
    set_producer(&mut retry, OLD_PID, 0, last_seq);
    assert_eq!(
        base_offset(&produce(&mut c, "audit", 0, retry)),
        (0, last_offset)
    );
    let mut next = batch(&[format!("audit-{AUDIT_RECORDS:04}").as_bytes()]);
    set_producer(&mut next, OLD_PID, 0, last_seq + last_count as i32);
    assert_eq!(
        base_offset(&produce(&mut c, "audit", 0, next)),
        (0, AUDIT_RECORDS)
    );
    // New producer ids come after the blocks the old release reserved.
    let mut c0 = Client::connect(broker.addr(0));
    let pid = init_producer_id(&mut c0);
    assert!(pid >> 20 >= 1000, "producer id {pid} may repeat an old one");
    drop((c, c0));

    check_old_data(&broker, 1);
    broker.restart();
    check_old_data(&broker, 1);
    let metadata_log = std::fs::read(data.join("meta/metadata.log")).unwrap();
    assert!(metadata_log.starts_with(b"CDMT\x00\x04"));
    // The active segments' indexes, written at the clean shutdown, are versioned too.
    let index = std::fs::read(data.join("orders-0/00000000000000000260.index")).unwrap();
    assert!(index.starts_with(b"CDOI\x00\x02"), "offset index rewritten");
    let times = std::fs::read(data.join("orders-0/00000000000000000260.timeindex")).unwrap();
    assert!(times.starts_with(b"CDTI\x00\x02"), "time index rewritten");
}
