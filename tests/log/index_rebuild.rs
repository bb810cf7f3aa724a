use caudal::log::LogConfig;
use caudal::protocol::record_batch::Compression;

use super::*;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 10,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

async fn lookups(dir: &std::path::Path) -> Vec<(i64, Option<(i64, i64)>)> {
    let log = open_uncached(dir, config()).await;
    let mut out = Vec::new();
    for offset in (0..log.next_offset()).step_by(37) {
        let first = log.read(offset, 1).await.unwrap().batches[0].clone();
        let h = caudal::protocol::record_batch::check_batch(&first).unwrap();
        out.push((
            h.base_offset,
            log.offset_for_timestamp(offset * 10).await.unwrap(),
        ));
    }
    out
}

#[test]
fn rebuilt_indexes_give_the_same_lookups() {
    run(|dir| async move {
        let log = open(&dir, config()).await;
        for i in 0..600i64 {
            log.append(batch(3, 300, i as u8, i * 30, Compression::None))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
        assert!(log.segment_count() >= 3);
        drop(log);
        let before = lookups(&dir).await;
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            let ext = p.extension().unwrap().to_str().unwrap().to_string();
            if ext == "index" || ext == "timeindex" {
                std::fs::remove_file(&p).unwrap();
                removed += 1;
            }
        }
        assert!(removed >= 4);
        let after = lookups(&dir).await;
        assert_eq!(before, after);
        // The rebuilt index files were written back.
        let indexes = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "index")
            .count();
        assert!(indexes >= 2);
    });
}

#[test]
fn damaged_index_is_detected_and_rebuilt() {
    run(|dir| async move {
        let log = open(&dir, config()).await;
        for i in 0..400i64 {
            log.append(batch(3, 300, i as u8, i * 30, Compression::None))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
        drop(log);
        let before = lookups(&dir).await;
        let index = dir.join("00000000000000000000.index");
        let mut bytes = std::fs::read(&index).unwrap();
        assert!(bytes.len() >= 16);
        bytes.swap(3, 11); // entries out of order
        bytes.truncate(bytes.len() - 3); // and a torn entry
        std::fs::write(&index, &bytes).unwrap();
        assert_eq!(lookups(&dir).await, before);
    });
}
