//! The shard's listening socket.

use std::net::SocketAddr;
use std::os::unix::io::{FromRawFd, IntoRawFd};

use crate::io::TcpListener;

/// Pending connections the kernel queues per shard before `accept` catches up.
const BACKLOG: i32 = 1024;

/// Binds `addr` the way a restartable server should, then hands it to glommio.
///
/// glommio's own `TcpListener::bind` sets `SO_REUSEPORT`, which lets a second process
/// (or a second broker in the same process) bind the same port and silently take half
/// of its connections. A broker's port must be its own, so this binds with
/// `SO_REUSEADDR` only: a restart still binds while the last run's connections sit in
/// TIME_WAIT, and a port held by anyone else fails with "address in use".
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that we own; ownership
    // passes to the glommio listener, which closes it.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}
