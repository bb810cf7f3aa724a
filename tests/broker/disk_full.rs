//! A full disk: produce fails with KAFKA_STORAGE_ERROR, consumers keep reading, nothing
//! acknowledged is damaged, and produce works again once space is freed. Runs on a small
//! ext4 filesystem loop-mounted for the test; skipped (with a message) where the machine
//! cannot mount one.

use std::path::Path;

use caudal::protocol::record_batch::{check_batch, uncompressed_records};

use super::*;

fn fill(path: &Path, megabytes: usize) {
    std::fs::write(path, vec![1u8; megabytes << 20]).unwrap();
}

fn values_in(client: &mut Client) -> Vec<Vec<u8>> {
    read_partition(client, "full", 0)
        .iter()
        .flat_map(|b| {
            check_batch(b).unwrap();
            uncompressed_records(b)
                .unwrap()
                .into_iter()
                .map(|r| r.value.unwrap().to_vec())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_full_disk_fails_produce_cleanly_and_recovers_when_space_is_freed() {
    let disk = match SmallDisk::new(96) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipping disk-full test: cannot mount a loop filesystem here ({e})");
            return;
        }
    };
    let data = disk.mount.join("data");
    let mut broker =
        TestBroker::start_on_free_ports(tempfile::tempdir().unwrap(), 1, |base_port| Config {
            data_dir: data.clone(),
            base_port,
            shards: 1,
            cpus: vec![0],
            tail_cache_bytes: 1 << 20,
            ..Config::default()
        });
    let mut c = Client::connect(broker.addr(0));
    create_topic(&mut c, "full", 1);
    let ballast = disk.mount.join("ballast");
    fill(&ballast, 24);

    let value = vec![7u8; 200 << 10];
    let mut acked = Vec::new();
    let mut storage_errors = 0;
    for i in 0..2000u32 {
        let tag = format!("{i:06}");
        let mut v = value.clone();
        v[..6].copy_from_slice(tag.as_bytes());
        let r = produce(&mut c, "full", 0, batch(&[&v]));
        match r.responses[0].partition_responses[0].error_code {
            0 => acked.push(v),
            56 => {
                storage_errors += 1;
                if storage_errors >= 3 {
                    break;
                }
            }
            other => panic!("unexpected produce error {other}"),
        }
    }
    assert!(storage_errors >= 3, "the disk never filled");
    assert!(!acked.is_empty());

    // Consumers keep reading everything acknowledged, intact.
    let mut reader = Client::connect(broker.addr(0));
    assert_eq!(values_in(&mut reader), acked);

    // Free space: produce works again.
    std::fs::remove_file(&ballast).unwrap();
    let again = vec![9u8; 1000];
    let r = produce(&mut c, "full", 0, batch(&[&again]));
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 0,
        "produce after freeing space"
    );
    acked.push(again);
    assert_eq!(values_in(&mut reader), acked);

    // And it all survives a restart.
    drop((c, reader));
    broker.restart();
    let mut reader = Client::connect(broker.addr(0));
    assert_eq!(values_in(&mut reader), acked);
    drop(reader);
    if let Some(h) = broker.handle.take() {
        h.shutdown();
    }
    drop(disk);
}
