//! One client connection: read frames, handle them concurrently, answer in order.
//!
//! The reader admits a frame only after checking its declared size against
//! `socket.request.max.bytes` and taking that many bytes from the shard's request budget,
//! so a shard under load stops reading sockets instead of buffering without bound.
//! Responses are written in request order, as Kafka clients require.

use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use tracing::debug;

use crate::protocol::api::{dispatch, Outcome};
use crate::protocol::frame::{check_frame_size, FrameError};
use crate::shard::state::Shard;

/// Requests one connection may have in flight before its reader waits.
const MAX_IN_FLIGHT: usize = 128;

/// Serves one connection until the client closes it or sends a bad frame.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_bounded::<JoinHandle<Outcome>>(MAX_IN_FLIGHT);
    let closed = Rc::new(std::cell::Cell::new(false));
    let writer_closed = closed.clone();
    let writer_task = glommio::spawn_local(async move {
        while let Some(task) = rx.recv().await {
            match task.await {
                Some(Outcome::Respond(bytes)) => {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Some(Outcome::NoResponse) => {}
                Some(Outcome::Close(reason)) => {
                    debug!(?peer, %reason, "closing connection");
                    break;
                }
                None => break,
            }
        }
        writer_closed.set(true);
        let _ = writer.close().await;
    });
    let max = shard.config.socket_request_max_bytes;
    loop {
        if closed.get() {
            break;
        }
        let mut len = [0u8; 4];
        if reader.read_exact(&mut len).await.is_err() {
            break;
        }
        let size = match check_frame_size(i32::from_be_bytes(len), max) {
            Ok(s) => s,
            Err(e) => {
                debug!(?peer, error = %e, "refusing frame");
                break;
            }
        };
        let budget = shard.request_budget.clone();
        let Ok(permit) = budget.acquire_static_permit(size as u64).await else {
            break;
        };
        let mut frame = BytesMut::zeroed(size);
        if reader.read_exact(&mut frame).await.is_err() {
            break;
        }
        let shard = shard.clone();
        let task = glommio::spawn_local(async move {
            let outcome = match dispatch(&shard, frame.freeze(), peer).await {
                Ok(o) => o,
                Err(e) => Outcome::Close(e.to_string()),
            };
            drop(permit);
            outcome
        })
        .detach();
        if tx.send(task).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer_task.await;
}

impl From<FrameError> for Outcome {
    fn from(e: FrameError) -> Outcome {
        Outcome::Close(e.to_string())
    }
}
