//! Crash loop: producers write with acks=all to four partitions on two shards while the
//! broker process is killed with SIGKILL at random moments and restarted. At the end
//! every acknowledged message must be in the log: exactly once and in order for the
//! idempotent producers, at least once and in order for the plain ones, with contiguous
//! offsets everywhere.
//!
//! `cargo test --test crash` kills 3 times; `make soak` sets CAUDAL_CRASH_KILLS=20.

mod abuse;
mod cli;
#[path = "../common/mod.rs"]
mod common;
mod corruption;
mod disk;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caudal::protocol::record_batch::{
    build_batch, check_batch, set_producer, uncompressed_records, Compression,
};
use common::*;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use rand::{Rng, SeedableRng};

const TOPIC: &str = "crashy";
const PARTITIONS: i32 = 4;
const PER_BATCH: u64 = 20;

struct Broker {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    extra: Vec<String>,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// A broker with extra command-line flags.
    fn start_with(extra: &[&str]) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("caudal-crash-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let mut b = Broker {
            child: None,
            dir,
            port: free_ports(2),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        b.spawn();
        b
    }

    /// Resident memory of the broker process, in bytes.
    fn rss(&self) -> u64 {
        let pid = self.child.as_ref().map(|c| c.id()).unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_caudal"))
            .args([
                "--data-dir",
                self.dir.path().to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--shards",
                "2",
            ])
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(self.log_file())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "broker did not become ready");
            match lines.next() {
                Some(Ok(line)) if line.contains("ready") => break,
                Some(Ok(_)) => {}
                _ => panic!(
                    "broker exited during start-up:\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                ),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// The broker's stderr, appended across restarts, outside its data dir.
    fn log_file(&self) -> Stdio {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        Stdio::from(f)
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().with_extension("log")
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().to_path_buf()
    }

    /// SIGTERM, and the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self, shard: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port + shard as u16))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.log_path());
    }
}

/// Connects, retrying while the broker restarts.
fn connect(addr: SocketAddr, stop: &AtomicBool) -> Option<Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(s) = std::net::TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(10))).ok();
            return Some(Client {
                stream: s,
                correlation: 0,
            });
        }
        if stop.load(Ordering::SeqCst) && Instant::now() + Duration::from_secs(50) > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Sends one produce; `None` when the connection failed (the broker died).
fn try_produce(c: &mut Client, partition: i32, batch: &[u8]) -> Option<(i16, i64)> {
    let req = kafka_protocol::messages::ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            kafka_protocol::messages::produce_request::TopicProduceData::default()
                .with_name(name(TOPIC))
                .with_partition_data(vec![
                    kafka_protocol::messages::produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(bytes::Bytes::copy_from_slice(batch))),
                ]),
        ]);
    use std::io::Write;
    c.correlation += 1;
    let corr = c.correlation;
    let header = kafka_protocol::messages::RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(corr);
    let mut body = bytes::BytesMut::new();
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
    header
        .encode(&mut body, ApiKey::Produce.request_header_version(9))
        .ok()?;
    req.encode(&mut body, 9).ok()?;
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    c.stream.write_all(&frame).ok()?;
    let mut resp = c.recv_frame()?;
    kafka_protocol::messages::ResponseHeader::decode(
        &mut resp,
        kafka_protocol::messages::ProduceResponse::header_version(9),
    )
    .ok()?;
    let r = kafka_protocol::messages::ProduceResponse::decode(&mut resp, 9).ok()?;
    let p = &r.responses[0].partition_responses[0];
    Some((p.error_code, p.base_offset))
}

struct Outcome {
    acked: BTreeSet<u64>,
    retries: u64,
}

