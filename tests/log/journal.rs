//! The shard journal: small durable appends are acknowledged once the journal has them,
//! before their segment is synced; after a crash each log takes back what its segments
//! lack, never what a truncation or a deletion took away.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use caudal::io::dma_writer::IoStats;
use caudal::log::{Journal, JournalOptions, Log, LogConfig, LogEnv};
use caudal::protocol::record_batch::{check_batch, uncompressed_records, Compression};
use caudal::replica::Partition;

use super::*;

async fn open_journal(dir: &Path, file_bytes: u64) -> Rc<Journal> {
    let opts = JournalOptions {
        file_bytes,
        ..JournalOptions::default()
    };
    Journal::open(
        &dir.join("journal"),
        opts,
        Default::default(),
        Arc::new(IoStats::default()),
    )
    .await
    .unwrap()
}

fn env(journal: &Rc<Journal>) -> LogEnv {
    LogEnv {
        journal: Some(journal.clone()),
        ..LogEnv::new(16 << 20)
    }
}

async fn open_partition(dir: &Path, journal: &Rc<Journal>) -> Rc<Partition> {
    Partition::open(dir, LogConfig::default(), env(journal), Default::default())
        .await
        .unwrap()
}

fn segment_bytes_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn journal_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// A crash (nothing closed: buffered segment data goes with the process), then the
/// journal and the log opened again.
async fn crash_and_reopen(
    dir: &Path,
    part: &Path,
    config: LogConfig,
    log: Rc<Log>,
    journal: Rc<Journal>,
) -> (Rc<Journal>, Rc<Log>) {
    drop(log);
    drop(journal);
    let journal = open_journal(dir, 64 << 20).await;
    let (log, _) = Log::open(part, config, env(&journal)).await.unwrap();
    (journal, log)
}

/// The first record's first value byte of each batch from `from` to `to` (the tests'
/// batches are filled with their seed).
async fn seeds_between(log: &Log, from: i64, to: i64) -> Vec<u8> {
    let mut seeds = Vec::new();
    let mut at = from;
    while at < to {
        let r = log.read(at, 1 << 20, to).await.unwrap();
        for b in r.batches {
            let h = check_batch(&b).unwrap();
            assert_eq!(h.base_offset, at, "offsets stay contiguous");
            at = h.last_offset() + 1;
            seeds.push(uncompressed_records(&b).unwrap()[0].value.as_ref().unwrap()[0]);
        }
    }
    seeds
}

/// Epoch 1's batches of seeds 0..5 (offsets 0..10), the tail from 4 truncated, and
/// epoch 2's batches of seeds 100..103 from there (offsets 4..10).
async fn rewrite_tail_from_4(log: &Log) {
    for seed in 0..5u8 {
        append_at(log, 1, seed).await;
    }
    log.truncate_suffix(4).await.unwrap();
    for seed in 100..103u8 {
        append_at(log, 2, seed).await;
    }
}

#[test]
fn acknowledged_small_appends_survive_a_crash_through_the_journal() {
    run(|dir| async move {
        let part = dir.join("t-0");
        let journal = open_journal(&dir, 64 << 20).await;
        let log = open_partition(&part, &journal).await;
        let mut sent = Vec::new();
        for i in 0..200u32 {
            let b = batch(1, 1000, i as u8, 1000 + i64::from(i), Compression::None);
            sent.push(b.to_vec());
            let r = log.append(b).await.unwrap();
            assert_eq!(r.base_offset, i64::from(i));
        }
        // A crash: nothing is closed, buffered segment data is gone with the process.
        drop(log);
        drop(journal);
        let acked: u64 = sent.iter().map(|b| b.len() as u64).sum();
        assert!(
            segment_bytes_on_disk(&part) < acked,
            "the segment alone does not hold what was acknowledged"
        );
        let journal = open_journal(&dir, 64 << 20).await;
        let log = open_partition(&part, &journal).await;
        journal.recovery_done().await.unwrap();
        let got = read_all(&log, 0).await;
        assert_eq!(got.len(), 200);
        for (i, (base, bytes)) in got.iter().enumerate() {
            assert_eq!(*base, i as i64);
            assert_eq!(without_offset(bytes), without_offset(&sent[i]));
        }
        let r = log
            .append(batch(1, 10, 9, 1, Compression::None))
            .await
            .unwrap();
        assert_eq!(r.base_offset, 200);
    });
}

