//! Producer ids for InitProducerId, unique across shards, nodes and restarts.
//!
//! A shard hands out ids `counter << 20 | node_id << 10 | shard` and reserves counters
//! in blocks: before using a block it durably records the block's end in
//! `<data>/meta/producer-ids-<shard>` (8 bytes, big-endian, plus a CRC32C), so a restart
//! resumes after the last reserved block and never repeats an id.

use std::cell::Cell;
use std::io;
use std::path::PathBuf;

use crate::task::Semaphore;

use crate::io::small_file;

const BLOCK: u64 = 1000;

/// The producer-id allocator of one shard.
pub struct ProducerIds {
    path: PathBuf,
    node_id: i64,
    shard: i64,
    next: Cell<u64>,
    reserved_end: Cell<u64>,
    lock: Semaphore,
}

impl ProducerIds {
    /// Loads the allocator state of `shard` from `meta_dir`.
    pub async fn open(meta_dir: PathBuf, node_id: i32, shard: usize) -> io::Result<ProducerIds> {
        let path = meta_dir.join(format!("producer-ids-{shard}"));
        let end = match small_file::read_all(&path).await? {
            Some(b) if b.len() == 12 && crc32c::crc32c(&b[..8]).to_be_bytes() == b[8..12] => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[..8]);
                u64::from_be_bytes(n)
            }
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is damaged; refusing to risk reusing producer ids",
                        path.display()
                    ),
                ))
            }
            None => 0,
        };
        Ok(ProducerIds {
            path,
            node_id: i64::from(node_id),
            shard: shard as i64,
            next: Cell::new(end),
            reserved_end: Cell::new(end),
            lock: Semaphore::new(1),
        })
    }

    /// A fresh producer id.
    pub async fn allocate(&self) -> io::Result<i64> {
        let _permit = self.lock.acquire_permit(1).await.map_err(io::Error::from)?;
        if self.next.get() >= self.reserved_end.get() {
            let end = self.next.get() + BLOCK;
            let mut b = end.to_be_bytes().to_vec();
            b.extend_from_slice(&crc32c::crc32c(&b).to_be_bytes());
            small_file::write_durably(&self.path, &b).await?;
            self.reserved_end.set(end);
        }
        let counter = self.next.get();
        self.next.set(counter + 1);
        Ok(((counter as i64) << 20) | (self.node_id << 10) | self.shard)
    }
}
