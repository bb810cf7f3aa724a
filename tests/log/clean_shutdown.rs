use caudal::log::LogConfig;
use caudal::protocol::record_batch::{set_producer, Compression};

use super::*;

#[test]
fn a_clean_close_reopens_without_a_scan_and_keeps_producer_state() {
    run(|dir| async move {
        let log = open(&dir, LogConfig::default()).await;
        for i in 0..20 {
            let mut b = batch(2, 50, i, 1000 + i64::from(i), Compression::None);
            set_producer(&mut b, 5, 0, i32::from(i) * 2);
            log.append(b).await.unwrap();
        }
        log.close().await.unwrap();
        drop(log);
        assert!(dir.join("clean-shutdown").exists());
        let log = open(&dir, LogConfig::default()).await;
        assert!(log.opened_clean());
        assert!(
            !dir.join("clean-shutdown").exists(),
            "the marker is consumed"
        );
        assert_eq!(log.next_offset(), 40);
        assert_eq!(read_all(&log, 0).await.len(), 20);
        assert_eq!(
            log.offset_for_timestamp(1010).await.unwrap().map(|x| x.0),
            Some(20)
        );
        // Producer state came back from the marker: a retry is still a duplicate.
        let mut retry = batch(2, 50, 19, 1019, Compression::None);
        set_producer(&mut retry, 5, 0, 38);
        assert!(log.append(retry).await.unwrap().duplicate);
        log.append(batch(1, 10, 0, 2000, Compression::None))
            .await
            .unwrap();
        drop(log); // crash: no marker this time
        let log = open(&dir, LogConfig::default()).await;
        assert!(!log.opened_clean());
        assert_eq!(log.next_offset(), 41);
    });
}

#[test]
fn a_marker_that_disagrees_with_the_segment_falls_back_to_a_scan() {
    run(|dir| async move {
        let log = open(&dir, LogConfig::default()).await;
        log.append(batch(3, 50, 0, 1000, Compression::None))
            .await
            .unwrap();
        log.close().await.unwrap();
        drop(log);
        // The segment grew behind the marker's back (or the marker is stale).
        let seg = dir.join("00000000000000000000.log");
        let mut bytes = std::fs::read(&seg).unwrap();
        let extra = bytes.clone();
        bytes.extend_from_slice(&extra[..10]);
        std::fs::write(&seg, &bytes).unwrap();
        let log = open(&dir, LogConfig::default()).await;
        assert!(!log.opened_clean());
        assert_eq!(log.next_offset(), 3);
        assert_eq!(read_all(&log, 0).await.len(), 1);
    });
}
