//! One client connection: read frames, handle them concurrently, answer in order.
//!
//! The reader admits a frame only after checking its declared size against
//! `socket.request.max.bytes` and taking that many bytes from the shard's request budget,
//! so a shard under load stops reading sockets instead of buffering without bound.
//! Responses are written in request order, as Kafka clients require. A client that does
//! not read its responses stops being read once `RESPONSE_BUFFER` bytes of its answers
//! wait unsent, so it holds a bounded amount of memory and cannot starve other clients.
//! A whole request must arrive within `connections.max.idle.ms` of the previous one.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use crate::io::TcpStream;
use crate::task::local_channel;
use crate::task::JoinHandle;
use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use crate::dispatch::{dispatch, Outcome};
use crate::notify::Notify;
use crate::protocol::frame::{check_frame_size, FrameError};
use crate::shard::state::{Shard, ShardStats};

/// Requests one connection may have in flight before its reader waits.
const MAX_IN_FLIGHT: usize = 32;
/// Bytes of responses waiting to be written before the reader stops reading.
const RESPONSE_BUFFER: usize = 16 << 20;

/// Why reading the next frame stopped.
enum ReadStop {
    /// The peer closed or the socket failed.
    Closed,
    /// No complete request within the idle timeout.
    Idle,
    /// The broker is shutting down.
    Shutdown,
}

/// Reads exactly `buf.len()` bytes, giving up at the idle deadline or on shutdown.
async fn read_bounded<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    shard: &Shard,
    idle: Duration,
) -> Result<(), ReadStop> {
    let generation = shard.shutdown.generation();
    if shard.is_stopping() {
        return Err(ReadStop::Shutdown);
    }
    futures_lite::future::or(
        async { reader.read_exact(buf).await.map_err(|_| ReadStop::Closed) },
        futures_lite::future::or(
            async {
                crate::task::sleep(idle).await;
                Err(ReadStop::Idle)
            },
            async {
                shard.shutdown.changed_since(generation).await;
                Err(ReadStop::Shutdown)
            },
        ),
    )
    .await
}

/// Serves one connection until the client closes it, sends a bad frame, stays idle too
/// long, or the shard shuts down (in-flight requests are still answered).
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    shard.connection_opened();
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_bounded::<JoinHandle<Outcome>>(MAX_IN_FLIGHT);
    let closed = Rc::new(Cell::new(false));
    let unsent = Rc::new(Cell::new(0usize));
    let drained = Rc::new(Notify::default());
    let writer_task = {
        let (closed, unsent, drained) = (closed.clone(), unsent.clone(), drained.clone());
        crate::task::spawn(async move {
            while let Some(task) = rx.recv().await {
                match task.await {
                    Some(Outcome::Respond(segments)) => {
                        let mut ok = true;
                        let mut len = 0;
                        for s in &segments {
                            len += s.len();
                            if ok && writer.write_all(s).await.is_err() {
                                ok = false;
                            }
                        }
                        unsent.set(unsent.get().saturating_sub(len));
                        drained.notify();
                        if !ok {
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
            closed.set(true);
            drained.notify();
            let _ = writer.close().await;
        })
    };
    let max = shard.config.socket_request_max_bytes;
    let idle = shard.config.connections_max_idle;
    loop {
        // A client that does not read its answers stops being read.
        while unsent.get() > RESPONSE_BUFFER && !closed.get() {
            let g = drained.generation();
            if unsent.get() > RESPONSE_BUFFER && !closed.get() {
                drained.changed_since(g).await;
            }
        }
        if closed.get() {
            break;
        }
        let mut len = [0u8; 4];
        match read_bounded(&mut reader, &mut len, &shard, idle).await {
            Ok(()) => {}
            Err(ReadStop::Idle) => {
                debug!(?peer, "closing idle connection");
                break;
            }
            Err(_) => break,
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
        if read_bounded(&mut reader, &mut frame, &shard, idle)
            .await
            .is_err()
        {
            break;
        }
        let task_shard = shard.clone();
        let task_unsent = unsent.clone();
        ShardStats::add(&shard.stats.request_bytes_in_flight, size as u64);
        let task = crate::task::spawn(async move {
            task_shard.request_started();
            let outcome = match dispatch(&task_shard, frame.freeze(), peer).await {
                Ok(o) => o,
                Err(e) => Outcome::Close(e.to_string()),
            };
            drop(permit);
            task_shard
                .stats
                .request_bytes_in_flight
                .fetch_sub(size as u64, std::sync::atomic::Ordering::Relaxed);
            if let Outcome::Respond(segments) = &outcome {
                task_unsent
                    .set(task_unsent.get() + segments.iter().map(|b| b.len()).sum::<usize>());
            }
            task_shard.request_finished();
            outcome
        })
        .detach();
        if tx.send(task).await.is_err() {
            break;
        }
        // While the socket has data, reading and handling (which starts inline) never
        // waits: give the reactor its turn so disk and socket completions are reaped.
        crate::task::yield_if_needed().await;
    }
    drop(tx);
    writer_task.await;
    shard.connection_closed();
}

impl From<FrameError> for Outcome {
    fn from(e: FrameError) -> Outcome {
        Outcome::Close(e.to_string())
    }
}
