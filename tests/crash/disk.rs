//! A full disk that also holds the broker's log: the log lines that cannot be written are
//! dropped, and the process lives on (it used to panic in the logger and abort).

use std::process::{Command, Stdio};

use super::*;

#[test]
fn a_full_disk_that_also_holds_the_log_does_not_end_the_broker() {
    let disk = match SmallDisk::new(96) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipping disk-full test: cannot mount a loop filesystem here ({e})");
            return;
        }
    };
    let data = disk.mount.join("data");
    let log = std::fs::File::create(disk.mount.join("broker.log")).unwrap();
    let port = free_ports(1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_caudal"))
        .args(["--data-dir", data.to_str().unwrap(), "--shards", "1"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("caudal ready"))),
        "the broker did not start"
    );
    std::thread::spawn(move || for _ in lines {});
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    create_topic(&mut c, "full", 1);
    let ballast = disk.mount.join("ballast");
    std::fs::write(&ballast, vec![1u8; 24 << 20]).unwrap();

    // Fill the disk; every refused produce logs a warning the full disk cannot take.
    let value = vec![7u8; 200 << 10];
    let mut storage_errors = 0;
    for _ in 0..2000 {
        let r = produce(&mut c, "full", 0, batch(&[&value]));
        match r.responses[0].partition_responses[0].error_code {
            0 => {}
            56 => {
                storage_errors += 1;
                if storage_errors >= 10 {
                    break;
                }
            }
            other => panic!("unexpected produce error {other}"),
        }
    }
    assert!(storage_errors >= 10, "the disk never filled");
    // Take the last free blocks too, so the log cannot grow either, then make the broker
    // log: each refused produce writes a warning.
    let last = disk.mount.join("last-blocks");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&last).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
        let _ = f.sync_all();
    }
    for _ in 0..10 {
        let r = produce(&mut c, "full", 0, batch(&[&value]));
        assert_eq!(r.responses[0].partition_responses[0].error_code, 56);
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the broker exited when its log could not be written"
    );

    // Space again: produce works, on the same connection.
    std::fs::remove_file(&ballast).unwrap();
    std::fs::remove_file(&last).unwrap();
    let r = produce(&mut c, "full", 0, batch(&[b"after"]));
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    drop(c);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    drop(disk);
}
