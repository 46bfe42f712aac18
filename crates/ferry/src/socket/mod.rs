//! One WebSocket connection in tokio: a driver task that owns the transport and the protocol
//! state machine, and the [`Sender`] and [`Receiver`] handles the application holds.
//!
//! ```text
//!   Sender (Clone) --commands--> +--------------------+ --bytes--> transport
//!                                | driver task        |
//!   Receiver <----messages------ | ferry_proto::Conn  | <--bytes-- transport
//!                                +--------------------+
//! ```
//!
//! The handles share counters, wakers and two queues with the driver (`shared.rs`): no
//! allocation per connection beyond those queues' items, and no lock contended per message. The driver pulls queued messages only while less
//! than [`WRITE_HIGH_WATER`] bytes wait to be written, so the replies the protocol owes (pongs,
//! the close echo) are never stuck behind the application's backlog.

mod driver;
pub(crate) mod pool;
mod receiver;
mod sender;
mod shared;
mod transport;
mod websocket;

use std::sync::Arc;

use bytes::Bytes;
use ferry_proto::extension::deflate::{DeflateConfig, DeflateParams, PerMessageDeflate};
use ferry_proto::{CloseInfo, Config as ProtoConfig, Connection, Role};
use tokio::io::{AsyncRead, AsyncWrite};

pub use receiver::{Incoming, Receiver};
pub use sender::{Overflow, Sender};
pub use websocket::{SendMessage, WebSocket};

/// Encoded bytes the driver keeps ready to write before it pulls more messages from the queue.
pub(crate) const WRITE_HIGH_WATER: usize = 64 * 1024;

/// Builds the protocol state machine for a transport whose handshake is done.
///
/// `deflate` is the negotiated permessage-deflate, with this end's settings. `leftover` holds
/// bytes read past the end of the handshake: the start of the frame stream.
pub(crate) fn connection(
    role: Role,
    config: Arc<ProtoConfig>,
    deflate: Option<(DeflateParams, &DeflateConfig)>,
    leftover: &[u8],
) -> Connection {
    let mut conn = Connection::new(role, config, tokio::time::Instant::now().into_std());
    if let Some((params, settings)) = deflate {
        conn = conn.with_extension(Box::new(PerMessageDeflate::new(role, params, settings)));
    }
    if !leftover.is_empty() {
        conn.receive_data(leftover, tokio::time::Instant::now().into_std());
    }
    conn
}

/// Starts the driver task for a transport whose handshake is done, and returns the handles.
pub(crate) fn start<S>(
    io: S,
    role: Role,
    config: Arc<ProtoConfig>,
    deflate: Option<(DeflateParams, &DeflateConfig)>,
    leftover: Bytes,
) -> (Sender, Receiver)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let params = deflate.map(|(params, _)| params);
    let conn = connection(role, config, deflate, &leftover);
    spawn(transport::Transport::new(io, conn), params)
}

/// A single-task connection for a transport whose handshake is done.
pub(crate) fn websocket<S>(
    io: S,
    role: Role,
    config: Arc<ProtoConfig>,
    deflate: Option<(DeflateParams, &DeflateConfig)>,
    leftover: &[u8],
) -> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let params = deflate.map(|(params, _)| params);
    let conn = connection(role, config, deflate, leftover);
    WebSocket::new(transport::Transport::new(io, conn), params)
}

/// Spawns the driver task for `transport`, and returns the handles.
fn spawn<S>(
    transport: transport::Transport<S>,
    deflate: Option<DeflateParams>,
) -> (Sender, Receiver)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = &transport.conn;
    let shared = Arc::new(shared::Shared::new(
        &conn.config().limits,
        deflate,
        conn.frame_encoding(),
    ));
    tokio::spawn(driver::Driver::new(transport, shared.clone()));
    (Sender::new(shared.clone()), Receiver::new(shared))
}

/// Handles of a connection that has already ended: the receiver yields `closed`, then `None`;
/// every send fails.
fn closed_handles(closed: CloseInfo) -> (Sender, Receiver) {
    let shared = Arc::new(shared::Shared::new(
        &ferry_proto::Limits::default(),
        None,
        None,
    ));
    let _ = shared.push_incoming(Incoming::Closed(closed.clone()));
    shared.set_closed(closed);
    shared
        .driver_gone
        .store(true, std::sync::atomic::Ordering::Release);
    (Sender::new(shared.clone()), Receiver::new(shared))
}
