use std::path::Path;

use caudal::log::LogConfig;
use caudal::protocol::record_batch::Compression;
use caudal::replica::Partition;
use rand::{Rng, SeedableRng};

use super::*;

const SEGMENT: &str = "00000000000000000000.log";

/// Appends batches and returns (base offset, bytes as stored, end position in file).
async fn fill(
    log: &Partition,
    batches: usize,
    max_records: usize,
    size: usize,
) -> Vec<(i64, Vec<u8>, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for i in 0..batches {
        let n = 1 + i % max_records;
        let codec = if i % 3 == 0 {
            Compression::Zstd
        } else {
            Compression::None
        };
        let r = log
            .append(batch(n, size + i % 7, i as u8, 1000 + i as i64, codec))
            .await
            .unwrap();
        let stored = log.read(r.base_offset, 1).await.unwrap().batches[0].to_vec();
        pos += stored.len() as u64;
        out.push((r.base_offset, stored, pos));
    }
    out
}

/// Writes `bytes` as the only segment of a fresh partition directory.
fn install(dir: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(SEGMENT), bytes).unwrap();
}

/// Opens the damaged log and checks: the batches before `intact_before` are all there,
/// byte-identical, and nothing that was not a whole valid batch is returned; appends
/// continue at the offset after the last recovered batch.
async fn check_recovered(dir: &Path, original: &[(i64, Vec<u8>, u64)], intact_before: usize) {
    let log = open_uncached(dir, LogConfig::default()).await;
    let got = read_all(&log, 0).await;
    assert!(
        got.len() >= intact_before,
        "lost batches before the damage: {} < {intact_before}",
        got.len()
    );
    for (i, (base, bytes)) in got.iter().enumerate() {
        let (obase, obytes, _) = &original[i];
        assert_eq!(base, obase);
        if i != intact_before {
            assert_eq!(bytes, obytes, "batch {i} differs");
        }
    }
    let next = got.last().map_or(0, |(_, b)| {
        let h = caudal::protocol::record_batch::check_batch(b).unwrap();
        h.last_offset() + 1
    });
    assert_eq!(log.next_offset(), next);
    let r = log
        .append(batch(2, 10, 9, 5000, Compression::None))
        .await
        .unwrap();
    assert_eq!(r.base_offset, next);
    log.close().await.unwrap();
    // And the repaired log reopens to the same state.
    let log = open_uncached(dir, LogConfig::default()).await;
    assert_eq!(log.next_offset(), next + 2);
}

#[test]
fn recovers_from_a_cut_at_every_byte_of_a_small_segment() {
    run(|dir| async move {
        let src = dir.join("src");
        let log = open(&src, LogConfig::default()).await;
        let original = fill(&log, 12, 4, 20).await;
        log.close().await.unwrap();
        let bytes = std::fs::read(src.join(SEGMENT)).unwrap();
        assert_eq!(bytes.len() as u64, original.last().unwrap().2);
        let work = dir.join("work");
        for cut in 0..=bytes.len() {
            install(&work, &bytes[..cut]);
            let whole = original.iter().filter(|b| b.2 <= cut as u64).count();
            let log = open_uncached(&work, LogConfig::default()).await;
            assert_eq!(read_all(&log, 0).await.len(), whole, "cut at {cut}");
            drop(log);
            install(&work, &bytes[..cut]);
            check_recovered(&work, &original, whole).await;
        }
    });
}

#[test]
fn recovers_from_a_flipped_byte_anywhere_in_a_small_segment() {
    run(|dir| async move {
        let src = dir.join("src");
        let log = open(&src, LogConfig::default()).await;
        let original = fill(&log, 8, 3, 16).await;
        log.close().await.unwrap();
        let bytes = std::fs::read(src.join(SEGMENT)).unwrap();
        let work = dir.join("work");
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5a;
            install(&work, &damaged);
            let hit = original.iter().position(|b| (at as u64) < b.2).unwrap();
            check_recovered(&work, &original, hit).await;
        }
    });
}

