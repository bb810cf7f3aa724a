use caudal::log::LogConfig;
use caudal::protocol::record_batch::{set_producer, Compression};
use caudal::replica::producer_state::ProducerError;
use caudal::replica::ReplicaError;

use super::*;

fn idem(pid: i64, epoch: i16, seq: i32, n: usize) -> BytesMut {
    let mut b = batch(n, 20, seq as u8, 1000, Compression::None);
    set_producer(&mut b, pid, epoch, seq);
    b
}

#[test]
fn a_retried_batch_is_acknowledged_with_its_original_offsets_and_not_written_twice() {
    run(|dir| async move {
        let log = open(&dir, LogConfig::default()).await;
        let a = log.append(idem(42, 0, 0, 3)).await.unwrap();
        let b = log.append(idem(42, 0, 3, 2)).await.unwrap();
        let again = log.append(idem(42, 0, 0, 3)).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(
            (again.base_offset, again.last_offset),
            (a.base_offset, a.last_offset)
        );
        assert_eq!(log.next_offset(), b.last_offset + 1);
        assert_eq!(read_all(&log, 0).await.len(), 2);
    });
}

#[test]
fn a_sequence_gap_and_a_stale_epoch_are_refused() {
    run(|dir| async move {
        let log = open(&dir, LogConfig::default()).await;
        log.append(idem(7, 1, 0, 2)).await.unwrap();
        assert!(matches!(
            log.append(idem(7, 1, 5, 1)).await,
            Err(ReplicaError::Producer(ProducerError::OutOfOrder {
                expected: 2,
                got: 5,
                ..
            }))
        ));
        assert!(matches!(
            log.append(idem(7, 0, 2, 1)).await,
            Err(ReplicaError::Producer(ProducerError::InvalidEpoch { .. }))
        ));
        assert!(matches!(
            log.append(idem(8, 0, 3, 1)).await,
            Err(ReplicaError::Producer(ProducerError::OutOfOrder {
                expected: 0,
                ..
            }))
        ));
        assert_eq!(log.next_offset(), 2);
    });
}

#[test]
fn producer_state_survives_restarts_with_and_without_snapshots() {
    run(|dir| async move {
        let config = LogConfig {
            segment_bytes: 1000,
            ..LogConfig::default()
        };
        let log = open(&dir, config.clone()).await;
        let mut seq = 0;
        let mut first = None;
        for _ in 0..40 {
            let r = log.append(idem(99, 0, seq, 2)).await.unwrap();
            first.get_or_insert(r);
            seq += 2;
        }
        assert!(log.segment_count() > 3);
        let last = log.append(idem(99, 0, seq, 2)).await.unwrap();
        drop(log); // a crash: no clean close
                   // With snapshots: the retry of the newest batch is still recognised.
        let log = open(&dir, config.clone()).await;
        let again = log.append(idem(99, 0, seq, 2)).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(again.base_offset, last.base_offset);
        drop(log);
        // Without any snapshot the state is rebuilt by scanning every segment.
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().unwrap() == "snapshot" {
                std::fs::remove_file(p).unwrap();
            }
        }
        let log = open(&dir, config).await;
        let again = log.append(idem(99, 0, seq, 2)).await.unwrap();
        assert!(again.duplicate);
        assert!(matches!(
            log.append(idem(99, 0, seq + 4, 1)).await,
            Err(ReplicaError::Producer(_))
        ));
        let next = log.append(idem(99, 0, seq + 2, 1)).await.unwrap();
        assert_eq!(next.base_offset, last.last_offset + 1);
    });
}
