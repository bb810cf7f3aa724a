//! Producer ids for InitProducerId, unique across shards, nodes and restarts.
//!
//! A shard hands out ids `counter << 20 | node_id << 10 | shard` and reserves counters
//! in blocks: before using a block it durably records the block's end in
//! `<data>/meta/producer-ids-<shard>`, so a restart resumes after the last reserved
//! block and never repeats an id.
//!
//! Format, version 2: a file of [`crate::codec`] (magic `CDPI`, version u16, one checked
//! payload) whose payload is the block end, u64 big-endian. Version 1 (releases up to
//! 617d542) is the block end and its CRC32C, 12 bytes with no header; opening one
//! rewrites it as version 2.

use std::cell::Cell;
use std::io;
use std::path::PathBuf;

use crate::task::Semaphore;

use crate::codec::{self, magic, CodecError, FileHeader, Reader};
use crate::io::small_file;

const BLOCK: u64 = 1000;
/// The version this build writes.
pub const VERSION: u16 = 2;
/// Length of a version 1 file: the block end and its CRC32C.
const V1_LEN: usize = 12;

/// The file holding `end`, in the current version.
pub fn encode_block_end(end: u64) -> Vec<u8> {
    codec::encode_checked_file(
        FileHeader::new(magic::PRODUCER_IDS, VERSION),
        &end.to_be_bytes(),
    )
}

/// The block end a file of either version holds, and the version it was in.
pub fn decode_block_end(data: &[u8]) -> Result<(u64, u16), CodecError> {
    if FileHeader::has_magic(data, magic::PRODUCER_IDS) {
        let (version, payload) =
            codec::decode_checked_file(data, magic::PRODUCER_IDS, VERSION..=VERSION)?;
        let mut r = Reader::new(payload);
        let end = r.take_u64()?;
        r.finish()?;
        return Ok((end, version));
    }
    if data.len() != V1_LEN {
        return Err(CodecError::Invalid("producer-ids file length"));
    }
    let mut r = Reader::new(data);
    let end = r.take_u64()?;
    if crc32c::crc32c(&data[..8]) != r.take_u32()? {
        return Err(CodecError::Checksum { at: 0 });
    }
    Ok((end, 1))
}

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
    /// Loads the allocator state of `shard` from `meta_dir`, upgrading a version 1 file.
    pub async fn open(meta_dir: PathBuf, node_id: i32, shard: usize) -> io::Result<ProducerIds> {
        let path = meta_dir.join(format!("producer-ids-{shard}"));
        let end = match small_file::read_all(&path).await? {
            Some(b) => {
                let (end, version) = decode_block_end(&b).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: {e}; refusing to risk reusing producer ids",
                            path.display()
                        ),
                    )
                })?;
                if version < VERSION {
                    small_file::write_durably(&path, &encode_block_end(end)).await?;
                    small_file::sync_dir(&meta_dir).await?;
                }
                end
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
            small_file::write_durably(&self.path, &encode_block_end(end)).await?;
            // The rename must survive a crash too: the old file would hand out the
            // block's ids again.
            if let Some(dir) = self.path.parent() {
                small_file::sync_dir(dir).await?;
            }
            self.reserved_end.set(end);
        }
        let counter = self.next.get();
        self.next.set(counter + 1);
        Ok(((counter as i64) << 20) | (self.node_id << 10) | self.shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_versions_and_refuses_damage() {
        let v2 = encode_block_end(3000);
        assert!(v2.starts_with(b"CDPI\x00\x02"));
        assert_eq!(decode_block_end(&v2), Ok((3000, 2)));
        let mut v1 = 1000u64.to_be_bytes().to_vec();
        v1.extend_from_slice(&crc32c::crc32c(&v1).to_be_bytes());
        assert_eq!(decode_block_end(&v1), Ok((1000, 1)));
        for bad in [&v1[..11], &v2[..v2.len() - 1], &[][..]] {
            assert!(decode_block_end(bad).is_err());
        }
        let mut flipped = v1.clone();
        flipped[3] ^= 1;
        assert!(decode_block_end(&flipped).is_err());
    }
}
