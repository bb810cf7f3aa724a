//! Works around glommio's I/O-poll probe.
//!
//! glommio decides, per thread and block device, whether direct I/O may use its polled
//! ring by reading the first block of the first DMA file the thread opens on that device.
//! If that file is empty the read succeeds without reaching the device, polling is
//! wrongly switched on, and every later read fails with EOPNOTSUPP. So before a thread
//! opens any segment on a device, it opens a one-block file there first.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use glommio::io::DmaFile;

thread_local! {
    static PROBED: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

/// Makes glommio's poll probe for the device holding `dir` run against real data.
/// Cheap after the first call per thread and device.
pub async fn ensure_probed(dir: &Path) -> io::Result<()> {
    let target = dir.to_path_buf();
    let dev = glommio::executor()
        .spawn_blocking(move || std::fs::metadata(target).map(|m| m.dev()))
        .await?;
    if PROBED.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let probe = dir.join(format!(".caudal-iopoll-probe-{}", std::process::id()));
    let written = probe.clone();
    // Once per device and shard, but still a blocking write: off the shard's thread.
    glommio::executor()
        .spawn_blocking(move || std::fs::write(written, [0u8; 4096]))
        .await?;
    let opened = DmaFile::open(&probe).await;
    let _ = crate::io::small_file::remove_if_exists(&probe).await;
    opened
        .map_err(io::Error::from)?
        .close()
        .await
        .map_err(io::Error::from)?;
    PROBED.with(|p| p.borrow_mut().insert(dev));
    Ok(())
}
