//! Runs `caudal-loadgen produce`, `consume` and `e2e` for 2 s each against a real Caudal
//! broker (the debug binary, two shards on free ports, data in a temp dir under
//! `target/`) and checks the counts: every message produced is consumed.
//!
//! The broker binary is `$CAUDAL_BIN` or `target/debug/caudal`; `cargo test
//! --workspace --all-targets` builds it, or run `cargo build --bins` first.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadgen sits in the workspace")
        .to_path_buf()
}

fn broker_binary() -> PathBuf {
    let bin = std::env::var_os("CAUDAL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug/caudal"));
    assert!(
        bin.exists(),
        "broker binary {} not found: run `cargo build --bins` (or set CAUDAL_BIN)",
        bin.display()
    );
    bin
}

/// A port `p` with `p + 1` free as well (one per shard), on 127.0.0.1.
fn two_free_ports() -> u16 {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports");
}

/// A broker process, stopped with SIGTERM (then killed) when dropped.
struct Broker {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let tmp = workspace().join("target/tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("loadgen-it-")
                .tempdir_in(&tmp)
                .unwrap();
            let port = two_free_ports();
            let addr = format!("127.0.0.1:{port}");
            let mut child = Command::new(broker_binary())
                .args(["--data-dir", dir.path().to_str().unwrap()])
                .args(["--listen", &addr, "--shards", "2"])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting the broker");
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.contains("caudal ready") {
                        let _ = tx.send(());
                    }
                }
            });
            if rx.recv_timeout(Duration::from_secs(20)).is_ok() {
                return Broker {
                    child,
                    addr,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the broker did not start");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the load generator with `args` and returns its JSON result.
fn loadgen(dir: &Path, name: &str, args: &[&str]) -> Value {
    let json = dir.join(format!("{name}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_caudal-loadgen"))
        .args(args)
        .args(["--json", json.to_str().unwrap()])
        .output()
        .expect("running caudal-loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "caudal-loadgen {args:?} failed:\n{stderr}"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(
        json.with_extension("hgrm").exists(),
        "no .hgrm beside {}",
        json.display()
    );
    v
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn produce_then_consume_reads_back_every_message() {
    let broker = Broker::start();
    let out = tempfile::tempdir_in(workspace().join("target/tmp")).unwrap();
    let b = broker.addr.as_str();
    let produced = loadgen(
        out.path(),
        "produce",
        &[
            "produce",
            "--bootstrap",
            b,
            "--topic",
            "it-pc",
            "--partitions",
            "4",
            "--producers",
            "2",
            "--rate",
            "5000",
            "--linger-ms",
            "5",
            "--duration",
            "2",
            "--cores",
            "0",
        ],
    );
    assert_eq!(produced["mode"], "produce");
    assert_eq!(count(&produced, "errors"), 0);
    let n = count(&produced, "messages");
    // Open loop at 5000 msg/s for 2 s.
    assert!((8_000..=10_100).contains(&n), "produced {n}");
    assert_eq!(count(&produced, "bytes"), n * 1024);
    assert!(produced["latency_us"]["p99"].as_f64().unwrap() > 0.0);

    let consumed = loadgen(
        out.path(),
        "consume",
        &[
            "consume",
            "--bootstrap",
            b,
            "--topic",
            "it-pc",
            "--from",
            "earliest",
            "--duration",
            "2",
            "--cores",
            "0",
        ],
    );
    assert_eq!(consumed["mode"], "consume");
    assert_eq!(count(&consumed, "errors"), 0);
    assert_eq!(
        count(&consumed, "messages"),
        n,
        "every produced message is consumed"
    );
    assert_eq!(count(&consumed, "bytes"), n * 1024);
}

#[test]
fn e2e_consumes_every_message_it_produced_and_measures_latency() {
    let broker = Broker::start();
    let out = tempfile::tempdir_in(workspace().join("target/tmp")).unwrap();
    let b = broker.addr.as_str();
    let v = loadgen(
        out.path(),
        "e2e",
        &[
            "e2e",
            "--bootstrap",
            b,
            "--topic",
            "it-e2e",
            "--partitions",
            "2",
            "--rate",
            "5000",
            "--duration",
            "2",
            "--message-size",
            "200",
            "--compression",
            "lz4",
        ],
    );
    assert_eq!(v["mode"], "e2e");
    assert_eq!(count(&v, "errors"), 0);
    let n = count(&v, "messages");
    assert!(n >= 8_000, "produced {n}");
    assert_eq!(count(&v, "consumed_messages"), n);
    assert_eq!(
        v["verified"], true,
        "ids consumed match ids acknowledged: {v}"
    );
    let e2e = &v["e2e_latency_us"];
    assert!(e2e["p50"].as_f64().unwrap() > 0.0);
    assert!(e2e["max"].as_f64().unwrap() >= e2e["p99"].as_f64().unwrap());
    assert!(out.path().join("e2e.e2e.hgrm").exists());
}

#[test]
fn e2e_fan_out_to_two_consumer_groups_delivers_everything_to_each() {
    let broker = Broker::start();
    let out = tempfile::tempdir_in(workspace().join("target/tmp")).unwrap();
    let b = broker.addr.as_str();
    let v = loadgen(
        out.path(),
        "fanout",
        &[
            "e2e",
            "--bootstrap",
            b,
            "--topic",
            "it-fan",
            "--partitions",
            "2",
            "--rate",
            "2000",
            "--duration",
            "2",
            "--group",
            "it-g",
            "--groups",
            "2",
        ],
    );
    assert_eq!(count(&v, "errors"), 0);
    let n = count(&v, "messages");
    assert!(n > 0);
    assert_eq!(count(&v, "consumed_messages"), 2 * n);
    assert_eq!(v["verified"], true, "{v}");
}

#[test]
fn gives_up_when_the_broker_stops_answering() {
    let broker = Broker::start();
    let pid = broker.child.id() as i32;
    let mut run = Command::new(env!("CARGO_BIN_EXE_caudal-loadgen"))
        .args([
            "produce",
            "--bootstrap",
            &broker.addr,
            "--topic",
            "it-stall",
        ])
        .args(["--partitions", "2", "--rate", "2000", "--duration", "120"])
        .args(["--stall-limit", "2", "--cores", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("running caudal-loadgen");
    let stderr = run.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Once messages are flowing, freeze the broker: its sockets stay open, nothing answers.
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("msg/s")) {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no progress line from caudal-loadgen");
        seen.push(line);
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut status = None;
    for _ in 0..300 {
        if let Ok(Some(s)) = run.try_wait() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above; the broker must run again to be stopped cleanly.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let Some(status) = status else {
        let _ = run.kill();
        panic!("caudal-loadgen kept waiting on a frozen broker");
    };
    assert!(!status.success(), "a stalled run must not report success");
    // The reader thread ends at EOF, which closes the channel.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    assert!(
        seen.iter().any(|l| l.contains("stopped answering")),
        "the error says why: {seen:?}"
    );
}

#[test]
fn topic_configs_are_sent_when_the_run_creates_its_topic() {
    let broker = Broker::start();
    let run = |topic: &str, config: &str| {
        Command::new(env!("CARGO_BIN_EXE_caudal-loadgen"))
            .args(["produce", "--bootstrap", &broker.addr, "--topic", topic])
            .args([
                "--topic-config",
                config,
                "--messages",
                "100",
                "--cores",
                "0",
            ])
            .output()
            .expect("running caudal-loadgen")
    };
    // The broker checks the value: a config it refuses proves the config was sent.
    let refused = run("it-bad-config", "retention.bytes=lots");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("InvalidConfig"), "{stderr}");
    let accepted = run("it-good-config", "retention.bytes=4294967296");
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}
