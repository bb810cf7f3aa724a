use caudal::log::{LogConfig, LogEnv};
use caudal::protocol::record_batch::Compression;
use caudal::replica::Partition;

use super::*;

#[test]
fn concurrent_appenders_share_fdatasyncs() {
    run(|dir| async move {
        let env = LogEnv::new(64 << 20);
        let stats = env.stats.clone();
        let log = Partition::open(&dir, LogConfig::default(), env, Default::default())
            .await
            .unwrap();
        const APPENDERS: usize = 32;
        const EACH: usize = 50;
        let before = stats.fsync_count();
        let mut tasks = Vec::new();
        for a in 0..APPENDERS {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut offsets = Vec::new();
                for i in 0..EACH {
                    let r = log
                        .append(batch(4, 100, (a + i) as u8, 1, Compression::None))
                        .await
                        .unwrap();
                    // Durable means durable: the high watermark already covers it.
                    assert!(log.high_watermark() > r.last_offset);
                    offsets.push(r.base_offset);
                }
                offsets
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await);
        }
        let appends = (APPENDERS * EACH) as u64;
        let syncs = stats.fsync_count() - before;
        println!("{appends} appends, {syncs} fdatasyncs");
        assert!(
            syncs * 4 < appends,
            "{syncs} fdatasyncs for {appends} appends"
        );
        all.sort_unstable();
        let expected: Vec<i64> = (0..appends as i64).map(|i| i * 4).collect();
        assert_eq!(all, expected);
        // Everything survives a reopen without close (as after a crash).
        drop(log);
        let log = open_uncached(&dir, LogConfig::default()).await;
        assert_eq!(log.next_offset(), appends as i64 * 4);
        assert_eq!(read_all(&log, 0).await.len(), appends as usize);
    });
}

#[test]
fn interval_policy_acknowledges_before_sync_and_syncs_periodically() {
    run(|dir| async move {
        let env = LogEnv::new(64 << 20);
        let stats = env.stats.clone();
        let config = LogConfig {
            flush: caudal::log::FlushPolicy::Interval(std::time::Duration::from_millis(20)),
            ..LogConfig::default()
        };
        let log = Partition::open(&dir, config, env, Default::default())
            .await
            .unwrap();
        for i in 0..100 {
            log.append(batch(1, 100, i, 1, Compression::None))
                .await
                .unwrap();
        }
        assert_eq!(stats.fsync_count(), 0);
        assert_eq!(log.high_watermark(), 100);
        glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
        assert!(stats.fsync_count() >= 1);
        drop(log);
        let log = open_uncached(&dir, LogConfig::default()).await;
        assert_eq!(log.next_offset(), 100);
    });
}
