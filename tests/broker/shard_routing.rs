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
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
    let broker = TestBroker::start(2);
    let mut c0 = Client::connect(broker.addr(0));
    create_topic(&mut c0, "hinted", 2);
    let leaders = leaders(&mut c0, "hinted");
    let p = leaders.iter().position(|&l| l == 1).unwrap() as i32;
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("hinted"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(bytes::Bytes::from(batch(&[b"v"]))))])]);
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
