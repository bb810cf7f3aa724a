use super::*;

#[test]
fn partition_traffic_arrives_on_the_shard_that_owns_it() {
    let broker = TestBroker::start(2);
    let mut c0 = Client::connect(broker.addr(0));
    create_topic(&mut c0, "routed", 4);
    let leaders = leaders(&mut c0, "routed");
    assert_eq!(
        leaders,
        vec![0, 1, 0, 1],
        "partitions spread over both shards"
    );
    let mut clients = [
        Client::connect(broker.addr(0)),
        Client::connect(broker.addr(1)),
    ];
    for (p, &leader) in leaders.iter().enumerate() {
        for _ in 0..5 {
            let r = produce(
                &mut clients[leader as usize],
                "routed",
                p as i32,
                batch(&[b"v"]),
            );
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        }
    }
    // Each shard handled exactly its own partitions' produce requests.
    assert_eq!(broker.stat(0, |s| &s.produce_requests), 10);
    assert_eq!(broker.stat(1, |s| &s.produce_requests), 10);
    assert_eq!(broker.stat(0, |s| &s.not_leader), 0);
    assert_eq!(broker.stat(1, |s| &s.not_leader), 0);
}

#[test]
fn a_request_to_the_wrong_shard_gets_not_leader_or_follower() {
    let broker = TestBroker::start(2);
    let mut c0 = Client::connect(broker.addr(0));
    create_topic(&mut c0, "wrong", 2);
    let leaders = leaders(&mut c0, "wrong");
    let (p, leader) = leaders
        .iter()
        .enumerate()
        .find(|(_, &l)| l == 1)
        .map(|(p, &l)| (p as i32, l))
        .unwrap();
    let r = produce(&mut c0, "wrong", p, batch(&[b"v"]));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 6);
    assert_eq!(broker.stat(0, |s| &s.not_leader), 1);
    // The right shard takes it.
    let mut c1 = Client::connect(broker.addr(leader as usize));
    let r = produce(&mut c1, "wrong", p, batch(&[b"v"]));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
}

#[test]
fn produce_v10_names_the_leader_and_its_endpoint_with_not_leader_or_follower() {
    use kafka_protocol::messages::ProduceResponse;
    let broker = TestBroker::start(2);
    let mut c0 = Client::connect(broker.addr(0));
    create_topic(&mut c0, "hinted", 2);
    let leaders = leaders(&mut c0, "hinted");
    let p = leaders.iter().position(|&l| l == 1).unwrap() as i32;
    let req = produce_request("hinted", p, batch(&[b"v"]), -1);
    for version in [10, 11] {
        let r: ProduceResponse = c0.call(ApiKey::Produce, version, &req);
        let part = &r.responses[0].partition_responses[0];
        assert_eq!(part.error_code, 6, "v{version}");
        assert_eq!(
            part.current_leader.leader_id.0, leaders[p as usize],
            "v{version}"
        );
        assert_eq!(part.current_leader.leader_epoch, 0);
        assert_eq!(r.node_endpoints.len(), 1);
        let e = &r.node_endpoints[0];
        assert_eq!(e.node_id.0, leaders[p as usize]);
        assert_eq!(
            (e.host.to_string(), e.port),
            ("127.0.0.1".to_string(), i32::from(broker.addr(1).port()))
        );
        // The hinted broker takes it.
        let mut c1 = Client::connect(broker.addr(1));
        let r: ProduceResponse = c1.call(ApiKey::Produce, version, &req);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        assert!(r.node_endpoints.is_empty());
    }
}

#[test]
fn fetch_v13_to_16_addresses_topics_by_id_and_hints_the_leader() {
    use kafka_protocol::messages::{FetchResponse, MetadataRequest, MetadataResponse};
    let broker = TestBroker::start(2);
    let mut c0 = Client::connect(broker.addr(0));
    create_topic(&mut c0, "by-id", 2);
    let leaders = leaders(&mut c0, "by-id");
    // Shard 0 of node 0 is broker 0.
    let here = leaders.iter().position(|&l| l == 0).unwrap() as i32;
    let there = 1 - here;
    produce(&mut c0, "by-id", here, batch(&[b"a", b"b"]));
    let meta: MetadataResponse = c0.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(name("by-id"))),
        ])),
    );
    let id = meta.topics[0].topic_id;
    assert!(!id.is_nil());
    let by_id = |p: i32| {
        let mut req = fetch_request("by-id", p, 0, 0);
        req.topics[0].topic = name("");
        req.topics[0].topic_id = id;
        req
    };
    for version in 13..=16 {
        let r: FetchResponse = c0.call(ApiKey::Fetch, version, &by_id(here));
        let t = &r.responses[0];
        assert_eq!(t.topic_id, id, "v{version}");
        assert_eq!(t.partitions[0].error_code, 0, "v{version}");
        assert_eq!(t.partitions[0].high_watermark, 2);
        assert!(!t.partitions[0].records.as_ref().unwrap().is_empty());
        let r: FetchResponse = c0.call(ApiKey::Fetch, version, &by_id(there));
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 6, "v{version}: NOT_LEADER_OR_FOLLOWER");
        assert_eq!(p.current_leader.leader_id.0, leaders[there as usize]);
        assert_eq!(p.current_leader.leader_epoch, 0);
        if version >= 16 {
            assert_eq!(r.node_endpoints.len(), 1);
            assert_eq!(r.node_endpoints[0].port, i32::from(broker.addr(1).port()));
        }
    }
    let mut unknown = by_id(here);
    unknown.topics[0].topic_id = uuid::Uuid::from_u128(42);
    let r: FetchResponse = c0.call(ApiKey::Fetch, 16, &unknown);
    assert_eq!(
        r.responses[0].partitions[0].error_code, 100,
        "UNKNOWN_TOPIC_ID"
    );
}
