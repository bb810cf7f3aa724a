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
