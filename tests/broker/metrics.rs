//! The Prometheus endpoint: counters move with traffic, and the text parses.

use std::io::{Read, Write};

use kafka_protocol::messages::FetchResponse;

use super::*;

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid exposition format")
}

#[test]
fn metrics_move_with_produce_and_fetch_and_parse_as_prometheus_text() {
    let metrics_port = free_ports(1);
    let mut broker = TestBroker::start(2);
    // Restart with the endpoint on.
    broker.config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], metrics_port)));
    broker.restart();
    let maddr = broker.config.metrics_listen.unwrap();

    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "watched", 2);
    let leaders = leaders(&mut c, "watched");
    let before = parse(&scrape(maddr));
    for (p, &l) in leaders.iter().enumerate() {
        let mut pc = Client::connect(broker.addr(l as usize));
        for _ in 0..10 {
            produce(
                &mut pc,
                "watched",
                p as i32,
                batch(&[b"one", b"two", b"three"]),
            );
        }
        let _: FetchResponse = pc.call(
            ApiKey::Fetch,
            11,
            &fetch_request("watched", p as i32, 0, 10),
        );
    }
    // An error is counted by code.
    let wrong = 1 - leaders[0] as usize;
    produce(
        &mut Client::connect(broker.addr(wrong)),
        "watched",
        0,
        batch(&[b"x"]),
    );

    let text = scrape(maddr);
    let after = parse(&text);
    for shard in ["0", "1"] {
        assert_eq!(
            value(
                &after,
                "caudal_produce_requests_copied_total",
                &[("shard", shard)]
            ),
            0.0,
            "produce batches are stamped and cached in their request's buffer, not copied out"
        );
    }
    for p in 0..2 {
        let p = p.to_string();
        let labels = [("topic", "watched"), ("partition", p.as_str())];
        assert_eq!(
            value(&after, "caudal_partition_messages_in_total", &labels),
            30.0
        );
        assert_eq!(
            value(&after, "caudal_partition_high_watermark", &labels),
            30.0
        );
        assert_eq!(
            value(&after, "caudal_partition_messages_out_total", &labels),
            30.0
        );
        assert!(value(&after, "caudal_partition_bytes_in_total", &labels) > 0.0);
    }
    let produces: f64 = (0..2)
        .map(|k| {
            value(
                &after,
                "caudal_produce_requests_total",
                &[("shard", &k.to_string())],
            )
        })
        .sum();
    let produces_before: f64 = (0..2)
        .map(|k| {
            value(
                &before,
                "caudal_produce_requests_total",
                &[("shard", &k.to_string())],
            )
        })
        .sum();
    assert_eq!(produces - produces_before, 21.0);
    let fsyncs: f64 = (0..2)
        .map(|k| value(&after, "caudal_fsyncs_total", &[("shard", &k.to_string())]))
        .sum();
    assert!(fsyncs >= 20.0, "every durable produce was synced");
    assert_eq!(
        value(
            &after,
            "caudal_errors_total",
            &[("shard", &wrong.to_string()), ("code", "6")]
        ),
        1.0
    );
    assert!(
        text.contains("caudal_request_duration_seconds_bucket{shard=\"0\",api=\"Produce\"")
            || text.contains("caudal_request_duration_seconds_bucket{shard=\"1\",api=\"Produce\"")
    );
    assert!(text.contains("caudal_fsync_duration_seconds_count"));
}
