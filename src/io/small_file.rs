//! Whole-file reads and durable whole-file writes for small files (indexes, snapshots).
//!
//! These go through glommio's DMA files like the segments, so nothing on a shard blocks
//! its executor on the page cache.

use std::io;
use std::path::Path;

use glommio::io::{DmaFile, OpenOptions};

use super::dma_writer::align_up;

/// Writes `data` to `path` (replacing it), truncates it to the exact length and syncs it.
/// The write goes to `path.tmp` first and is renamed over `path`, so a crash leaves
/// either the old file or the new one.
pub async fn write_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(match path.extension() {
        Some(e) => format!("{}.tmp", e.to_string_lossy()),
        None => "tmp".to_string(),
    });
    // A fresh inode each time: an earlier write to `path.tmp` whose future was dropped
    // (a cancelled save) may still be in the kernel, and must land in the file it was
    // aimed at, not in this one.
    remove_if_exists(&tmp).await?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&tmp)
        .await
        .map_err(io::Error::from)?;
    if !data.is_empty() {
        let padded = align_up(data.len() as u64) as usize;
        let mut buf = file.alloc_dma_buffer(padded);
        let bytes = buf.as_bytes_mut();
        bytes[..data.len()].copy_from_slice(data);
        bytes[data.len()..].fill(0);
        file.write_at(buf, 0).await.map_err(io::Error::from)?;
    }
    file.truncate(data.len() as u64)
        .await
        .map_err(io::Error::from)?;
    file.fdatasync().await.map_err(io::Error::from)?;
    file.close().await.map_err(io::Error::from)?;
    glommio::io::rename(&tmp, path)
        .await
        .map_err(io::Error::from)?;
    Ok(())
}

/// Reads a whole file. `Ok(None)` when it does not exist.
pub async fn read_all(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match DmaFile::open(path).await {
        Ok(f) => f,
        Err(e) => {
            let e = io::Error::from(e);
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(None);
            }
            return Err(e);
        }
    };
    let size = file.file_size().await.map_err(io::Error::from)?;
    let data = if size == 0 {
        Vec::new()
    } else {
        file.read_at(0, size as usize)
            .await
            .map_err(io::Error::from)?
            .to_vec()
    };
    file.close().await.map_err(io::Error::from)?;
    Ok(Some(data))
}

/// Syncs a directory so that files created, renamed or removed in it survive a crash.
/// Through io_uring: a blocking fsync here would stall every partition and connection
/// of the shard for as long as the disk takes (1-5 ms on the project VM).
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    // glommio opens directories relative to no descriptor: a relative path fails (EBADF).
    let dir = std::path::absolute(dir)?;
    let d = glommio::io::Directory::open(&dir)
        .await
        .map_err(io::Error::from)?;
    d.sync().await.map_err(io::Error::from)?;
    d.close().await.map_err(io::Error::from)
}

/// `sync_dir` for code that runs outside an executor (the metadata store at start-up).
pub fn sync_dir_blocking(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes a file without blocking the executor; a file already gone is not an error.
pub async fn remove_if_exists(path: &Path) -> io::Result<()> {
    match glommio::io::remove(path).await.map_err(io::Error::from) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
