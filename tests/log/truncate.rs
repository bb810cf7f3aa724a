use std::rc::Rc;

use caudal::log::{Log, LogConfig, LogEnv};
use caudal::protocol::record_batch::{check_batch, set_producer, Compression};

use super::*;

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 5_000,
        ..LogConfig::default()
    }
}

async fn open_log(dir: &std::path::Path) -> Rc<Log> {
    Log::open(dir, small_segments(), LogEnv::new(16 << 20))
        .await
        .unwrap()
        .0
}

#[test]
fn truncating_a_suffix_across_segments_keeps_offsets_contiguous() {
    run(|dir| async move {
        let log = open_log(&dir).await;
        for i in 0..12u8 {
            append_at(&log, i32::from(i / 4), i).await;
        }
        assert_eq!(log.next_offset(), 24);
        assert!(log.segment_count() >= 4, "{:?}", log.segment_bases());
        assert_eq!(log.end_offset_for_epoch(1), Some((1, 16)));
        // Cut inside an earlier segment: later segments go, that one is active again.
        log.truncate_suffix(10).await.unwrap();
        assert_eq!(log.next_offset(), 10);
        assert!(log.segment_bases().iter().all(|&b| b < 10));
        assert_eq!(log.last_epoch(), Some(1));
        assert_eq!(log.end_offset_for_epoch(2), Some((1, 10)));
        let read = log.read(0, 1 << 20, 10).await.unwrap();
        let offsets: Vec<i64> = read
            .batches
            .iter()
            .map(|b| check_batch(b).unwrap().base_offset)
            .collect();
        assert!(offsets.iter().all(|&o| o < 10));
        // Appends continue at the cut, in a new epoch, and survive a restart.
        append_at(&log, 7, 100).await;
        assert_eq!(log.next_offset(), 12);
        assert!(
            log.truncate_suffix(11).await.is_err(),
            "11 is inside a batch"
        );
        log.close(Vec::new()).await.unwrap();
        drop(log);
        let log = open_log(&dir).await;
        assert_eq!(log.next_offset(), 12);
        assert_eq!(log.epoch_at(10), Some(7));
        assert_eq!(log.epoch_at(9), Some(1));
        let mut seen = Vec::new();
        let mut from = 0;
        loop {
            let r = log.read(from, 1 << 20, i64::MAX).await.unwrap();
            if r.batches.is_empty() {
                break;
            }
            for b in r.batches {
                let h = check_batch(&b).unwrap();
                if h.base_offset >= from {
                    seen.push(h.base_offset);
                    from = h.last_offset() + 1;
                }
            }
        }
        assert_eq!(seen, vec![0, 2, 4, 6, 8, 10]);
    });
}

#[test]
fn a_truncated_suffix_takes_its_producer_batches_with_it() {
    run(|dir| async move {
        let part = open(&dir, small_segments()).await;
        for seq in 0..6 {
            let mut b = batch(2, 1000, seq as u8, 1, Compression::None);
            set_producer(&mut b, 77, 0, seq * 2);
            part.append(b).await.unwrap();
        }
        part.close().await.unwrap();
        drop(part);
        let log = open_log(&dir).await;
        let recovered = log.truncate_suffix(6).await.unwrap();
        let replayed: Vec<i64> = recovered
            .replay
            .iter()
            .filter(|h| h.base_offset >= recovered.snapshot_offset)
            .map(|h| h.base_offset)
            .collect();
        assert!(replayed.iter().all(|&o| o < 6), "{replayed:?}");
        // No clean close (that would save a replica state this test has not got): the
        // reopen rebuilds the producers from snapshots and a scan.
        log.flush().await.unwrap();
        drop(log);
        // The partition reopened from the cut accepts sequence 6 as new, at offset 6.
        let part = open(&dir, small_segments()).await;
        let mut b = batch(2, 1000, 3, 1, Compression::None);
        set_producer(&mut b, 77, 0, 6);
        let r = part.append(b).await.unwrap();
        assert!(!r.duplicate);
        assert_eq!(r.base_offset, 6);
    });
}
