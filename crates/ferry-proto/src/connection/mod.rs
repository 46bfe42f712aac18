//! The connection state machine: framing, messages, control frames and the closing handshake.
//!
//! ```text
//!                send close                       receive close (echo queued)
//!   +------+ ---------------> +---------+       +------------------------------+
//!   | Open |                  | Closing | ----> |            Closed            |
//!   +------+ ------------------------------------>  (close sent and received, |
//!       |      receive close: echo it at once     |   or connection failed)    |
//!       +---------------------------------------> +------------------------------+
//!          protocol error / EOF / timeout
//! ```
//!
//! RFC 6455 §7: after sending a close frame an endpoint sends no more data; after both close
//! frames have been exchanged the server closes the TCP connection first, and the client waits
//! for that (up to a timeout) before closing its end.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::assembler::Assembler;
use crate::close::CloseFrame;
use crate::error::ProtocolError;
use crate::extension::Extension;
use crate::extension::deflate::{DeflateConfig, DeflateParams};
use crate::transmit::Transmit;

mod config;
mod events;
mod receive;
mod send;
mod timers;

pub use self::config::{Config, Keepalive};
use self::events::EventQueue;
pub use self::events::{CloseInfo, Event, Initiator, State};
use self::receive::Pending;
pub use self::send::{SendError, SendOptions};
use self::timers::KeepaliveTimers;
pub use crate::role::Role;

/// What the receive path holds back until the application has handled the messages that
/// arrived before it in the same read ([`Connection::is_stalled`]), so that its replies to them
/// go out first.
#[derive(Debug)]
enum Deferred {
    /// A violation: the connection fails with it then.
    Failure(ProtocolError),
    /// The peer's close: answered then, after those replies (RFC 6455 §5.5.1 lets the close
    /// wait for the message being sent). Without this, a peer that sends a message and its
    /// close together would find the echo refused: the connection would already be closing
    /// when the application saw the message.
    Close(CloseFrame),
}

/// One WebSocket connection after the opening handshake, as a pure state machine.
///
/// The contract, in the style of quinn-proto and Python websockets:
/// - Feed received bytes with [`receive_data`](Self::receive_data) (or read straight into
///   [`recv_buf`](Self::recv_buf) and call [`handle_received`](Self::handle_received)), and the
///   end of the stream with [`receive_eof`](Self::receive_eof).
/// - Then take [`poll_event`](Self::poll_event) until `None`, and write out
///   [`transmit`](Self::transmit), which already holds every reply this end owes (pongs, the
///   close echo). Pongs and pings go in its control lane, ahead of queued data at the next
///   frame boundary; a close goes after the data queued before it. See [`Transmit`].
/// - Call [`handle_timeout`](Self::handle_timeout) when the instant from
///   [`poll_timeout`](Self::poll_timeout) passes.
/// - When [`should_close_transport`](Self::should_close_transport) is true and the transmit
///   queue is empty, close the transport.
///
/// No input can make it panic; a peer's violation fails the connection with the close code from
/// [`ProtocolError::close_code`].
#[derive(Debug)]
pub struct Connection {
    role: Role,
    state: State,
    /// Shared: a server's connections usually have the same settings, and each keeps them for
    /// its whole life (docs/memory.md).
    config: Arc<Config>,
    recv: BytesMut,
    pending: Option<Pending>,
    assembler: Assembler,
    /// The negotiated extension, if any (permessage-deflate).
    extension: Option<Box<dyn Extension>>,
    transmit: Transmit,
    events: EventQueue,
    /// Whether this end has sent its close frame.
    close_sent: bool,
    // What only a failing or keepalive connection needs is boxed: every open connection holds
    // this struct for its whole life (in ferry, inside its task), and each 128 bytes saved is
    // a step of tokio's task cell (docs/memory.md).
    /// The error this end failed the connection with, if it did.
    error: Option<Box<ProtocolError>>,
    /// A violation, or the peer's close, found after messages that the application has not
    /// handled yet.
    deferred: Option<Box<Deferred>>,
    /// Whether the close is final enough to close the transport (see `should_close_transport`).
    transport_done: bool,
    /// The peer stopped answering: close the transport abortively (`should_abort_transport`).
    peer_unresponsive: bool,
    eof: bool,
    close_deadline: Option<Instant>,
    /// Keepalive's timers, while `config.keepalive` is set and the connection is open.
    keepalive: Option<Box<KeepaliveTimers>>,
}

impl Connection {
    /// A connection whose opening handshake has completed. `now` starts the keepalive timer.
    ///
    /// `config` is a [`Config`] or an `Arc<Config>`; a server with many connections can pass
    /// one `Arc` to all of them, so that each does not keep its own copy.
    pub fn new(role: Role, config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let config = config.into();
        let keepalive = config.keepalive.map(|k| {
            Box::new(KeepaliveTimers {
                next_ping: now + k.interval,
                pong_deadline: None,
                pings_sent: 0,
            })
        });
        Connection {
            role,
            state: State::Open,
            config,
            recv: BytesMut::new(),
            pending: None,
            assembler: Assembler::default(),
            extension: None,
            transmit: Transmit::default(),
            events: EventQueue::default(),
            close_sent: false,
            error: None,
            deferred: None,
            transport_done: false,
            peer_unresponsive: false,
            eof: false,
            close_deadline: None,
            keepalive,
        }
    }

