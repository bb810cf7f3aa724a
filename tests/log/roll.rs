use caudal::log::LogConfig;
use caudal::protocol::record_batch::Compression;

use super::*;

#[test]
fn segments_roll_when_full() {
    run(|dir| async move {
        let log = open(
            &dir,
            LogConfig {
                segment_bytes: 10_000,
                ..LogConfig::default()
            },
        )
        .await;
        for i in 0..30 {
            log.append(batch(1, 1000, i, 1, Compression::None))
                .await
                .unwrap();
        }
        // Each ~1.1 KB batch: 9 fit in 10,000 bytes.
        let bases = log.segment_bases();
        assert_eq!(bases, vec![0, 9, 18, 27]);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().unwrap() == "log" && p.file_stem().unwrap() != "00000000000000000027" {
                assert!(std::fs::metadata(&p).unwrap().len() <= 10_000);
            }
        }
        assert_eq!(read_all(&log, 0).await.len(), 30);
        log.close().await.unwrap();
        drop(log);
        let log = open_uncached(
            &dir,
            LogConfig {
                segment_bytes: 10_000,
                ..LogConfig::default()
            },
        )
        .await;
        assert_eq!(log.segment_bases(), vec![0, 9, 18, 27]);
        assert_eq!(read_all(&log, 0).await.len(), 30);
        assert_eq!(read_all(&log, 13).await[0].0, 13);
    });
}

#[test]
fn segments_roll_when_old() {
    run(|dir| async move {
        let log = open(
            &dir,
            LogConfig {
                segment_ms: 50,
                ..LogConfig::default()
            },
        )
        .await;
        log.append(batch(1, 10, 0, 1, Compression::None))
            .await
            .unwrap();
        log.append(batch(1, 10, 1, 1, Compression::None))
            .await
            .unwrap();
        assert_eq!(log.segment_count(), 1);
        glommio::timer::sleep(std::time::Duration::from_millis(80)).await;
        log.append(batch(1, 10, 2, 1, Compression::None))
            .await
            .unwrap();
        assert_eq!(log.segment_bases(), vec![0, 2]);
    });
}

#[test]
fn an_oversized_batch_goes_alone_into_a_new_segment() {
    run(|dir| async move {
        let log = open(
            &dir,
            LogConfig {
                segment_bytes: 1000,
                ..LogConfig::default()
            },
        )
        .await;
        log.append(batch(1, 10, 0, 1, Compression::None))
            .await
            .unwrap();
        log.append(batch(1, 5000, 1, 1, Compression::None))
            .await
            .unwrap();
        log.append(batch(1, 10, 2, 1, Compression::None))
            .await
            .unwrap();
        assert_eq!(log.segment_bases(), vec![0, 1, 2]);
        assert_eq!(read_all(&log, 0).await.len(), 3);
    });
}

#[test]
fn a_roll_that_cannot_start_the_next_segment_is_retried_by_the_next_append() {
    run(|dir| async move {
        let config = LogConfig {
            segment_bytes: 10_000,
            ..LogConfig::default()
        };
        let log = open(&dir, config.clone()).await;
        // 9 batches fill the first segment; the 10th rolls to a segment based at 9.
        for i in 0..9 {
            log.append(batch(1, 1000, i, 1, Compression::None))
                .await
                .unwrap();
        }
        // Something in the way of the next segment's file: the roll cannot create it.
        let blocker = dir.join("00000000000000000009.log");
        std::fs::create_dir(&blocker).unwrap();
        assert!(log
            .append(batch(1, 1000, 9, 1, Compression::None))
            .await
            .is_err());
        std::fs::remove_dir(&blocker).unwrap();
        // Once it can be, the next append starts the segment and lands in it.
        let r = log
            .append(batch(1, 1000, 10, 1, Compression::None))
            .await
            .unwrap();
        assert_eq!(r.base_offset, 9);
        assert_eq!(log.segment_bases(), vec![0, 9]);
        assert_eq!(read_all(&log, 0).await.len(), 10);
        log.close().await.unwrap();
        drop(log);
        let log = open_uncached(&dir, config).await;
        assert_eq!(read_all(&log, 0).await.len(), 10);
    });
}
