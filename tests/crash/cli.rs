//! The binary's configuration: a TOML file under the flags, refusal of bad keys, the
//! dry run, and SIGTERM.

use std::process::Command;

use super::*;

fn caudal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_caudal"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_config_file_is_read_and_flags_override_it() {
    let dir = tempfile::Builder::new()
        .prefix("caudal-cli-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let port = free_ports(3);
    let file = dir.path().join("caudal.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\nshards = 3\ndefault_partitions = 5\nflush_interval_ms = 250\nlog_level = \"warn\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = caudal(&[
        "--config",
        file.to_str().unwrap(),
        "--check-config",
        "--shards",
        "2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("configuration ok"));
    assert!(
        text.contains("shards: 2"),
        "the flag wins over the file:\n{text}"
    );
    assert!(text.contains("default_partitions: 5"), "{text}");
    assert!(
        text.contains("Interval(") && text.contains("250ms"),
        "{text}"
    );
    assert!(text.contains(&format!("base_port: {port}")), "{text}");
}

#[test]
fn unknown_keys_and_bad_values_are_refused_naming_the_key() {
    let dir = tempfile::Builder::new()
        .prefix("caudal-cli-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    for (text, key) in [
        ("retension_ms = 5\n", "retension_ms"),
        ("shards = \"two\"\n", "shards"),
        ("listen = \"not an address\"\n", "listen"),
        ("shards = 0\n", "shards"),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let out = caudal(&["--config", file.to_str().unwrap(), "--check-config"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} was accepted");
        assert!(
            err.contains(key),
            "error for {text:?} does not name {key}: {err}"
        );
    }
}

#[test]
fn sigterm_exits_zero_and_the_next_start_reports_a_clean_shutdown() {
    let mut broker = Broker::start();
    let mut c = connect(broker.addr(0), &AtomicBool::new(false)).unwrap();
    create_topic(&mut c, "bye", 2);
    drop(c);
    assert!(broker.stop().success());
    broker.spawn();
    let log = std::fs::read_to_string(broker.log_path()).unwrap();
    assert!(log.contains("stopped cleanly"), "{log}");
    assert!(
        log.contains("partitions recovered") && log.contains("scanned=0"),
        "{log}"
    );
}

#[test]
fn a_relative_data_dir_works_like_make_run_uses_it() {
    let cwd = tempfile::Builder::new()
        .prefix("caudal-relative-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let port = free_ports(1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_caudal"))
        .current_dir(cwd.path())
        .args(["--data-dir", "./data", "--shards", "1"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("caudal ready"));
    if !ready {
        let out = child.wait_with_output().unwrap();
        panic!(
            "the broker did not start with a relative data dir:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    create_topic(&mut c, "here", 1);
    let r = produce(&mut c, "here", 0, batch(&[b"one", b"two"]));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    drop(c);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(cwd.path().join("data/here-0").is_dir());
}
