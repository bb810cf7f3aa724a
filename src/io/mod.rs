//! Disk I/O on a shard: the direct-I/O segment writer and small-file helpers. glommio's
//! file types are used here and in `log/`, nowhere else.

pub mod device_probe;
pub mod dma_writer;
pub mod small_file;