#[test]
fn replay_after_a_crash_does_not_undo_a_truncation() {
    run(|dir| async move {
        let part = dir.join("t-0");
        let journal = open_journal(&dir, 64 << 20).await;
        let (log, _) = Log::open(&part, LogConfig::default(), env(&journal))
            .await
            .unwrap();
        for seed in 0..10u8 {
            append_at(&log, 1, seed).await;
        }
        log.truncate_suffix(10).await.unwrap();
        for seed in 100..103u8 {
            append_at(&log, 2, seed).await;
        }
        let (_journal, log) =
            crash_and_reopen(&dir, &part, LogConfig::default(), log, journal).await;
        assert_eq!(log.next_offset(), 16);
        assert_eq!(
            seeds_between(&log, 0, 16).await,
            vec![0, 1, 2, 3, 4, 100, 101, 102]
        );
        assert_eq!(log.epoch_at(10), Some(2));
    });
}

/// The journal can hold batches from before a truncation whose offsets the rewritten
/// segment no longer reaches (the files with the batches before them were released):
/// they are skipped, and what comes after them — the truncation, the new batches, a
/// raft group's records — is still replayed. (Replay used to stop at the first such
/// batch, and a raft replica came back with the HardState of an older term.)
#[test]
fn records_after_batches_a_truncation_left_behind_are_replayed() {
    run(|dir| async move {
        let part = dir.join("t-0");
        let journal = open_journal(&dir, 8 << 10).await;
        let (log, _) = Log::open(&part, LogConfig::default(), env(&journal))
            .await
            .unwrap();
        // Until the current file holds a batch and the files before it are released.
        let mut seed = 0u8;
        loop {
            while journal.pending_checkpoints() > 0 {
                caudal::task::sleep(std::time::Duration::from_millis(1)).await;
            }
            let generation = journal.generation();
            append_at(&log, 1, seed).await;
            seed += 1;
            if seed > 8 && journal.generation() == generation {
                break;
            }
        }
        while journal.pending_checkpoints() > 0 {
            caudal::task::sleep(std::time::Duration::from_millis(1)).await;
        }
        let end = log.next_offset();
        log.truncate_suffix(4).await.unwrap();
        append_at(&log, 2, 100).await;
        log.flush().await.unwrap();
        log.journal_raft(b"hard state of term 2")
            .unwrap()
            .unwrap()
            .durable()
            .await
            .unwrap();
        drop(log);
        journal.halt().await;
        drop(journal);
        let journal = open_journal(&dir, 8 << 10).await;
        let (log, _) = Log::open(&part, LogConfig::default(), env(&journal))
            .await
            .unwrap();
        assert!(
            end > 8,
            "the batches left behind were past the rewritten tail"
        );
        assert_eq!(log.next_offset(), 6);
        assert_eq!(log.epoch_at(4), Some(2));
        assert_eq!(
            log.take_raft_records(),
            vec![bytes::Bytes::from_static(b"hard state of term 2")]
        );
    });
}

/// A truncation whose offset a later prefix cut passed (the raft log cut below its
/// commit point) still voids the batches journaled before it: replay must not put a
/// stale batch back at an offset the log holds a newer one for, only in the journal.
/// (It did: a raft follower came back with batches of an old term, dropped the entries
/// it had acknowledged, and raft-rs stopped on a commit past its log; 1 in ~11,000 of
/// the raft schedules with cuts.)
#[test]
fn a_truncation_below_the_logs_start_still_voids_the_batches_journaled_before_it() {
    run(|dir| async move {
        let part = dir.join("t-0");
        // Two batches (2 offsets, ~2 KiB each) to a segment.
        let config = LogConfig {
            segment_bytes: 5000,
            ..LogConfig::default()
        };
        let journal = open_journal(&dir, 64 << 20).await;
        let (log, _) = Log::open(&part, config.clone(), env(&journal))
            .await
            .unwrap();
        // The new batch at 8 is in the active segment's buffer and in the journal, where
        // the stale one at 8 comes before the truncation.
        rewrite_tail_from_4(&log).await;
        assert_eq!(log.segment_bases(), vec![0, 4, 8]);
        // The cut: segments 0 and 4 go, the log starts at 8, past the truncation.
        log.truncate_prefix(8).await.unwrap();
        assert_eq!(log.log_start_offset(), 8);
        let (journal, log) = crash_and_reopen(&dir, &part, config, log, journal).await;
        journal.recovery_done().await.unwrap();
        assert_eq!((log.log_start_offset(), log.next_offset()), (8, 10));
        assert_eq!(
            seeds_between(&log, 8, 10).await,
            vec![102],
            "the batch at 8 is the one written after the truncation"
        );
        assert_eq!(log.epoch_at(8), Some(2));
    });
}

