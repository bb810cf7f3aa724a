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
