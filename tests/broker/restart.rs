use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::*;

#[test]
fn topics_placements_and_offsets_survive_a_restart() {
    let mut broker = TestBroker::start(2);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "kept", 3);
    let before = leaders(&mut c, "kept");
    for (p, &l) in before.iter().enumerate() {
        let mut pc = Client::connect(broker.addr(l as usize));
        for _ in 0..3 {
            produce(&mut pc, "kept", p as i32, batch(&[b"x", b"y"]));
        }
    }
    drop(c);
    broker.restart();
    let mut c = Client::connect(broker.addr(0));
    assert_eq!(leaders(&mut c, "kept"), before);
    for (p, &l) in before.iter().enumerate() {
        let mut pc = Client::connect(broker.addr(l as usize));
        let r = produce(&mut pc, "kept", p as i32, batch(&[b"z"]));
        assert_eq!(r.responses[0].partition_responses[0].base_offset, 6);
        let req = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(100)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("kept"))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(p as i32)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let f: FetchResponse = pc.call(ApiKey::Fetch, 11, &req);
        assert_eq!(f.responses[0].partitions[0].high_watermark, 7);
    }
    assert!(broker.data_dir().join("meta/metadata.log").exists());
}

#[test]
fn a_restart_after_a_clean_shutdown_skips_the_scan() {
    let mut broker = TestBroker::start(2);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "clean", 2);
    let leaders = leaders(&mut c, "clean");
    for (p, &l) in leaders.iter().enumerate() {
        let mut pc = Client::connect(broker.addr(l as usize));
        produce(&mut pc, "clean", p as i32, batch(&[b"x"]));
    }
    drop(c);
    broker.restart();
    let clean: u64 = (0..2).map(|s| broker.stat(s, |st| &st.opened_clean)).sum();
    let scanned: u64 = (0..2)
        .map(|s| broker.stat(s, |st| &st.opened_scanned))
        .sum();
    assert_eq!((clean, scanned), (2, 0));
}
