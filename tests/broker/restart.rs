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

/// Whether some socket on 127.0.0.1:`port` is in TIME_WAIT (state 06 in /proc/net/tcp).
fn in_time_wait(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"06")
    })
}

#[test]
fn a_restart_binds_its_port_while_the_last_runs_connections_wait_in_time_wait() {
    let mut broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "lingering", 1);
    // The broker closes first, so its end of the connection is the one left in
    // TIME_WAIT once the client closes too: what a restart after a crash or an upgrade
    // finds on its port.
    broker.handle.take().unwrap().shutdown();
    let mut buf = [0u8; 1];
    assert_eq!(c.stream.read(&mut buf).unwrap(), 0, "the broker closed");
    drop(c);
    let port = broker.config.shard_port(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !in_time_wait(port) {
        assert!(
            std::time::Instant::now() < deadline,
            "no TIME_WAIT on {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    broker.restart();
    let mut c = Client::connect(broker.addr(0));
    assert_eq!(leaders(&mut c, "lingering"), vec![0]);
}

#[test]
fn a_port_another_broker_listens_on_is_refused_not_shared() {
    let broker = TestBroker::start(1);
    let other = tempfile::Builder::new()
        .prefix("caudal-second-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let mut config = broker.config.clone();
    config.data_dir = other.path().to_path_buf();
    match runtime::start(config) {
        Ok(second) => {
            second.shutdown();
            panic!("a second broker started on a port the first one listens on");
        }
        Err(e) => assert!(e.to_string().contains("in use"), "{e}"),
    }
    // The first broker still has its port to itself.
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "still-mine", 1);
}

#[test]
fn a_data_directory_of_another_node_or_cluster_is_refused() {
    let mut broker = TestBroker::start(1);
    if let Some(h) = broker.handle.take() {
        h.shutdown();
    }
    let mut config = broker.config.clone();
    config.node_id = 4;
    let err = runtime::start(config.clone()).err().expect("refused");
    assert!(err.to_string().contains("belongs to node 0"), "{err}");
    config.node_id = 0;
    config.cluster_id = "elsewhere".into();
    let err = runtime::start(config).err().expect("refused");
    assert!(err.to_string().contains("cluster \"caudal\""), "{err}");
    // Its own node starts on it as before.
    broker.restart();
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "still-mine", 1);
}
