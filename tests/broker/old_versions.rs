//! Request versions from before Kafka 2.1 (KIP-896 dropped them from Kafka 4.0 and from
//! the kafka-protocol crate), spoken byte by byte as an old client would. Sarama pinned to
//! old releases covers DescribeConfigs v0 and CreateTopics v1 (tests/go).

use std::io::Write;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use super::*;

/// Sends one request whose body is `body` (request header v1) and returns the response
/// body after its correlation id.
fn raw_call(client: &mut Client, key: ApiKey, version: i16, body: &[u8]) -> Bytes {
    client.correlation += 1;
    let mut frame = BytesMut::new();
    let client_id = b"old-client";
    frame.put_i32((2 + 2 + 4 + 2 + client_id.len() + body.len()) as i32);
    frame.put_i16(key as i16);
    frame.put_i16(version);
    frame.put_i32(client.correlation);
    frame.put_i16(client_id.len() as i16);
    frame.put_slice(client_id);
    frame.put_slice(body);
    client.stream.write_all(&frame).unwrap();
    let mut resp = client
        .recv_frame()
        .unwrap_or_else(|| panic!("the broker closed the connection on {key:?} v{version}"));
    assert_eq!(resp.get_i32(), client.correlation);
    resp
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn get_str(b: &mut Bytes) -> String {
    let n = b.get_i16();
    if n < 0 {
        return String::new();
    }
    String::from_utf8(b.split_to(n as usize).to_vec()).unwrap()
}

#[test]
fn create_commit_fetch_and_delete_with_pre_2_1_versions() {
    let broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    let topic = "old-versions";

    // CreateTopics v0: topics[name, partitions, replication, assignments[], configs[]], timeout.
    let mut b = BytesMut::new();
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(2);
    b.put_i16(1);
    b.put_i32(0);
    b.put_i32(0);
    b.put_i32(5000);
    let mut r = raw_call(&mut c, ApiKey::CreateTopics, 0, &b);
    assert_eq!(r.get_i32(), 1);
    assert_eq!(get_str(&mut r), topic);
    assert_eq!(r.get_i16(), 0, "CreateTopics v0 error");
    assert_eq!(r.remaining(), 0);

    // OffsetCommit v1 (group, generation, member, topics[name, partitions[idx, offset,
    // timestamp, metadata]]) for partition 0, then v0 (no generation, member, timestamp)
    // for partition 1: a group with no members commits as a "simple" consumer would.
    let mut b = BytesMut::new();
    put_str(&mut b, "old-group");
    b.put_i32(-1);
    put_str(&mut b, "");
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(1);
    b.put_i32(0);
    b.put_i64(5);
    b.put_i64(-1);
    put_str(&mut b, "m5");
    let mut r = raw_call(&mut c, ApiKey::OffsetCommit, 1, &b);
    assert_eq!(r.get_i32(), 1);
    assert_eq!(get_str(&mut r), topic);
    assert_eq!(r.get_i32(), 1);
    assert_eq!(r.get_i32(), 0);
    assert_eq!(r.get_i16(), 0, "OffsetCommit v1 error");

    let mut b = BytesMut::new();
    put_str(&mut b, "old-group");
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(1);
    b.put_i32(1);
    b.put_i64(7);
    put_str(&mut b, "m7");
    let mut r = raw_call(&mut c, ApiKey::OffsetCommit, 0, &b);
    r.advance(4);
    get_str(&mut r);
    r.advance(4 + 4);
    assert_eq!(r.get_i16(), 0, "OffsetCommit v0 error");

    // OffsetFetch v0: group, topics[name, partitions[]] -> topics[name, partitions[idx,
    // offset, metadata, error]].
    let mut b = BytesMut::new();
    put_str(&mut b, "old-group");
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(2);
    b.put_i32(0);
    b.put_i32(1);
    let mut r = raw_call(&mut c, ApiKey::OffsetFetch, 0, &b);
    assert_eq!(r.get_i32(), 1);
    assert_eq!(get_str(&mut r), topic);
    let n = r.get_i32();
    let mut got = Vec::new();
    for _ in 0..n {
        let idx = r.get_i32();
        let offset = r.get_i64();
        let meta = get_str(&mut r);
        let err = r.get_i16();
        got.push((idx, offset, meta, err));
    }
    got.sort();
    assert_eq!(
        got,
        vec![(0, 5, "m5".to_string(), 0), (1, 7, "m7".to_string(), 0)]
    );

    // DeleteTopics v0: names, timeout -> responses[name, error] (no throttle time).
    let mut b = BytesMut::new();
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(5000);
    let mut r = raw_call(&mut c, ApiKey::DeleteTopics, 0, &b);
    assert_eq!(r.get_i32(), 1);
    assert_eq!(get_str(&mut r), topic);
    assert_eq!(r.get_i16(), 0, "DeleteTopics v0 error");
    assert_eq!(r.remaining(), 0);
}

#[test]
fn a_truncated_old_request_closes_only_its_connection() {
    let broker = TestBroker::start(1);
    let mut c = Client::connect(broker.addr(0));
    // OffsetCommit v1 that claims a topic array it does not carry.
    let mut b = BytesMut::new();
    put_str(&mut b, "g");
    b.put_i32(-1);
    put_str(&mut b, "");
    b.put_i32(1000);
    c.correlation += 1;
    let mut frame = BytesMut::new();
    frame.put_i32((2 + 2 + 4 + 2 + b.len()) as i32);
    frame.put_i16(ApiKey::OffsetCommit as i16);
    frame.put_i16(1);
    frame.put_i32(c.correlation);
    frame.put_i16(-1);
    frame.put_slice(&b);
    c.stream.write_all(&frame).unwrap();
    assert!(
        c.recv_frame().is_none(),
        "a malformed request closes the connection"
    );
    // The broker still serves others.
    let mut other = Client::connect(broker.addr(0));
    create_topic(&mut other, "still-fine", 1);
}
