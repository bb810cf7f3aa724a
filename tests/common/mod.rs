//! Helpers shared by the integration tests that speak the Kafka protocol themselves: a
//! blocking one-connection client and request builders.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// `n` consecutive free ports on 127.0.0.1, never handed out twice in one test process.
pub fn free_ports(n: u16) -> u16 {
    // Below the kernel's ephemeral range (32768+), so a port freed by a broker restart is
    // not handed to some other socket before the broker binds it again. Tests run in
    // parallel threads: remembering what was handed out keeps two of them from probing
    // the same free port and racing to bind it.
    use rand::Rng;
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let mut rng = rand::thread_rng();
    for _ in 0..500 {
        let base: u16 = rng.gen_range(20_000..32_000);
        if (base..base + n).any(|p| handed_out.contains(&p)) {
            continue;
        }
        let all: Vec<_> = (0..n)
            .map(|i| TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if all.iter().all(Result::is_ok) {
            handed_out.extend(base..base + n);
            return base;
        }
    }
    panic!("no free consecutive ports");
}

/// A blocking one-connection client.
pub struct Client {
    pub stream: TcpStream,
    pub correlation: i32,
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

    /// A connection to a node of a cluster once it serves clients: until it has heard its
    /// controller, a node closes client connections as it accepts them.
    pub fn connect_when_serving(addr: SocketAddr, bound: Duration) -> Client {
        let deadline = std::time::Instant::now() + bound;
        loop {
            if let Ok(stream) = TcpStream::connect(addr) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                let mut c = Client {
                    stream,
                    correlation: 0,
                };
                c.send(
                    ApiKey::ApiVersions,
                    0,
                    &kafka_protocol::messages::ApiVersionsRequest::default(),
                );
                if c.recv_frame().is_some() {
                    return c;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the broker at {addr} did not serve clients within {bound:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
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
    client.call(
        ApiKey::Produce,
        9,
        &produce_request(topic, partition, records, -1),
    )
}

/// A Produce request of `records` to one partition with `acks`.
pub fn produce_request(topic: &str, partition: i32, records: Vec<u8>, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])])
}

pub fn batch(values: &[&[u8]]) -> Vec<u8> {
    caudal::protocol::record_batch::build_batch(
        0,
        1_700_000_000_000,
        values,
        caudal::protocol::record_batch::Compression::None,
    )
}

/// A Fetch of one partition from `offset`.
pub fn fetch_request(topic: &str, partition: i32, offset: i64, wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(8 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(4 << 20)])])
}

/// Every batch of a partition from offset 0 to its high watermark.
pub fn read_partition(client: &mut Client, topic: &str, partition: i32) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let r: FetchResponse = client.call(
            ApiKey::Fetch,
            11,
            &fetch_request(topic, partition, from, 100),
        );
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch error");
        let mut records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            return out;
        }
        while records.len() >= 12 {
            let size = caudal::protocol::record_batch::peek_batch_size(&records).unwrap();
            if size > records.len() {
                break;
            }
            let b = records.split_to(size);
            let h = caudal::protocol::record_batch::check_batch(&b).unwrap();
            if h.last_offset() >= from {
                from = h.last_offset() + 1;
                out.push(b);
            }
        }
        if from >= p.high_watermark {
            return out;
        }
    }
}

/// A loop-mounted ext4 filesystem, unmounted on drop.
pub struct SmallDisk {
    /// Where it is mounted.
    pub mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Makes and mounts a filesystem of `megabytes`; `Err` where mounting is not possible.
    pub fn new(megabytes: u64) -> Result<SmallDisk, String> {
        let dir = tempfile::Builder::new()
            .prefix("caudal-disk-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .map_err(|e| e.to_string())?;
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        f.set_len(megabytes << 20).map_err(|e| e.to_string())?;
        run(
            "mkfs.ext4",
            &["-q", "-F", image.to_str().unwrap_or_default()],
        )?;
        run(
            "mount",
            &[
                "-o",
                "loop",
                image.to_str().unwrap_or_default(),
                mount.to_str().unwrap_or_default(),
            ],
        )?;
        Ok(SmallDisk { mount, _dir: dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: the broker threads may still hold a file open until the process exits.
        let _ = run("umount", &["-l", self.mount.to_str().unwrap_or_default()]);
    }
}

/// Runs a command, its stderr as the error.
fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
