//! I/O on a shard: the direct-I/O segment writer, small-file helpers, and the file and
//! socket types of the runtime (glommio's), named here so that nothing above this layer
//! imports glommio; tasks, timers and channels come from `crate::task`.

pub mod device_probe;
pub mod dma_writer;
pub mod small_file;

pub use glommio::io::{DmaFile, OpenOptions};
pub use glommio::net::{TcpListener, TcpStream};
