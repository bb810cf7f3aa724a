//! Connection abuse: thousands of idle connections, a client that trickles one byte a
//! second, a client that never reads its responses. The broker's memory stays bounded
//! and a well-behaved client keeps being served.

use std::io::Write;
use std::net::TcpStream;

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};

use super::*;

const IDLE_MS: u64 = 4000;
const IDLE_CONNECTIONS: usize = 10_000;

fn raise_file_limit() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

/// Median round trip of a produce + metadata request from a well-behaved client.
fn median_round_trip_ms(broker: &Broker, leader: i32) -> f64 {
    let mut c = connect(broker.addr(leader as usize), &AtomicBool::new(false)).unwrap();
    let mut times: Vec<f64> = (0..30)
        .map(|_| {
            let t = Instant::now();
            let r = produce(
                &mut c,
                "abuse",
                0,
                build_batch(0, 1, &[b"ok"], Compression::None),
            );
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
            let _: MetadataResponse = c.call(
                ApiKey::Metadata,
                12,
                &MetadataRequest::default().with_topics(None),
            );
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 16];
    matches!(s.read(&mut b), Ok(0) | Err(_)) && s.read(&mut b).map(|n| n == 0).unwrap_or(true)
}

#[test]
fn idle_slow_and_non_reading_clients_cannot_exhaust_the_broker() {
    let limit = raise_file_limit();
    if limit < (IDLE_CONNECTIONS as u64) + 200 {
        eprintln!(
            "skipping connection abuse test: open-file limit {limit} is below {IDLE_CONNECTIONS}"
        );
        return;
    }
    let idle = IDLE_MS.to_string();
    let broker = Broker::start_with(&[
        "--connections-max-idle-ms",
        &idle,
        "--request-budget-bytes",
        "67108864",
    ]);
    let mut admin = connect(broker.addr(0), &AtomicBool::new(false)).unwrap();
    create_topic(&mut admin, "abuse", 1);
    let leader = leaders(&mut admin, "abuse")[0];
    drop(admin);
    let before_ms = median_round_trip_ms(&broker, leader);
    let rss_start = broker.rss();

    // 10,000 idle connections across both shards.
    let opened = Instant::now();
    let mut idle_conns: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|i| TcpStream::connect(broker.addr(i % 2)).unwrap())
        .collect();
    // A client that trickles a request one byte at a time.
    let mut slow = TcpStream::connect(broker.addr(0)).unwrap();
    // A client that sends requests and never reads the answers.
    let mut deaf = TcpStream::connect(broker.addr(leader as usize)).unwrap();
    deaf.set_nonblocking(true).unwrap();
    let mut frame = Vec::new();
    {
        let header = kafka_protocol::messages::RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(12)
            .with_correlation_id(1);
        use kafka_protocol::protocol::Encodable;
        let mut body = bytes::BytesMut::new();
        header
            .encode(&mut body, ApiKey::Metadata.request_header_version(12))
            .unwrap();
        MetadataRequest::default()
            .with_topics(None)
            .encode(&mut body, 12)
            .unwrap();
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
    }
    let mut sent_requests = 0usize;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match deaf.write(&frame) {
            Ok(n) if n == frame.len() => sent_requests += 1,
            Ok(_) | Err(_) => break, // the socket filled up: the broker stopped reading us
        }
    }
    let _ = slow.write_all(&[0]);
    let rss_abused = broker.rss();
    let during_ms = median_round_trip_ms(&broker, leader);
    let _ = slow.write_all(&[0]);

    println!(
        "abuse: {IDLE_CONNECTIONS} idle connections opened in {:?}; non-reading client got {sent_requests} requests in before being stopped; \
         RSS {} MiB -> {} MiB; median produce+metadata round trip {before_ms:.2} ms before, {during_ms:.2} ms during",
        opened.elapsed(),
        rss_start >> 20,
        rss_abused >> 20
    );
    // Memory: bounded by the configured budgets, not by what the clients send.
    assert!(
        rss_abused < rss_start + (512 << 20),
        "RSS grew from {rss_start} to {rss_abused}"
    );
    // A well-behaved client is still served promptly (a loose bound: the machine is shared).
    assert!(during_ms < 1000.0, "round trip {during_ms} ms under abuse");
    // The trickling client and the idle ones are closed after connections.max.idle.ms.
    assert!(
        closed_within(&mut slow, Duration::from_millis(IDLE_MS * 3)),
        "slow client still open"
    );
    let sample = &mut idle_conns[..20];
    for s in sample.iter_mut() {
        assert!(
            closed_within(s, Duration::from_millis(IDLE_MS * 2)),
            "idle connection still open"
        );
    }
}
