use caudal::log::{LogConfig, LogError};
use caudal::protocol::record_batch::Compression;

use super::*;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

#[test]
fn retention_by_size_deletes_oldest_segments() {
    run(|dir| async move {
        let log = open(
            &dir,
            LogConfig {
                retention_bytes: 200 << 10,
                ..config()
            },
        )
        .await;
        for i in 0..100i64 {
            log.append(batch(4, 1000, i as u8, partition_now(), Compression::None))
                .await
                .unwrap();
        }
        let segments = log.segment_count();
        let size = log.size_bytes();
        assert!(size > 300 << 10);
        let deleted = log.apply_retention(partition_now()).await.unwrap();
        assert!(deleted > 0);
        assert_eq!(log.segment_count(), segments - deleted);
        // As Kafka: a segment goes only if what stays is still at least retention.bytes,
        // so the log ends within one segment above the limit.
        let left = log.size_bytes();
        assert!(((200 << 10)..(266 << 10)).contains(&left), "{left} left");
        let start = log.log_start_offset();
        assert!(start > 0);
        assert_eq!(start, log.segment_bases()[0]);
        assert!(matches!(
            log.read(start - 1, 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(!log.read(start, 100).await.unwrap().batches.is_empty());
        // Deleted segments' files are gone, and the log reopens at the same start.
        let logs = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "log")
            .count();
        assert_eq!(logs, log.segment_count());
        log.close().await.unwrap();
        drop(log);
        let log = open(&dir, config()).await;
        assert_eq!(log.log_start_offset(), start);
        assert_eq!(log.next_offset(), 400);
    });
}

#[test]
fn retention_by_time_deletes_segments_whose_newest_record_is_old() {
    run(|dir| async move {
        let log = open(
            &dir,
            LogConfig {
                retention_ms: 60_000,
                ..config()
            },
        )
        .await;
        let now = partition_now();
        // Old records fill the first segments, new ones the rest.
        for i in 0..100i64 {
            log.append(batch(4, 1000, i as u8, now - 3_600_000, Compression::None))
                .await
                .unwrap();
        }
        let old_end = log.next_offset();
        for i in 0..100i64 {
            log.append(batch(4, 1000, i as u8, now, Compression::None))
                .await
                .unwrap();
        }
        let deleted = log.apply_retention(now).await.unwrap();
        assert!(deleted > 0);
        let start = log.log_start_offset();
        assert!(
            start <= old_end && start > 0,
            "start {start}, old end {old_end}"
        );
        // Nothing new was deleted.
        let first_new = log.offset_for_timestamp(now).await.unwrap().unwrap().0;
        assert_eq!(first_new, old_end);
        assert!(matches!(
            log.read(0, 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // A second pass deletes nothing more.
        assert_eq!(log.apply_retention(now).await.unwrap(), 0);
    });
}

#[test]
fn size_retention_never_deletes_the_active_segment() {
    run(|dir| async move {
        let log = open(
            &dir,
            LogConfig {
                retention_ms: -1,
                retention_bytes: 0,
                ..config()
            },
        )
        .await;
        log.append(batch(4, 100, 0, 1, Compression::None))
            .await
            .unwrap();
        assert_eq!(log.apply_retention(partition_now()).await.unwrap(), 0);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(read_all(&log, 0).await.len(), 1);
    });
}

#[test]
fn an_expired_active_segment_is_rolled_and_deleted() {
    run(|dir| async move {
        let log = open(
            &dir,
            LogConfig {
                retention_ms: 60_000,
                ..config()
            },
        )
        .await;
        log.append(batch(4, 100, 0, 1, Compression::None))
            .await
            .unwrap();
        assert_eq!(log.apply_retention(partition_now()).await.unwrap(), 1);
        assert_eq!((log.log_start_offset(), log.next_offset()), (4, 4));
        assert!(log.read(4, 100).await.unwrap().batches.is_empty());
        assert!(matches!(
            log.read(0, 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let r = log
            .append(batch(1, 10, 0, partition_now(), Compression::None))
            .await
            .unwrap();
        assert_eq!(r.base_offset, 4);
        // Fresh records stay.
        assert_eq!(log.apply_retention(partition_now()).await.unwrap(), 0);
    });
}

fn partition_now() -> i64 {
    caudal::clock::now_ms()
}