#[test]
fn recovers_from_random_cuts_in_a_large_segment() {
    run(|dir| async move {
        let src = dir.join("src");
        let log = open(&src, LogConfig::default()).await;
        let original = fill(&log, 400, 50, 500).await;
        log.close().await.unwrap();
        let bytes = std::fs::read(src.join(SEGMENT)).unwrap();
        assert!(bytes.len() > 2 << 20);
        let work = dir.join("work");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..12 {
            let cut = rng.gen_range(0..bytes.len());
            install(&work, &bytes[..cut]);
            let whole = original.iter().filter(|b| b.2 <= cut as u64).count();
            check_recovered(&work, &original, whole).await;
        }
    });
}

#[test]
fn zero_filled_preallocated_tail_is_not_data() {
    run(|dir| async move {
        let src = dir.join("src");
        let log = open(&src, LogConfig::default()).await;
        let original = fill(&log, 10, 2, 50).await;
        // No close: the file keeps its preallocated, zero-filled tail, as after a crash.
        drop(log);
        let len = std::fs::metadata(src.join(SEGMENT)).unwrap().len();
        assert!(len > original.last().unwrap().2);
        check_recovered(&src, &original, original.len()).await;
    });
}

#[test]
fn recovers_every_leader_epoch_of_the_active_segment_after_a_crash() {
    run(|dir| async move {
        // Batches of epochs 1, 1, 3, 3, 3, 7 and 8 (raft terms), as a follower writes
        // them, with no epoch checkpoint saved since: the scan alone must find them.
        let epochs = [1, 1, 3, 3, 3, 7, 8];
        let mut bytes = Vec::new();
        let mut next = 0i64;
        let mut starts = Vec::new();
        for (i, &epoch) in epochs.iter().enumerate() {
            let mut b = batch(1 + i % 3, 50, i as u8, 1000, Compression::None).to_vec();
            caudal::protocol::record_batch::set_offset_and_epoch(&mut b, next, epoch);
            starts.push(next);
            next += check_batch(&b).unwrap().offset_count();
            bytes.extend_from_slice(&b);
        }
        let part = dir.join("p");
        install(&part, &bytes);
        let (log, _) = caudal::log::Log::open(&part, LogConfig::default(), LogEnv::new(0))
            .await
            .unwrap();
        assert_eq!(log.next_offset(), next);
        for (i, &epoch) in epochs.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(next);
            for o in starts[i]..end {
                assert_eq!(log.epoch_at(o), Some(epoch), "epoch at offset {o}");
            }
        }
        // Kafka's OffsetForLeaderEpoch answers from the same table.
        assert_eq!(log.end_offset_for_epoch(1), Some((1, starts[2])));
        assert_eq!(log.end_offset_for_epoch(5), Some((3, starts[5])));
        assert_eq!(log.end_offset_for_epoch(8), Some((8, next)));
        assert_eq!(log.last_epoch(), Some(8));
    });
}

#[test]
fn recovers_the_leader_epochs_of_sealed_segments_after_a_crash() {
    run(|dir| async move {
        let config = LogConfig {
            segment_bytes: 4 << 10,
            ..LogConfig::default()
        };
        let part = dir.join("p");
        let (log, _) = caudal::log::Log::open(&part, config.clone(), LogEnv::new(0))
            .await
            .unwrap();
        // 40 batches over several segments, the epoch rising every 7 batches.
        let mut expected = Vec::new();
        for i in 0..40u8 {
            let epoch = i32::from(i / 7) * 2 + 1;
            let mut b = batch(2, 300, i, 1000, Compression::None);
            let base = log.next_offset();
            caudal::protocol::record_batch::set_offset_and_epoch(&mut b, base, epoch);
            let h = check_batch(&b).unwrap();
            let slot = log.reserve(b.len() as u64, 2, Vec::new).await.unwrap();
            let pending = slot.write(b, &[h]).unwrap();
            drop(slot);
            pending.durable(&log).await.unwrap();
            expected.push((base, epoch));
        }
        assert!(log.segment_count() > 3, "the log rolled");
        drop(log); // a crash: no close, no clean-shutdown marker
        let (log, _) = caudal::log::Log::open(&part, config, LogEnv::new(0))
            .await
            .unwrap();
        for (base, epoch) in expected {
            assert_eq!(log.epoch_at(base), Some(epoch), "epoch at offset {base}");
            assert_eq!(log.epoch_at(base + 1), Some(epoch));
        }
    });
}
