use std::time::Instant;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::*;

fn fetch_request(topic: &str, offset: i64, wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

#[test]
fn a_fetch_at_the_log_end_waits_for_new_data() {
    let broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "poll", 1);
    let addr = broker.addr(0);
    let consumer = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let started = Instant::now();
        let r: FetchResponse = c.call(ApiKey::Fetch, 11, &fetch_request("poll", 0, 10_000));
        (r, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    produce(&mut c, "poll", 0, batch(&[b"wake"]));
    let (r, waited) = consumer.join().unwrap();
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 1);
    assert!(!p.records.as_ref().unwrap().is_empty());
    assert!(
        waited < Duration::from_secs(9),
        "fetch waited {waited:?} instead of returning on new data"
    );
}

#[test]
fn a_fetch_with_nothing_to_read_returns_after_max_wait() {
    let broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "idle", 1);
    let r: FetchResponse = c.call(ApiKey::Fetch, 11, &fetch_request("idle", 0, 200));
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert!(p.records.as_ref().unwrap().is_empty());
}

#[test]
fn a_fetch_past_the_end_gets_offset_out_of_range() {
    let broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "oor", 1);
    produce(&mut c, "oor", 0, batch(&[b"a"]));
    let r: FetchResponse = c.call(ApiKey::Fetch, 11, &fetch_request("oor", 5, 100));
    assert_eq!(r.responses[0].partitions[0].error_code, 1);
}
