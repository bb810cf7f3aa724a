//! Admin operations at run time: configs altered and persisted, topics grown, cluster
//! and log dirs described.

use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request as inc;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeLogDirsRequest, DescribeLogDirsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::*;

fn topic_config(c: &mut Client, topic: &str, key: &str) -> String {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_string(key.to_string())]))]);
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &req);
    r.results[0].configs[0].value.as_ref().unwrap().to_string()
}

fn set_incremental(c: &mut Client, topic: &str, key: &str, value: &str) -> i16 {
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        inc::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(vec![inc::AlterableConfig::default()
                .with_name(StrBytes::from_string(key.to_string()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(value.to_string())))]),
    ]);
    let r: IncrementalAlterConfigsResponse = c.call(ApiKey::IncrementalAlterConfigs, 1, &req);
    r.responses[0].error_code
}

#[test]
fn altered_retention_takes_effect_at_run_time_and_persists() {
    let mut broker = TestBroker::start(1);
    broker.config.retention_check_ms = 200;
    broker.restart();
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "aging", 1);
    assert_eq!(set_incremental(&mut c, "aging", "segment.bytes", "2000"), 0);
    // Records from an hour ago fill several segments.
    let old = caudal::clock::now_ms() - 3_600_000;
    for _ in 0..20 {
        let b = caudal::protocol::record_batch::build_batch(
            0,
            old,
            &[&[7u8; 300]],
            caudal::protocol::record_batch::Compression::None,
        );
        produce(&mut c, "aging", 0, b);
    }
    let dir = broker.data_dir().join("aging-0");
    let segments = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "log")
            .count()
    };
    let before = segments();
    assert!(before >= 3, "{before} segments");
    // A bad value is refused, naming the key.
    let bad = IncrementalAlterConfigsRequest::default().with_resources(vec![
        inc::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("aging"))
            .with_configs(vec![inc::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_static_str("soon")))]),
    ]);
    let r: IncrementalAlterConfigsResponse = c.call(ApiKey::IncrementalAlterConfigs, 1, &bad);
    assert_eq!(r.responses[0].error_code, 40);
    assert!(r.responses[0]
        .error_message
        .as_ref()
        .unwrap()
        .contains("retention.ms"));
    // Retention of one minute: the old segments go.
    assert_eq!(set_incremental(&mut c, "aging", "retention.ms", "60000"), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while segments() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(segments(), 1, "old segments deleted by the new retention");
    drop(c);
    broker.restart();
    let mut c = Client::connect(broker.addr(0));
    assert_eq!(topic_config(&mut c, "aging", "retention.ms"), "60000");
    assert_eq!(topic_config(&mut c, "aging", "segment.bytes"), "2000");
    // AlterConfigs replaces the whole set: segment.bytes returns to its default.
    let req = AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str("aging"))
        .with_configs(vec![AlterableConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_value(Some(StrBytes::from_static_str("120000")))])]);
    let r: AlterConfigsResponse = c.call(ApiKey::AlterConfigs, 2, &req);
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(topic_config(&mut c, "aging", "segment.bytes"), "1073741824");
}

#[test]
fn create_partitions_grows_a_topic_across_shards() {
    let broker = TestBroker::start(2);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "growing", 1);
    let req = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name("growing"))
            .with_count(4)]);
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &req);
    assert_eq!(r.results[0].error_code, 0);
    let l = leaders(&mut c, "growing");
    assert_eq!(l.len(), 4);
    assert!(l.contains(&0) && l.contains(&1));
    for (p, &leader) in l.iter().enumerate() {
        let mut pc = Client::connect(broker.addr(leader as usize));
        assert_eq!(
            produce(&mut pc, "growing", p as i32, batch(&[b"v"])).responses[0].partition_responses
                [0]
            .error_code,
            0
        );
    }
    // Shrinking is refused.
    let req = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name("growing"))
            .with_count(2)]);
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &req);
    assert_eq!(r.results[0].error_code, 37);
}

#[test]
fn cluster_and_log_dirs_are_described() {
    let broker = TestBroker::start(2);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "described", 2);
    let r: DescribeClusterResponse = c.call(
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default(),
    );
    assert_eq!(r.brokers.len(), 2);
    assert_eq!(r.controller_id.0, 0);
    let mut sizes = 0;
    for shard in 0..2 {
        let mut sc = Client::connect(broker.addr(shard));
        let r: DescribeLogDirsResponse = sc.call(
            ApiKey::DescribeLogDirs,
            4,
            &DescribeLogDirsRequest::default().with_topics(None),
        );
        assert_eq!(r.results.len(), 1);
        assert!(r.results[0].total_bytes > 0);
        sizes += r.results[0]
            .topics
            .iter()
            .map(|t| t.partitions.len())
            .sum::<usize>();
    }
    assert_eq!(sizes, 2, "each shard reports only its own partitions");
}

#[test]
fn deleting_a_topic_removes_its_data_from_disk() {
    use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
    let broker = TestBroker::start(2);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "doomed", 2);
    create_topic(&mut c, "kept", 1);
    let value = [1u8; 1000];
    let values = vec![&value[..]; 50];
    for (p, leader) in leaders(&mut c, "doomed").into_iter().enumerate() {
        let mut pc = Client::connect(broker.addr(leader as usize % 1024));
        let r = produce(&mut pc, "doomed", p as i32, batch(&values));
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let dirs: Vec<_> = (0..2)
        .map(|p| broker.data_dir().join(format!("doomed-{p}")))
        .collect();
    assert!(
        dirs.iter().all(|d| d.exists()),
        "partition directories exist"
    );
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_topic_names(vec![name("doomed")]);
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 5, &req);
    assert_eq!(r.responses[0].error_code, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dirs.iter().any(|d| d.exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "partition directories still on disk: {dirs:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        broker.data_dir().join("kept-0").exists(),
        "other topics stay"
    );
}

#[test]
fn min_insync_replicas_above_the_replicas_refuses_acks_all_but_not_acks_1() {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    use kafka_protocol::messages::ProduceResponse;
    let broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name("strict"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("min.insync.replicas"))
                .with_value(Some(StrBytes::from_static_str("2")))])]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
    let send = |c: &mut Client, acks: i16| {
        let req = produce_request("strict", 0, batch(&[b"v"]), acks);
        let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
        r.responses[0].partition_responses[0].error_code
    };
    assert_eq!(send(&mut c, -1), 19, "NOT_ENOUGH_REPLICAS");
    assert_eq!(send(&mut c, 1), 0);
    assert_eq!(
        read_partition(&mut c, "strict", 0).len(),
        1,
        "nothing of the refused one"
    );
}
