//! Torn and corrupt files in a stopped broker's data directory: on start it keeps what is
//! intact, says in its log what it dropped, and never serves corrupt bytes.

use std::path::{Path, PathBuf};

use caudal::protocol::record_batch::{check_batch, uncompressed_records};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchResponse, GroupId, MetadataRequest,
    MetadataResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::*;

fn client(broker: &Broker, shard: usize) -> Client {
    connect(broker.addr(shard), &AtomicBool::new(false)).unwrap()
}

fn create(broker: &Broker, topic: &str, partitions: i32, segment_bytes: Option<&str>) -> Vec<i32> {
    let mut c = client(broker, 0);
    let mut t = CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(1);
    if let Some(sb) = segment_bytes {
        t = t.with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("segment.bytes"))
            .with_value(Some(StrBytes::from_string(sb.to_string())))]);
    }
    let r: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(vec![t]),
    );
    assert_eq!(r.topics[0].error_code, 0);
    leaders(&mut c, topic)
}

fn produce_n(broker: &Broker, topic: &str, leader: i32, batches: usize) {
    let mut c = client(broker, leader as usize);
    for i in 0..batches {
        let values: Vec<Vec<u8>> = (0..10)
            .map(|j| format!("{i}-{j}-{}", "x".repeat(200)).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let r = produce(
            &mut c,
            topic,
            0,
            build_batch(0, 1_700_000_000_000, &refs, Compression::None),
        );
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

fn log_text(broker: &Broker) -> String {
    std::fs::read_to_string(broker.log_path()).unwrap_or_default()
}

/// (error code, values) of a fetch from `offset`.
fn fetch_values(c: &mut Client, topic: &str, offset: i64) -> (i16, usize) {
    let r: FetchResponse = c.call(ApiKey::Fetch, 11, &fetch_request(topic, 0, offset, 100));
    let p = &r.responses[0].partitions[0];
    let mut n = 0;
    let mut records = p.records.clone().unwrap_or_default();
    while !records.is_empty() {
        let size = caudal::protocol::record_batch::peek_batch_size(&records).unwrap();
        let b = records.split_to(size.min(records.len()));
        check_batch(&b).expect("the broker served a corrupt batch");
        n += uncompressed_records(&b).unwrap().len();
    }
    (p.error_code, n)
}

#[test]
fn a_torn_tail_is_cut_off_and_the_cut_is_logged() {
    let mut broker = Broker::start();
    let leaders = create(&broker, "torn", 1, None);
    produce_n(&broker, "torn", leaders[0], 50);
    assert!(broker.stop().success(), "SIGTERM exits 0");
    let dir = broker.data().join("torn-0");
    // As after a crash mid-write: no clean-shutdown marker, last batch cut short.
    std::fs::remove_file(dir.join("clean-shutdown")).unwrap();
    let seg = &segments(&dir)[0];
    let len = std::fs::metadata(seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .set_len(len - 30)
        .unwrap();
    broker.spawn();
    let mut c = client(&broker, leaders[0] as usize);
    assert_eq!(read_partition(&mut c, "torn", 0).len(), 49);
    let r = produce(
        &mut c,
        "torn",
        0,
        build_batch(0, 1, &[b"after"], Compression::None),
    );
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 490);
    let log = log_text(&broker);
    assert!(
        log.contains("truncating torn or corrupt tail"),
        "the cut is logged:\n{log}"
    );
}

#[test]
fn corrupt_bytes_in_a_sealed_segment_are_never_served_and_damaged_indexes_are_rebuilt() {
    let mut broker = Broker::start();
    let leaders = create(&broker, "rot", 1, Some("20000"));
    produce_n(&broker, "rot", leaders[0], 60);
    assert!(broker.stop().success());
    let dir = broker.data().join("rot-0");
    let segs = segments(&dir);
    assert!(segs.len() >= 4, "several segments");
    // Flip a byte inside a record of the first segment; damage the second's index.
    flip(&segs[0], 500);
    let index = segs[1].with_extension("index");
    let mut idx = std::fs::read(&index).unwrap();
    idx.truncate(idx.len() - 3);
    std::fs::write(&index, idx).unwrap();
    std::fs::remove_file(segs[2].with_extension("timeindex")).unwrap();
    broker.spawn();
    let mut c = client(&broker, leaders[0] as usize);
    // The damaged batch is refused with KAFKA_STORAGE_ERROR, never served.
    let (code, _) = fetch_values(&mut c, "rot", 0);
    assert_eq!(code, 56);
    // Everything in the later segments reads back.
    let second_base: i64 = segs[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut offset = second_base;
    let mut total = 0;
    loop {
        let (code, n) = fetch_values(&mut c, "rot", offset);
        assert_eq!(code, 0);
        if n == 0 {
            break;
        }
        total += n;
        offset += n as i64;
    }
    assert_eq!(offset, 600);
    assert_eq!(total as i64, 600 - second_base);
    assert!(log_text(&broker).contains("index missing or damaged, rebuilding"));
}

#[test]
fn a_damaged_metadata_log_keeps_the_topics_before_the_damage() {
    let mut broker = Broker::start();
    create(&broker, "alpha", 1, None);
    create(&broker, "beta", 1, None);
    let gamma = create(&broker, "gamma", 1, None);
    produce_n(&broker, "gamma", gamma[0], 1);
    assert!(broker.stop().success());
    let meta = broker.data().join("meta/metadata.log");
    let len = std::fs::metadata(&meta).unwrap().len();
    flip(&meta, len - 5);
    broker.spawn();
    let mut c = client(&broker, 0);
    let r: MetadataResponse = c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    );
    let mut names: Vec<String> = r
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec!["alpha", "beta"]);
    let log = log_text(&broker);
    assert!(
        log.contains("truncating torn or corrupt tail of metadata log"),
        "{log}"
    );
    // gamma's data is set aside, not destroyed.
    assert!(std::fs::read_dir(broker.data().join("orphaned"))
        .unwrap()
        .any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("gamma-0")));
}

#[test]
fn a_damaged_offsets_log_keeps_the_commits_before_the_damage() {
    let mut broker = Broker::start();
    let group = "grp";
    let shard = caudal::group::coordinator_shard(group, 2);
    let mut c = client(&broker, shard);
    for offset in [10, 20, 30] {
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("grp")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)])]);
        let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &req);
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
    }
    drop(c);
    assert!(broker.stop().success());
    let dir = broker.data().join(format!("__offsets-shard-{shard}"));
    std::fs::remove_file(dir.join("clean-shutdown")).unwrap();
    let seg = &segments(&dir)[0];
    let len = std::fs::metadata(seg).unwrap().len();
    flip(seg, len - 3);
    broker.spawn();
    let mut c = client(&broker, shard);
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("grp")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(name("t"))
            .with_partition_indexes(vec![0])]));
    let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 7, &req);
    assert_eq!(
        r.topics[0].partitions[0].committed_offset, 20,
        "the last, damaged commit is dropped"
    );
}
