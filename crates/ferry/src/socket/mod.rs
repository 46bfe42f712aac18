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
//! allocation per connection beyond those queues' items, and no lock contended per message.
//! The driver pulls queued messages only while less than [`WRITE_HIGH_WATER`] bytes wait to be
//! written, so the replies the protocol owes (pongs, the close echo) are never stuck behind
//! the application's backlog.
//!
//! The single-task [`WebSocket`] is the same connection without the driver and the queues.
//! Both run one engine: `transport.rs` moves bytes between the transport and the protocol,
//! and `engine.rs` holds what every owner does alike (a round of work, how a close starts, the
//! send budget, the endings without a close frame). `driver.rs` and `websocket.rs` add only
//! where messages come from and go to.

mod command;
mod driver;
mod engine;
mod incoming;
pub(crate) mod pool;
mod receiver;
mod sender;
mod shared;
mod sink;
mod transport;
mod websocket;

use std::sync::Arc;

use ferry_proto::extension::deflate::DeflateParams;
use ferry_proto::{CloseInfo, Connection};
use tokio::io::{AsyncRead, AsyncWrite};

pub use driver::Drive;
pub use incoming::Incoming;
pub use receiver::Receiver;
pub use sender::{Overflow, Sender};
pub use sink::MessageSink;
pub use websocket::{SendMessage, WebSocket};

/// Encoded bytes the driver keeps ready to write before it pulls more messages from the queue.
pub(crate) const WRITE_HIGH_WATER: usize = 64 * 1024;

/// The moment a connection built now starts from, on tokio's clock (so paused test time
/// holds for its timers too).
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Starts the driver task for a connection whose handshake is done, and returns the handles.
/// `deflate`: the negotiated parameters, which the handles report.
pub(crate) fn start<S>(
    io: S,
    conn: Connection,
    deflate: Option<DeflateParams>,
) -> (Sender, Receiver)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    spawn(transport::Transport::new(io, conn), deflate)
}

/// A single-task connection for a transport whose handshake is done.
pub(crate) fn websocket<S>(io: S, conn: Connection, deflate: Option<DeflateParams>) -> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    WebSocket::new(transport::Transport::new(io, conn), deflate)
}

/// Spawns the driver task for `transport`, and returns the handles.
fn spawn<S>(
    transport: transport::Transport<S>,
    deflate: Option<DeflateParams>,
) -> (Sender, Receiver)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, receiver, driver) = handles(transport, deflate);
    tokio::spawn(driver);
    (sender, receiver)
}

/// The handles for `transport`, and the driver that serves them, not yet polled.
fn handles<S>(
    transport: transport::Transport<S>,
    deflate: Option<DeflateParams>,
) -> (Sender, Receiver, driver::Driver<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = &transport.conn;
    let shared = Arc::new(shared::Shared::new(
        &conn.config().limits,
        deflate,
        conn.frame_encoding(),
    ));
    let driver = driver::Driver::new(transport, shared.clone());
    (Sender::new(shared.clone()), Receiver::new(shared), driver)
}

/// Handles of a connection that has already ended: the receiver yields `messages` that were
/// received and not yet taken, then `closed`, then `None`; every send fails.
fn closed_handles(
    messages: impl IntoIterator<Item = ferry_proto::Message>,
    closed: CloseInfo,
) -> (Sender, Receiver) {
    let shared = Arc::new(shared::Shared::new(
        &ferry_proto::Limits::default(),
        None,
        None,
    ));
    for message in messages {
        // Counted as the connection task counts what it hands over; the receiver uncounts it.
        shared
            .received
            .fetch_add(message.len(), std::sync::atomic::Ordering::AcqRel);
        let _ = shared.push_incoming(Incoming::Message(message));
    }
    let _ = shared.push_incoming(Incoming::Closed(closed.clone()));
    shared.set_closed(closed);
    shared
        .driver_gone
        .store(true, std::sync::atomic::Ordering::Release);
    (Sender::new(shared.clone()), Receiver::new(shared))
}