fn producer(addr: SocketAddr, partition: i32, idempotent: bool, stop: Arc<AtomicBool>) -> Outcome {
    let mut client = connect(addr, &stop).expect("broker unreachable");
    let pid = if idempotent {
        let r: InitProducerIdResponse = client.call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
        assert_eq!(r.error_code, 0);
        r.producer_id.0
    } else {
        -1
    };
    let mut out = Outcome {
        acked: BTreeSet::new(),
        retries: 0,
    };
    let mut next_id: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let ids: Vec<u64> = (next_id..next_id + PER_BATCH).collect();
        let values: Vec<Vec<u8>> = ids
            .iter()
            .map(|i| format!("{partition}:{i}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let mut batch = build_batch(0, caudal::clock::now_ms(), &refs, Compression::None);
        if idempotent {
            set_producer(&mut batch, pid, 0, next_id as i32);
        }
        // Retry the same batch until it is acknowledged, as a Kafka producer does.
        loop {
            match try_produce(&mut client, partition, &batch) {
                Some((0, _)) => break,
                Some((code, _)) => panic!("partition {partition}: produce error {code}"),
                None => {
                    out.retries += 1;
                    match connect(addr, &stop) {
                        Some(c) => client = c,
                        None => return out,
                    }
                }
            }
        }
        out.acked.extend(ids);
        next_id += PER_BATCH;
    }
    out
}

#[test]
fn every_acknowledged_message_survives_repeated_sigkills() {
    let kills: usize = std::env::var("CAUDAL_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut broker = Broker::start();
    let mut admin = connect(broker.addr(0), &AtomicBool::new(false)).unwrap();
    create_topic(&mut admin, TOPIC, PARTITIONS);
    let leaders = leaders(&mut admin, TOPIC);
    assert!(
        leaders.contains(&0) && leaders.contains(&1),
        "partitions on both shards"
    );
    drop(admin);

    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for p in 0..PARTITIONS {
        let addr = broker.addr(leaders[p as usize] as usize);
        let (stop, results) = (stop.clone(), results.clone());
        let idempotent = p % 2 == 0;
        threads.push(std::thread::spawn(move || {
            let out = producer(addr, p, idempotent, stop);
            results.lock().unwrap().push((p, idempotent, out));
        }));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(std::process::id() as u64);
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..1200)));
        broker.kill();
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..200)));
        broker.spawn();
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }

    let mut readers = [reader_for(&broker, 0), reader_for(&broker, 1)];
    let mut results = results.lock().unwrap();
    results.sort_by_key(|r| r.0);
    let mut total_acked = 0;
    let mut total_dups = 0;
    for (p, idempotent, out) in results.iter() {
        let client = &mut readers[leaders[*p as usize] as usize];
        let batches = read_partition(client, TOPIC, *p);
        let mut next_offset = 0;
        let mut seen: Vec<u64> = Vec::new();
        for b in &batches {
            let h = check_batch(b).unwrap();
            assert_eq!(
                h.base_offset, next_offset,
                "partition {p}: offsets must be contiguous"
            );
            next_offset = h.last_offset() + 1;
            for r in uncompressed_records(b).unwrap() {
                let v = std::str::from_utf8(r.value.unwrap()).unwrap();
                let (vp, id) = v.split_once(':').unwrap();
                assert_eq!(vp, p.to_string());
                seen.push(id.parse().unwrap());
            }
        }
        let present: BTreeSet<u64> = seen.iter().copied().collect();
        let missing: Vec<&u64> = out
            .acked
            .iter()
            .filter(|id| !present.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "partition {p}: {} acknowledged messages lost, first {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        let dups = seen.len() - present.len();
        if *idempotent {
            assert_eq!(
                dups, 0,
                "partition {p}: idempotent producer wrote duplicates"
            );
            assert!(
                seen.windows(2).all(|w| w[1] == w[0] + 1),
                "partition {p}: out of order"
            );
        } else {
            // At least once, in order: each first occurrence follows the previous one.
            let mut firsts = Vec::new();
            let mut s = BTreeSet::new();
            for id in &seen {
                if s.insert(*id) {
                    firsts.push(*id);
                }
            }
            assert!(
                firsts.windows(2).all(|w| w[1] > w[0]),
                "partition {p}: out of order"
            );
        }
        println!(
            "partition {p} ({}): {} acknowledged, {} in log, {} duplicates, {} retries across {kills} kills",
            if *idempotent { "idempotent" } else { "plain" },
            out.acked.len(),
            seen.len(),
            dups,
            out.retries
        );
        total_acked += out.acked.len();
        total_dups += dups;
    }
    println!("crash loop: {kills} SIGKILLs, {total_acked} acknowledged messages, 0 lost, {total_dups} duplicates (plain producers only)");
    assert!(total_acked > 0);
}

fn reader_for(broker: &Broker, shard: usize) -> Client {
    connect(broker.addr(shard), &AtomicBool::new(false)).unwrap()
}