/// A batch large enough to bypass the journal, written after a truncation, is durable
/// in its segment alone: replaying the truncation after a crash must not cut it (nor
/// the journaled batches after it), since the cut it records had reached the file.
#[test]
fn a_large_append_after_a_truncation_survives_a_crash() {
    run(|dir| async move {
        let part = dir.join("t-0");
        let opts = JournalOptions {
            file_bytes: 64 << 20,
            direct_bytes: 4096,
            ..JournalOptions::default()
        };
        let journal = Journal::open(
            &dir.join("journal"),
            opts,
            Default::default(),
            Arc::new(IoStats::default()),
        )
        .await
        .unwrap();
        let (log, _) = Log::open(&part, LogConfig::default(), env(&journal))
            .await
            .unwrap();
        for seed in 0..5u8 {
            append_at(&log, 1, seed).await;
        }
        log.truncate_suffix(4).await.unwrap();
        // Five records of 1,000 bytes: past direct_bytes, so only in the segment.
        let mut big = batch(5, 1000, 200, 1, Compression::None);
        let pending = {
            let slot = log.reserve(big.len() as u64, 5, Vec::new).await.unwrap();
            caudal::protocol::record_batch::set_offset_and_epoch(&mut big, slot.next_offset(), 2);
            let h = check_batch(&big).unwrap();
            slot.write(big, &[h]).unwrap()
        };
        pending.durable(&log).await.unwrap();
        append_at(&log, 2, 210).await;
        assert_eq!(log.next_offset(), 11);
        let (journal, log) =
            crash_and_reopen(&dir, &part, LogConfig::default(), log, journal).await;
        journal.recovery_done().await.unwrap();
        assert_eq!(
            seeds_between(&log, 4, log.next_offset()).await,
            vec![200, 210],
            "the large batch and the one after it are kept"
        );
    });
}

#[test]
fn a_new_log_in_a_deleted_logs_directory_gets_none_of_its_journaled_batches() {
    run(|dir| async move {
        let part = dir.join("t-0");
        let journal = open_journal(&dir, 64 << 20).await;
        let old = open_partition(&part, &journal).await;
        for i in 0..5u8 {
            old.append(batch(1, 100, i, 1, Compression::None))
                .await
                .unwrap();
        }
        old.close().await.unwrap();
        old.log().forget().await.unwrap();
        drop(old);
        std::fs::remove_dir_all(&part).unwrap();
        let new = open_partition(&part, &journal).await;
        new.append(batch(1, 100, 42, 1, Compression::None))
            .await
            .unwrap();
        drop(new);
        drop(journal);
        let journal = open_journal(&dir, 64 << 20).await;
        let new = open_partition(&part, &journal).await;
        let got = read_all(&new, 0).await;
        assert_eq!(got.len(), 1, "only the new log's own batch");
        assert_eq!(new.next_offset(), 1);
    });
}

#[test]
fn journal_files_are_recycled_and_every_append_survives_many_checkpoints() {
    run(|dir| async move {
        let journal = open_journal(&dir, 64 << 10).await;
        let parts: Vec<PathBuf> = (0..3).map(|p| dir.join(format!("t-{p}"))).collect();
        let mut logs = Vec::new();
        for p in &parts {
            logs.push(open_partition(p, &journal).await);
        }
        let first_generation = journal.generation();
        for i in 0..600u32 {
            let log = &logs[i as usize % 3];
            log.append(batch(1, 1000, i as u8, 1, Compression::None))
                .await
                .unwrap();
        }
        assert!(
            journal.generation() >= first_generation + 8,
            "the journal moved through its files ({} → {})",
            first_generation,
            journal.generation()
        );
        assert!(
            journal_files(&dir).len() <= 4,
            "checkpointed files are recycled, not kept: {:?}",
            journal_files(&dir)
        );
        drop(logs);
        drop(journal);
        let journal = open_journal(&dir, 64 << 10).await;
        for p in &parts {
            let log = open_partition(p, &journal).await;
            assert_eq!(log.next_offset(), 200, "{}", p.display());
            assert_eq!(read_all(&log, 0).await.len(), 200);
        }
    });
}

#[test]
fn a_clean_shutdown_leaves_nothing_to_replay() {
    run(|dir| async move {
        let part = dir.join("t-0");
        let journal = open_journal(&dir, 64 << 20).await;
        let log = open_partition(&part, &journal).await;
        for i in 0..20u8 {
            log.append(batch(1, 100, i, 1, Compression::None))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
        journal.close().await.unwrap();
        assert!(journal_files(&dir).is_empty(), "{:?}", journal_files(&dir));
        drop(log);
        drop(journal);
        let journal = open_journal(&dir, 64 << 20).await;
        let log = open_partition(&part, &journal).await;
        assert!(log.opened_clean());
        assert_eq!(log.next_offset(), 20);
    });
}
