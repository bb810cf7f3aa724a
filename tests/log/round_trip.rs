use caudal::log::LogConfig;
use caudal::protocol::record_batch::Compression;

use super::*;

const SIZES: &[(usize, usize)] = &[(1, 1), (10, 100), (100, 1000), (3, 100_000), (1, 1 << 20)];
const CODECS: &[Compression] = &[
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn config() -> LogConfig {
    LogConfig {
        max_message_bytes: 8 << 20,
        ..LogConfig::default()
    }
}

async fn append_all(log: &caudal::replica::Partition) -> Vec<(i64, i64, Vec<u8>)> {
    let mut sent = Vec::new();
    let mut ts = 1_000_000;
    for &(n, size) in SIZES {
        for (k, &codec) in CODECS.iter().enumerate() {
            ts += 10;
            let b = batch(n, size, k as u8, ts, codec);
            let bytes = b.to_vec();
            let r = log.append(b).await.unwrap();
            assert_eq!(r.last_offset - r.base_offset + 1, n as i64);
            sent.push((r.base_offset, ts, bytes));
        }
    }
    sent
}

#[test]
fn batches_of_every_size_and_codec_read_back_identical() {
    run(|dir| async move {
        let log = open(&dir, config()).await;
        let sent = append_all(&log).await;
        let got = read_all(&log, 0).await;
        assert_eq!(got.len(), sent.len());
        for ((base, _, bytes), (gbase, gbytes)) in sent.iter().zip(&got) {
            assert_eq!(base, gbase);
            assert_eq!(&without_offset(gbytes), bytes);
        }
        // Every offset inside a batch finds that batch.
        for (base, _, bytes) in &sent {
            let res = log.read(*base, 1).await.unwrap();
            assert_eq!(without_offset(&res.batches[0]), *bytes);
        }
    });
}

#[test]
fn reads_from_disk_match_reads_from_cache() {
    run(|dir| async move {
        let log = open(&dir, config()).await;
        let sent = append_all(&log).await;
        log.close().await.unwrap();
        drop(log);
        let log = open_uncached(&dir, config()).await;
        let got = read_all(&log, 0).await;
        assert_eq!(got.len(), sent.len());
        for ((base, _, bytes), (gbase, gbytes)) in sent.iter().zip(&got) {
            assert_eq!(base, gbase);
            assert_eq!(&without_offset(gbytes), bytes);
        }
    });
}

#[test]
fn finds_first_batch_at_or_after_a_timestamp() {
    run(|dir| async move {
        let log = open_uncached(&dir, config()).await;
        let sent = append_all(&log).await;
        for (base, ts, _) in &sent {
            assert_eq!(
                log.offset_for_timestamp(*ts).await.unwrap(),
                Some((*base, *ts))
            );
            assert_eq!(
                log.offset_for_timestamp(*ts - 5).await.unwrap(),
                Some((*base, *ts))
            );
        }
        let last_ts = sent.last().unwrap().1;
        assert_eq!(log.offset_for_timestamp(last_ts + 1).await.unwrap(), None);
    });
}

#[test]
fn reading_past_the_end_or_at_it() {
    run(|dir| async move {
        let log = open(&dir, config()).await;
        log.append(batch(5, 10, 0, 1, Compression::None))
            .await
            .unwrap();
        assert!(log.read(5, 100).await.unwrap().batches.is_empty());
        assert!(matches!(
            log.read(6, 100).await,
            Err(caudal::log::LogError::OffsetOutOfRange { .. })
        ));
    });
}
