use std::io::Write;

use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::*;

fn still_serves(broker: &TestBroker) {
    let mut c = Client::connect(broker.addr(0));
    let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
}

fn closed_by_broker(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn a_declared_length_past_the_limit_closes_only_that_connection() {
    let broker = TestBroker::start(1);
    let mut s = TcpStream::connect(broker.addr(0)).unwrap();
    s.write_all(&i32::MAX.to_be_bytes()).unwrap();
    assert!(closed_by_broker(&mut s));
    still_serves(&broker);
}

#[test]
fn a_truncated_frame_does_not_disturb_other_clients() {
    let broker = TestBroker::start(1);
    let mut other = Client::connect(broker.addr(0));
    let mut s = TcpStream::connect(broker.addr(0)).unwrap();
    s.write_all(&100i32.to_be_bytes()).unwrap();
    s.write_all(&[0u8; 10]).unwrap();
    drop(s);
    let r: ApiVersionsResponse = other.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
    still_serves(&broker);
}

#[test]
fn an_unknown_api_key_closes_the_connection() {
    let broker = TestBroker::start(1);
    let mut s = TcpStream::connect(broker.addr(0)).unwrap();
    let mut frame = Vec::new();
    frame.extend_from_slice(&10i32.to_be_bytes());
    frame.extend_from_slice(&9999i16.to_be_bytes());
    frame.extend_from_slice(&0i16.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    s.write_all(&frame).unwrap();
    assert!(closed_by_broker(&mut s));
    still_serves(&broker);
}

#[test]
fn garbage_in_a_request_body_closes_the_connection() {
    let broker = TestBroker::start(1);
    let mut s = TcpStream::connect(broker.addr(0)).unwrap();
    let mut frame = Vec::new();
    // A Metadata v12 header followed by a topic array claiming 2^31 entries.
    let body: Vec<u8> = [
        &3i16.to_be_bytes()[..],
        &12i16.to_be_bytes(),
        &1i32.to_be_bytes(),
        &(-1i16).to_be_bytes(),
        &[0u8],
        &[0xff, 0xff, 0xff, 0xff, 0x07],
    ]
    .concat();
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&body);
    s.write_all(&frame).unwrap();
    assert!(closed_by_broker(&mut s));
    still_serves(&broker);
}

#[test]
fn an_unsupported_api_versions_version_gets_error_35_and_the_ranges() {
    let broker = TestBroker::start(1);
    let mut s = TcpStream::connect(broker.addr(0)).unwrap();
    // ApiVersions v99, header v2 (flexible): client id, then empty tagged fields.
    let body: Vec<u8> = [
        &18i16.to_be_bytes()[..],
        &99i16.to_be_bytes(),
        &5i32.to_be_bytes(),
        &(-1i16).to_be_bytes(),
        &[0u8],
    ]
    .concat();
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame).unwrap();
    let mut c = Client {
        stream: s,
        correlation: 5,
    };
    let r: ApiVersionsResponse = c.recv(0, 5);
    assert_eq!(r.error_code, 35);
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
}

#[test]
fn a_batch_with_a_wrong_crc_gets_corrupt_message_and_nothing_is_written() {
    let broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "crc", 1);
    let mut bad = batch(&[b"hello"]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let r = produce(&mut c, "crc", 0, bad);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 2);
    let mut magic = batch(&[b"hello"]);
    magic[16] = 1;
    let r = produce(&mut c, "crc", 0, magic);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 2);
    // The connection still works and the next good batch gets offset 0.
    let r = produce(&mut c, "crc", 0, batch(&[b"ok"]));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 0);
}

#[test]
fn an_oversized_batch_gets_message_too_large() {
    let broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("small"))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![
            kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("max.message.bytes"))
                .with_value(Some(StrBytes::from_static_str("200"))),
        ])]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(resp.topics[0].error_code, 0);
    let big = vec![7u8; 1000];
    let r = produce(&mut c, "small", 0, batch(&[&big]));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 10);
}

#[test]
fn one_connection_survives_tens_of_thousands_of_requests() {
    // Regression: the reader registered a new waker clone on the shutdown event for
    // every frame, until glommio's task reference count overflowed and the shard panicked.
    let broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    let req = ApiVersionsRequest::default();
    // One at a time, so that the reader waits for every frame.
    for i in 0..34_000 {
        let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 0, &req);
        assert_eq!(r.error_code, 0, "request {i}");
    }
    still_serves(&broker);
}