    /// The connection an opening handshake agreed on, in one step: `deflate` is the
    /// permessage-deflate the handshake negotiated with this end's settings (its codec is
    /// installed), and `leftover` the bytes read past the handshake (the start of the frame
    /// stream), fed at once. [`Request::accept_connection`](crate::handshake::Request::accept_connection)
    /// and [`ClientHandshake::connection`](crate::handshake::ClientHandshake::connection) call
    /// it; call it directly when another HTTP stack did the handshake.
    ///
    /// ```
    /// use ferry_proto::{Config, Connection, Event, Role};
    /// use std::time::Instant;
    /// // A masked "Hi" that arrived in the same read as the request.
    /// let leftover = [0x81, 0x82, 1, 2, 3, 4, b'H' ^ 1, b'i' ^ 2];
    /// let mut conn = Connection::after_handshake(Role::Server, Config::default(), None, &leftover, Instant::now());
    /// assert!(matches!(conn.poll_event(), Some(Event::Message(m)) if m.as_text() == Some("Hi")));
    /// ```
    pub fn after_handshake(
        role: Role,
        config: impl Into<Arc<Config>>,
        deflate: Option<(DeflateParams, &DeflateConfig)>,
        leftover: &[u8],
        now: Instant,
    ) -> Self {
        let mut conn = Connection::new(role, config, now);
        // Without the `deflate` feature no handshake negotiates the extension, so there is
        // nothing to install.
        #[cfg(feature = "deflate")]
        if let Some((params, settings)) = deflate {
            conn.extension = Some(Box::new(crate::extension::deflate::PerMessageDeflate::new(
                role, params, settings,
            )));
        }
        #[cfg(not(feature = "deflate"))]
        let _ = deflate;
        if !leftover.is_empty() {
            conn.receive_data(leftover, now);
        }
        conn
    }

    /// Adds the extension negotiated in the handshake. Call before any data flows.
    pub fn with_extension(mut self, extension: Box<dyn Extension>) -> Self {
        self.extension = Some(extension);
        self
    }

    /// The negotiated extension, if any.
    pub fn extension(&self) -> Option<&dyn Extension> {
        self.extension.as_deref()
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the closing handshake stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// The settings this connection runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The protocol error this end failed the connection with, if any.
    pub fn error(&self) -> Option<&ProtocolError> {
        self.error.as_deref()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// Whether events are waiting for [`poll_event`](Self::poll_event). A driver that hands
    /// messages out one at a time can hold its writes until the batch one read produced has
    /// been answered, and so write the answers together.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Whether the transport should now be closed, once [`transmit`](Self::transmit) is empty.
    ///
    /// True after the connection failed, after the closing handshake on the server side (§7.1.1:
    /// the server closes first), and on the client side once the server closed its end or the
    /// close timeout passed.
    pub fn should_close_transport(&self) -> bool {
        self.state == State::Closed && self.transport_done
    }

    /// Whether the transport should be closed abortively (for TCP: a reset, no FIN, unsent bytes
    /// dropped) rather than flushed first: true once keepalive found the peer unresponsive. Its
    /// side is gone, nothing more will be read there, and bytes still queued in the kernel would
    /// otherwise be retransmitted until the path comes back, reaching the server after the
    /// messages of a newer connection (a reconnecting client's, say) and out of order with them.
    pub fn should_abort_transport(&self) -> bool {
        self.peer_unresponsive
    }

    /// Releases buffer memory while nothing is in flight, so an idle connection holds none.
    pub fn release_idle_buffers(&mut self) {
        self.take_idle_buffers(drop);
    }

    /// Like [`release_idle_buffers`](Self::release_idle_buffers), but hands each released I/O
    /// buffer (empty, with its capacity) to `keep`, so a driver can pool them across connections
    /// instead of allocating anew for the next message. Give one back with
    /// [`recv_buf`](Self::recv_buf) (replace the empty buffer) or
    /// [`provide_transmit_buf`](Self::provide_transmit_buf).
    pub fn take_idle_buffers(&mut self, mut keep: impl FnMut(BytesMut)) {
        if self.recv.is_empty() && self.pending.is_none() && self.recv.capacity() != 0 {
            keep(std::mem::take(&mut self.recv));
        }
        if let Some(buf) = self.transmit.take_if_empty() {
            keep(buf);
        }
        self.events.release_idle();
    }

    /// Whether the transmit queue has no buffer to encode small frames into (it lent it out
    /// through [`take_idle_buffers`](Self::take_idle_buffers), or never had one).
    pub fn wants_transmit_buf(&self) -> bool {
        self.transmit.wants_buf()
    }

    /// Gives the transmit queue an empty buffer to encode small frames into, if it has none
    /// (see [`wants_transmit_buf`](Self::wants_transmit_buf)); otherwise drops it. Saves an
    /// allocation per message when `buf` comes from a pool.
    pub fn provide_transmit_buf(&mut self, buf: BytesMut) {
        self.transmit.provide(buf);
    }
}
