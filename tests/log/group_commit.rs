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

/// A partition under the interval flush policy, syncing every 20 ms, in `env`.
async fn open_flushing_every_20ms(dir: &std::path::Path, env: LogEnv) -> std::rc::Rc<Partition> {
    let config = LogConfig {
        flush: caudal::log::FlushPolicy::Interval(std::time::Duration::from_millis(20)),
        ..LogConfig::default()
    };
    Partition::open(dir, config, env, Default::default())
        .await
        .unwrap()
}

#[test]
fn interval_policy_acknowledges_before_sync_and_syncs_periodically() {
    run(|dir| async move {
        let env = LogEnv::new(64 << 20);
        let stats = env.stats.clone();
        let log = open_flushing_every_20ms(&dir, env).await;
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

#[test]
fn the_tail_cache_is_back_within_its_budget_after_an_interval_flush() {
    run(|dir| async move {
        let env = LogEnv::new(16 << 10);
        let cache = env.cache.clone();
        let log = open_flushing_every_20ms(&dir, env).await;
        // 200 KiB appended: all of it in the writer's unwritten chunk, so none of it
        // may leave the cache yet.
        for i in 0..200 {
            log.append(batch(1, 1000, (i % 250) as u8, 1, Compression::None))
                .await
                .unwrap();
        }
        assert!(cache.used() > cache.limit(), "{} cached", cache.used());
        // No more appends: the periodic flush alone brings the cache back within budget.
        glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            cache.used() <= cache.limit(),
            "{} bytes cached after the flushes, budget {}",
            cache.used(),
            cache.limit()
        );
        // What left the cache reads back from disk.
        assert_eq!(read_all(&log, 0).await.len(), 200);
    });
}

#[test]
fn small_durable_appends_survive_the_zeros_written_ahead_of_them() {
    run(|dir| async move {
        let config = LogConfig {
            segment_bytes: 512 << 10,
            ..LogConfig::default()
        };
        let env = LogEnv::new(0);
        let stats = env.stats.clone();
        let log = Partition::open(&dir, config.clone(), env, Default::default())
            .await
            .unwrap();
        // One small batch per round: every round is small, so the writer keeps zeroing
        // the file ahead of the data; a second appender interleaves with it.
        let other = log.clone();
        let side = caudal::task::spawn(async move {
            for i in 0..300u32 {
                other
                    .append(batch(2, 300, (i % 200) as u8, 2, Compression::None))
                    .await
                    .unwrap();
            }
        });
        for i in 0..900u32 {
            log.append(batch(1, 1000, (i % 250) as u8, 1, Compression::None))
                .await
                .unwrap();
        }
        side.await;
        let end = log.next_offset();
        assert_eq!(end, 900 + 600);
        let zeros = stats
            .zero_bytes_written
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            zeros > 0,
            "small durable rounds zero the file ahead of the data"
        );
        let written = read_all(&log, 0).await;
        // No close: the reopen scans the active segment as after a crash, and zeros past
        // the data end it; every acknowledged batch is there, in order.
        drop(log);
        let log = open_uncached(&dir, config).await;
        assert!(!log.opened_clean());
        assert_eq!(log.next_offset(), end);
        assert_eq!(read_all(&log, 0).await, written);
        assert!(log.segment_count() >= 2, "the run rolled across segments");
    });
}
