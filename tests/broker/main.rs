//! Broker scenarios driven over TCP by a minimal client of our own (the real-client
//! suites live in tests/clients). One module per behaviour, one test binary.

mod bad_input;
mod groups;
mod idempotent_produce;
mod long_poll;
mod restart;
mod shard_routing;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use caudal::config::Config;
use caudal::shard::runtime::{self, BrokerHandle};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// A broker started in this process on free loopback ports with a temporary data dir.
pub struct TestBroker {
    pub handle: Option<BrokerHandle>,
    pub config: Config,
    _dir: tempfile::TempDir,
}

/// Two consecutive free ports on 127.0.0.1.
pub fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = first.local_addr().unwrap().port();
        if base > 65000 {
            continue;
        }
        let others: Vec<_> = (1..n)
            .map(|i| TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if others.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free consecutive ports");
}

impl TestBroker {
    pub fn start(shards: usize) -> TestBroker {
        let dir = tempfile::Builder::new()
            .prefix("caudal-broker-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            base_port: free_ports(shards as u16),
            shards,
            cpus: vec![0],
            tail_cache_bytes: 16 << 20,
            socket_request_max_bytes: 1 << 20,
            group: caudal::group::coordinator::GroupSettings {
                initial_rebalance_delay: Duration::ZERO,
                min_session_timeout: Duration::from_millis(100),
                ..Default::default()
            },
            ..Config::default()
        };
        let handle = runtime::start(config.clone()).unwrap();
        TestBroker {
            handle: Some(handle),
            config,
            _dir: dir,
        }
    }

    pub fn addr(&self, shard: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.shard_port(shard)))
    }

    pub fn restart(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        self.handle = Some(runtime::start(self.config.clone()).unwrap());
    }

    pub fn stat(
        &self,
        shard: usize,
        f: impl Fn(&caudal::shard::state::ShardStats) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        f(&self.handle.as_ref().unwrap().stats[shard]).load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

/// A blocking one-connection client.
pub struct Client {
    pub stream: TcpStream,
    correlation: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            stream,
            correlation: 0,
        }
    }

    pub fn send<R: Encodable>(&mut self, key: ApiKey, version: i16, request: &R) -> i32 {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("caudal-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).unwrap();
        self.correlation
    }

    /// Reads one response frame; `None` if the broker closed the connection.
    pub fn recv_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).ok()?;
        Some(Bytes::from(buf))
    }

    pub fn recv<R: Decodable + HeaderVersion>(&mut self, version: i16, correlation: i32) -> R {
        let mut frame = self.recv_frame().expect("broker closed the connection");
        let header = ResponseHeader::decode(&mut frame, R::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation);
        let r = R::decode(&mut frame, version).unwrap();
        assert_eq!(frame.remaining(), 0, "trailing bytes in response");
        r
    }

    pub fn call<Q: Encodable, R: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Q,
    ) -> R {
        let c = self.send(key, version, request);
        self.recv(version, c)
    }
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn create_topic(client: &mut Client, topic: &str, partitions: i32) {
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(
        resp.topics[0].error_code, 0,
        "{:?}",
        resp.topics[0].error_message
    );
}

/// Leader shard (broker id) of each partition.
pub fn leaders(client: &mut Client, topic: &str) -> Vec<i32> {
    let req = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(name(topic))),
    ]));
    let resp: MetadataResponse = client.call(ApiKey::Metadata, 12, &req);
    let mut parts: Vec<_> = resp.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, l)| l).collect()
}

pub fn produce(
    client: &mut Client,
    topic: &str,
    partition: i32,
    records: Vec<u8>,
) -> ProduceResponse {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])]);
    client.call(ApiKey::Produce, 9, &req)
}

pub fn batch(values: &[&[u8]]) -> Vec<u8> {
    caudal::protocol::record_batch::build_batch(
        0,
        1_700_000_000_000,
        values,
        caudal::protocol::record_batch::Compression::None,
    )
}
