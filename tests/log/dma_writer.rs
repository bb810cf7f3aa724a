//! The segment writer's buffers: an idle writer holds one block, not a whole chunk, and
//! the bytes written across syncs of every size read back as they were buffered.

use std::rc::Rc;
use std::sync::Arc;

use caudal::io::dma_writer::{DmaWriter, IoStats, WriterOptions, BLOCK};
use glommio::io::DmaFile;

use super::*;

#[test]
fn an_idle_writer_holds_one_block_and_every_byte_reads_back() {
    run(|dir| async move {
        let path = dir.join("segment");
        let file = Rc::new(DmaFile::create(&path).await.unwrap());
        let opts = WriterOptions::default();
        let chunk = opts.chunk_bytes;
        let w = DmaWriter::open(file.clone(), 0, opts, Arc::new(IoStats::default()))
            .await
            .unwrap();
        assert_eq!(
            w.held_bytes(),
            BLOCK as usize,
            "a new writer holds one block"
        );
        let mut expected = Vec::new();
        // Small syncs, one that ends on a block boundary, one that fills several chunks,
        // and small ones again after it.
        for (round, len) in [100usize, 5000, 8192 - 5100, 3 * chunk + 777, 1, 40_000]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + round) as u8).collect();
            let end = w.buffer(&data).unwrap();
            expected.extend_from_slice(&data);
            assert_eq!(end, expected.len() as u64);
            w.sync().await.unwrap();
            assert_eq!(w.durable_len(), expected.len() as u64);
            assert!(
                w.held_bytes() <= BLOCK as usize,
                "after sync {round} the writer holds {} bytes",
                w.held_bytes()
            );
        }
        let len = w.finish().await.unwrap();
        assert_eq!(len, expected.len() as u64);
        let reader = DmaFile::open(&path).await.unwrap();
        let read = reader.read_at(0, expected.len()).await.unwrap();
        assert!(read[..] == expected[..], "the file reads back as buffered");
    });
}

/// Disk allocated to `path`, in bytes (not its apparent length).
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn a_shards_writers_together_reserve_no_more_disk_ahead_than_the_shards_bound() {
    run(|dir| async move {
        const MIB: u64 = 1 << 20;
        let opts = WriterOptions {
            preallocate_bytes: 8 * MIB,
            shard_reserve_bytes: MIB,
            ..WriterOptions::default()
        };
        let stats = Arc::new(IoStats::default());
        let mut writers = Vec::new();
        for i in 0..20 {
            let path = dir.join(format!("segment-{i}"));
            let file = Rc::new(DmaFile::create(&path).await.unwrap());
            let w = DmaWriter::open(file, 0, opts, stats.clone()).await.unwrap();
            writers.push((path, w));
        }
        // Every file takes 600 KiB in three rounds: alone, each would reserve 256 KiB
        // to 8 MiB ahead of its data.
        let data = vec![7u8; 200 << 10];
        for _ in 0..3 {
            for (_, w) in &writers {
                w.buffer(&data).unwrap();
                w.sync().await.unwrap();
            }
        }
        let written = 20 * 3 * data.len() as u64;
        let reserved = stats
            .reserved_ahead
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            reserved <= MIB,
            "{reserved} bytes reserved ahead, bound {MIB}"
        );
        let on_disk: u64 = writers.iter().map(|(p, _)| allocated(p)).sum();
        assert!(
            on_disk <= written + MIB + 20 * BLOCK,
            "{on_disk} bytes allocated for {written} written"
        );
        // A writer dropped unfinished (its log failed) gives its share back, and
        // finished ones cut their files to their data.
        let (_, dropped) = writers.pop().unwrap();
        drop(dropped);
        for (_, w) in &writers {
            w.finish().await.unwrap();
        }
        assert_eq!(
            stats
                .reserved_ahead
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    });
}
