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
mod pool;
mod receiver;
mod sender;
mod shared;

use std::sync::Arc;

use bytes::Bytes;
use ferry_proto::extension::deflate::{DeflateConfig, DeflateParams, PerMessageDeflate};
use ferry_proto::{Config as ProtoConfig, Connection, Role};
use tokio::io::{AsyncRead, AsyncWrite};

pub use receiver::{Incoming, Receiver};
pub use sender::{Overflow, Sender};

/// Encoded bytes the driver keeps ready to write before it pulls more messages from the queue.
pub(crate) const WRITE_HIGH_WATER: usize = 64 * 1024;

/// Starts the driver task for a transport whose handshake is done, and returns the handles.
///
/// `deflate` is the negotiated permessage-deflate, with this end's settings. `leftover` holds
/// bytes read past the end of the handshake: the start of the frame stream.
pub(crate) fn start<S>(
    io: S,
    role: Role,
    config: ProtoConfig,
    deflate: Option<(DeflateParams, &DeflateConfig)>,
    leftover: Bytes,
) -> (Sender, Receiver)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = config.limits.clone();
    let mut conn = Connection::new(role, config, tokio::time::Instant::now().into_std());
    if let Some((params, settings)) = deflate {
        conn = conn.with_extension(Box::new(PerMessageDeflate::new(role, params, settings)));
    }
    let shared = Arc::new(shared::Shared::new(
        &limits,
        deflate.map(|(params, _)| params),
        conn.frame_encoding(),
    ));
    if !leftover.is_empty() {
        conn.receive_data(&leftover, tokio::time::Instant::now().into_std());
    }
    let driver = driver::Driver::new(io, conn, shared.clone());
    tokio::spawn(driver);
    (Sender::new(shared.clone()), Receiver::new(shared))
}
