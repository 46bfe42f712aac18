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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::assembler::Assembler;
use crate::close::{CloseCode, CloseFrame, truncate_reason};
use crate::error::ProtocolError;
use crate::extension::Extension;
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
use crate::limits::Limits;
use crate::mask::apply_mask;
use crate::message::{Message, Utf8Bytes};
use crate::prepared::{FrameEncoding, PreparedFrame};
use crate::transmit::Transmit;

/// Events in order. The first waits inline: a read usually completes one message, so the
/// common case allocates nothing, and an idle connection holds no event slots (a `VecDeque`
/// alone would keep its slots, about 200 bytes, or allocate for every message).
#[derive(Debug, Default)]
struct EventQueue {
    head: Option<Event>,
    /// Events after `head`; used only when one read completes several (pipelined messages).
    rest: VecDeque<Event>,
}

impl EventQueue {
    fn push(&mut self, event: Event) {
        if self.head.is_none() && self.rest.is_empty() {
            self.head = Some(event);
        } else {
            self.rest.push_back(event);
        }
    }

    fn pop(&mut self) -> Option<Event> {
        self.head.take().or_else(|| self.rest.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.head.is_none() && self.rest.is_empty()
    }

    fn last(&self) -> Option<&Event> {
        self.rest.back().or(self.head.as_ref())
    }

    /// Frees the overflow's slots once it is empty.
    fn release_idle(&mut self) {
        if self.rest.is_empty() && self.rest.capacity() != 0 {
            self.rest = VecDeque::new();
        }
    }
}

/// Which end of the connection this is. It decides masking (§5.1) and who closes TCP (§7.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that sent the opening handshake request. Masks every frame it sends.
    Client,
    /// The end that accepted it. Sends unmasked frames and closes the TCP connection first.
    Server,
}

/// Where the closing handshake stands (RFC 6455 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// This end sent a close frame and waits for the peer's. Received messages are still
    /// delivered; nothing more is sent.
    Closing,
    /// Both close frames were exchanged, or the connection failed. Nothing more is received or
    /// sent, except what is already in [`Connection::transmit`].
    Closed,
}

/// Who started the closing of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// This end: the application closed, or this end failed the connection.
    Local,
    /// The peer: it sent a close frame first, or the transport ended.
    Remote,
}

/// How a connection ended; the last event of every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseInfo {
    /// The code: the one in the peer's close frame after a clean closing handshake;
    /// [`CloseCode::NO_STATUS`] if that frame had none; the code this end sent when it failed
    /// the connection; [`CloseCode::ABNORMAL`] when the transport ended without a close frame.
    pub code: CloseCode,
    /// The reason that went with the code (may be empty).
    pub reason: Utf8Bytes,
    /// Who started closing.
    pub initiator: Initiator,
    /// Whether both close frames were exchanged.
    pub clean: bool,
}

/// What a connection reports, in order, from [`Connection::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole message.
    Message(Message),
    /// A ping arrived; the pong has already been queued.
    Ping(Bytes),
    /// A pong arrived.
    Pong(Bytes),
    /// The connection is closed; always the last event.
    Closed(CloseInfo),
}

/// Keepalive: ping the peer every `interval`, and fail the connection with 1011 if no pong
/// arrives within `timeout` of a ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Time between pings.
    pub interval: Duration,
    /// Time allowed for the pong.
    pub timeout: Duration,
}

/// Connection settings after the handshake.
///
/// ```
/// use ferry_proto::{Config, Keepalive, Limits};
/// use std::time::Duration;
/// let config = Config {
///     keepalive: Some(Keepalive { interval: Duration::from_secs(20), timeout: Duration::from_secs(20) }),
///     ..Config::default()
/// };
/// assert_eq!(config.limits, Limits::default());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Resource limits.
    pub limits: Limits,
    /// Split outgoing messages longer than this into frames of at most this many bytes, so
    /// control frames can interleave. `None` (the default) sends each message as one frame.
    pub fragment_size: Option<usize>,
    /// Periodic pings; off by default.
    pub keepalive: Option<Keepalive>,
    /// A fixed masking key instead of a fresh random one per frame. For tests and fuzzing only:
    /// predictable masks defeat their purpose (RFC 6455 §10.3).
    #[doc(hidden)]
    pub fixed_mask: Option<[u8; 4]>,
}

/// Why a send was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was sent or received: no more data may be sent (RFC 6455 §5.5.1).
    Closed,
    /// A ping or pong payload over 125 bytes (§5.5).
    ControlPayloadTooLong(usize),
    /// A close code that may not be sent (§7.4): 1005, 1006, 1015 and those outside the
    /// defined ranges.
    InvalidCloseCode(u16),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Closed => f.write_str("the connection is closing or closed"),
            SendError::ControlPayloadTooLong(n) => {
                write!(f, "control payload of {n} bytes (max 125)")
            }
            SendError::InvalidCloseCode(c) => write!(f, "close code {c} may not be sent"),
        }
    }
}

impl std::error::Error for SendError {}

/// The wire-size limit for a frame or message of a compressed message. Compressing data that
/// does not compress makes it slightly bigger (peers compress everything: 16 MiB of random
/// bytes from Python `websockets` is 0.25% bigger on the wire), so a message within
/// `max_message_size` must not be refused for its compressed size. The decompressed size is
/// held to the limit itself, as it is produced.
pub(crate) fn encoded_limit(limit: usize) -> usize {
    limit.saturating_add(limit / 16).saturating_add(1024)
}

/// Per-message send options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Split into frames of at most this many payload bytes; `None` uses
    /// `Config::fragment_size`.
    pub fragment_size: Option<usize>,
    /// Send uncompressed even when compression is negotiated (for payloads known not to
    /// compress, or that must not share a compression context with others).
    pub uncompressed: bool,
}

/// A frame whose header has been parsed and whose payload is still arriving.
#[derive(Clone, Copy, Debug)]
struct Pending {
    header: FrameHeader,
    /// Payload length, already checked against the frame size limit.
    len: usize,
    /// Payload bytes already unmasked (and, for text, validated) in place.
    done: usize,
}

/// One WebSocket connection after the opening handshake, as a pure state machine.
///
/// The contract, in the style of quinn-proto and Python websockets:
/// - Feed received bytes with [`receive_data`](Self::receive_data) (or read straight into
///   [`recv_buf`](Self::recv_buf) and call [`handle_received`](Self::handle_received)), and the
///   end of the stream with [`receive_eof`](Self::receive_eof).
/// - Then take [`poll_event`](Self::poll_event) until `None`, and write out
///   [`transmit`](Self::transmit), which already holds every reply this end owes (pongs, the
///   close echo) ahead of nothing it has not been asked to send.
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
    /// A violation found after messages that the application has not handled yet.
    deferred: Option<Box<ProtocolError>>,
    /// Whether the close is final enough to close the transport (see `should_close_transport`).
    transport_done: bool,
    eof: bool,
    close_deadline: Option<Instant>,
    /// Keepalive's timers, while `config.keepalive` is set and the connection is open.
    keepalive: Option<Box<KeepaliveTimers>>,
}

/// The state of keepalive pings (see [`Keepalive`]).
#[derive(Debug)]
struct KeepaliveTimers {
    /// When the next ping goes out.
    next_ping: Instant,
    /// When the connection fails unless a pong (any pong, §5.5.3) has come.
    pong_deadline: Option<Instant>,
    /// Pings sent so far: each ping's payload, so the peer's pongs can be told apart.
    pings_sent: u64,
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
            eof: false,
            close_deadline: None,
            keepalive,
        }
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

    // ---------------------------------------------------------------------------------------
    // Input

    /// Feeds bytes received from the peer, then processes them.
    pub fn receive_data(&mut self, data: &[u8], now: Instant) {
        if self.state != State::Closed {
            self.recv.extend_from_slice(data);
        }
        self.handle_received(now);
    }

    /// The receive buffer, for reading from the transport straight into it without a copy.
    /// Call [`handle_received`](Self::handle_received) after adding bytes.
    pub fn recv_buf(&mut self) -> &mut BytesMut {
        &mut self.recv
    }

    /// How many more bytes the frame being received needs, when that is known (its header has
    /// arrived). Lets a driver size its next read.
    pub fn bytes_wanted(&self) -> Option<usize> {
        self.pending.map(|p| p.len.saturating_sub(self.recv.len()))
    }

    /// Processes whatever is in the receive buffer.
    ///
    /// When a protocol error follows a message produced by this same call, processing stops
    /// before failing the connection: the message events come out first, and the failure is
    /// held (see [`is_stalled`](Self::is_stalled)) until the next call, so the application can
    /// handle (and answer) every message that arrived before the violation. Autobahn 3.2, 5.15
    /// and friends expect exactly that: the echo of the good message, then the close.
    pub fn handle_received(&mut self, now: Instant) {
        self.handle_received_with_clock(|| now);
    }

    /// Like [`handle_received`](Self::handle_received), reading the clock only if a frame
    /// needs the time (a close frame starts the close timeout). Reading the clock costs more
    /// than parsing a small frame, and most reads carry no close frame.
    pub fn handle_received_with_clock(&mut self, mut clock: impl FnMut() -> Instant) {
        if let Some(err) = self.deferred.take() {
            self.fail(*err);
        }
        let mut produced_message = false;
        while self.state != State::Closed {
            let result = match self.next_frame() {
                Ok(Some((header, payload))) => self.handle_frame(header, payload, &mut clock),
                Ok(None) => break,
                Err(err) => Err(err),
            };
            match result {
                Ok(()) => produced_message |= matches!(self.events.last(), Some(Event::Message(_))),
                Err(err) if produced_message => {
                    self.deferred = Some(Box::new(err));
                    break;
                }
                Err(err) => self.fail(err),
            }
        }
        if self.state == State::Closed {
            // §7.1.1/§5.5.1: after the closing handshake, or after failing, data is discarded.
            self.recv.clear();
            self.pending = None;
        }
    }

    /// Whether a protocol error is held back until the messages before it have been handled.
    /// Call [`handle_received`](Self::handle_received) (or `receive_data` with no bytes) once
    /// the application has seen them, to fail the connection.
    pub fn is_stalled(&self) -> bool {
        self.deferred.is_some()
    }

    /// The peer closed its side of the transport (read returned 0 bytes).
    pub fn receive_eof(&mut self) {
        if let Some(err) = self.deferred.take() {
            self.fail(*err);
        }
        self.eof = true;
        self.transport_done = true;
        // Nothing is left to wait for, even when the closing handshake already completed.
        self.close_deadline = None;
        if self.state != State::Closed {
            // §7.1.5: closed without a close frame: code 1006.
            self.enter_closed(CloseInfo {
                code: CloseCode::ABNORMAL,
                reason: Utf8Bytes::default(),
                initiator: if self.state == State::Closing {
                    Initiator::Local
                } else {
                    Initiator::Remote
                },
                clean: false,
            });
        }
    }

    /// Parses the next complete frame, unmasking and validating payload bytes as they arrive.
    fn next_frame(&mut self) -> Result<Option<(FrameHeader, Bytes)>, ProtocolError> {
        let mut pending = match self.pending.take() {
            Some(pending) => pending,
            None => match FrameHeader::parse(&self.recv)? {
                None => return Ok(None),
                Some((header, header_len)) => {
                    let len = self.check_header(&header)?;
                    self.recv.advance(header_len);
                    Pending {
                        header,
                        len,
                        done: 0,
                    }
                }
            },
        };
        let available = self.recv.len().min(pending.len);
        if available > pending.done {
            if let Some(fresh) = self.recv.get_mut(pending.done..available) {
                if let Some(key) = pending.header.mask {
                    apply_mask(fresh, key, pending.done);
                }
                // Autobahn 6.4.*: invalid UTF-8 fails as soon as its bytes arrive, even in the
                // middle of a frame.
                if self.assembler.is_text(pending.header.opcode) {
                    self.assembler.validate_text(fresh)?;
                }
            }
            pending.done = available;
        }
        if available < pending.len {
            self.pending = Some(pending);
            return Ok(None);
        }
        let payload = self.recv.split_to(pending.len).freeze();
        Ok(Some((pending.header, payload)))
    }

    /// Checks what the header alone decides; returns the payload length as `usize`.
    fn check_header(&mut self, header: &FrameHeader) -> Result<usize, ProtocolError> {
        // §5.2: RSV bits MUST be 0 unless an extension is negotiated that defines them. The
        // extension's bits may start a data message only: RFC 7692 §6.1 forbids RSV1 on control
        // and continuation frames.
        if header.rsv != 0 {
            let owned = self.extension.as_ref().map_or(0, |e| e.rsv_bits());
            let starts_message = matches!(header.opcode, OpCode::Text | OpCode::Binary);
            if header.rsv & !owned != 0 || !starts_message {
                return Err(ProtocolError::ReservedBits(header.rsv));
            }
        }
        // §5.1: a server MUST close the connection upon receiving an unmasked frame; a client
        // MUST close it upon receiving a masked one.
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if header.opcode.is_control() {
            // §5.5: control frames MUST have a payload of 125 bytes or less and MUST NOT be
            // fragmented.
            if header.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong(header.payload_len));
            }
            if !header.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
        } else {
            // A frame of a compressed message may exceed the limit a little on the wire (see
            // `encoded_limit`): the first frame says so with RSV1, the rest by belonging to it.
            let encoded = header.rsv != 0
                || (header.opcode == OpCode::Continuation && self.assembler.is_encoded());
            let limit = self.config.limits.max_frame_size;
            let wire_limit = if encoded { encoded_limit(limit) } else { limit };
            if header.payload_len > wire_limit as u64 {
                return Err(ProtocolError::FrameTooLarge {
                    size: header.payload_len,
                    limit,
                });
            }
            self.assembler.check_header(header, &self.config.limits)?;
        }
        // Both limits above are `usize`, so this conversion cannot fail for accepted frames.
        usize::try_from(header.payload_len).map_err(|_| ProtocolError::InvalidLength)
    }

    fn handle_frame(
        &mut self,
        header: FrameHeader,
        payload: Bytes,
        clock: &mut impl FnMut() -> Instant,
    ) -> Result<(), ProtocolError> {
        match header.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                let limit = self.config.limits.max_message_size;
                if let Some(message) =
                    self.assembler
                        .push(&header, payload, self.extension.as_deref_mut(), limit)?
                {
                    self.events.push(Event::Message(message));
                }
            }
            OpCode::Ping => {
                // §5.5.2: a Pong is sent in response, with the same payload, unless a close
                // frame has already been sent.
                if self.state == State::Open {
                    self.write_frame(OpCode::Pong, true, 0, &payload);
                }
                self.events.push(Event::Ping(payload));
            }
            OpCode::Pong => {
                // Any pong proves the peer alive; an unsolicited one is allowed (§5.5.3).
                if let Some(k) = &mut self.keepalive {
                    k.pong_deadline = None;
                }
                self.events.push(Event::Pong(payload));
            }
            OpCode::Close => {
                let frame = CloseFrame::parse(payload)?;
                self.receive_close(frame, clock());
            }
        }
        Ok(())
    }

    fn receive_close(&mut self, frame: CloseFrame, now: Instant) {
        let initiator = match self.state {
            State::Open => {
                // §5.5.1: the endpoint MUST send a Close frame in response, typically echoing
                // the status code it received.
                let echo = match frame.code {
                    Some(code) => CloseFrame::new(code, Utf8Bytes::default()),
                    None => CloseFrame {
                        code: None,
                        reason: Utf8Bytes::default(),
                    },
                };
                self.write_close(&echo);
                Initiator::Remote
            }
            State::Closing => Initiator::Local,
            State::Closed => return,
        };
        match self.role {
            // §7.1.1: the server closes the TCP connection first.
            Role::Server => self.transport_done = true,
            // The client waits for that, but not forever.
            Role::Client => {
                if !self.eof {
                    self.close_deadline = Some(now + self.config.limits.close_timeout);
                }
            }
        }
        self.enter_closed(CloseInfo {
            code: frame.code.unwrap_or(CloseCode::NO_STATUS),
            reason: frame.reason,
            initiator,
            clean: true,
        });
    }

    /// §7.1.7 "Fail the WebSocket Connection": send a close frame with the error's code if none
    /// was sent yet, and close the transport without waiting for the peer's close.
    fn fail(&mut self, err: ProtocolError) {
        if self.state == State::Closed {
            return;
        }
        let code = err.close_code();
        let reason = Utf8Bytes::from_static(err.reason());
        if !self.close_sent {
            self.write_close(&CloseFrame::new(code, reason.clone()));
        }
        self.error = Some(Box::new(err));
        self.transport_done = true;
        self.enter_closed(CloseInfo {
            code,
            reason,
            initiator: Initiator::Local,
            clean: false,
        });
    }

    fn enter_closed(&mut self, info: CloseInfo) {
        self.state = State::Closed;
        self.keepalive = None;
        if self.transport_done {
            self.close_deadline = None;
        }
        self.events.push(Event::Closed(info));
    }

    // ---------------------------------------------------------------------------------------
    // Output

    /// Queues a whole message, split into frames of `Config::fragment_size` if that is set, and
    /// compressed if an extension is negotiated and the message is worth it.
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        self.send_with(message, SendOptions::default())
    }

    /// Queues a whole message as frames of at most `frame_size` payload bytes (at least 1).
    pub fn send_fragmented(
        &mut self,
        message: Message,
        frame_size: usize,
    ) -> Result<(), SendError> {
        self.send_with(
            message,
            SendOptions {
                fragment_size: Some(frame_size),
                ..SendOptions::default()
            },
        )
    }

    /// Queues a whole message with per-message options.
    pub fn send_with(&mut self, message: Message, options: SendOptions) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        let is_text = message.is_text();
        let (opcode, payload) = match message {
            Message::Text(text) => (OpCode::Text, text.into_bytes()),
            Message::Binary(data) => (OpCode::Binary, data),
        };
        // RFC 7692 §6: a compressed message has RSV1 on its first frame only.
        let (payload, rsv) = match self.extension.as_mut() {
            Some(ext) if !options.uncompressed => match ext.encode(&payload, is_text) {
                Some(encoded) => (encoded, ext.rsv_bits()),
                None => (payload, 0),
            },
            _ => (payload, 0),
        };
        let frame_size = options
            .fragment_size
            .or(self.config.fragment_size)
            .unwrap_or(usize::MAX)
            .max(1);
        if payload.len() <= frame_size {
            self.write_frame_bytes(opcode, true, rsv, payload);
            return Ok(());
        }
        let mut rest = payload;
        let (mut opcode, mut rsv) = (opcode, rsv);
        while !rest.is_empty() {
            let chunk = rest.split_to(frame_size.min(rest.len()));
            self.write_frame_bytes(opcode, rest.is_empty(), rsv, chunk);
            opcode = OpCode::Continuation;
            rsv = 0;
        }
        Ok(())
    }

    /// The encoding group this connection belongs to for fan-out ([`crate::prepared`]):
    /// `None` when its frames depend on more than settings (a client masks each frame, a
    /// fragment size splits them, an extension carries state between messages).
    pub fn frame_encoding(&self) -> Option<FrameEncoding> {
        if self.role != Role::Server || self.config.fragment_size.is_some() {
            return None;
        }
        match &self.extension {
            None => Some(FrameEncoding::Plain),
            Some(extension) => extension.frame_encoding(),
        }
    }

    /// Queues a message prepared for many connections. The shared frame is written as it is
    /// when it was encoded for this connection's [`frame_encoding`](Self::frame_encoding);
    /// otherwise the message is encoded here, as by [`send`](Self::send). Either way the peer
    /// receives the same message.
    pub fn send_prepared(&mut self, frame: &PreparedFrame) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        match frame.encoded() {
            Some((encoding, bytes)) if Some(encoding) == self.frame_encoding() => {
                self.transmit.put_bytes(bytes.clone());
                Ok(())
            }
            _ => self.send(frame.message().clone()),
        }
    }

    /// Queues a ping.
    pub fn send_ping(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// Queues an unsolicited pong (a unidirectional heartbeat, §5.5.3).
    pub fn send_pong(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload)
    }

    fn send_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlPayloadTooLong(payload.len()));
        }
        self.write_frame(opcode, true, 0, &payload);
        Ok(())
    }

    /// Starts the closing handshake: queues a close frame and waits up to
    /// `Limits::close_timeout` for the peer's. The reason is cut to 123 bytes on a character
    /// boundary so the frame stays a valid control frame.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        if !code.is_sendable() {
            return Err(SendError::InvalidCloseCode(code.as_u16()));
        }
        self.write_close(&CloseFrame::new(code, truncate_reason(reason)));
        self.state = State::Closing;
        self.keepalive = None;
        self.close_deadline = Some(now + self.config.limits.close_timeout);
        Ok(())
    }

    fn write_close(&mut self, frame: &CloseFrame) {
        self.write_frame(OpCode::Close, true, 0, &frame.encode());
        self.close_sent = true;
    }

    fn next_mask(&self) -> [u8; 4] {
        self.config.fixed_mask.unwrap_or_else(rand::random)
    }

    /// Writes a frame whose payload is shared when large (server) or masked by copy (client).
    fn write_frame_bytes(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: Bytes) {
        match self.role {
            Role::Server => {
                self.write_header(opcode, fin, rsv, payload.len(), None);
                self.transmit.put_bytes(payload);
            }
            Role::Client => self.write_frame(opcode, fin, rsv, &payload),
        }
    }

    /// Writes a frame by copying its payload (masking it for a client).
    fn write_frame(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: &[u8]) {
        let mask = match self.role {
            Role::Client => Some(self.next_mask()),
            Role::Server => None,
        };
        self.write_header(opcode, fin, rsv, payload.len(), mask);
        let tail = self.transmit.tail_mut();
        let start = tail.len();
        tail.put_slice(payload);
        if let (Some(key), Some(written)) = (mask, tail.get_mut(start..)) {
            apply_mask(written, key, 0);
        }
    }

    fn write_header(
        &mut self,
        opcode: OpCode,
        fin: bool,
        rsv: u8,
        len: usize,
        mask: Option<[u8; 4]>,
    ) {
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: len as u64,
        };
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut buf);
        self.transmit.put_slice(buf.get(..n).unwrap_or_default());
    }

    /// The bytes waiting to be written to the transport. Write from it and
    /// [`advance`](bytes::Buf::advance) past what was written.
    pub fn transmit(&mut self) -> &mut Transmit {
        &mut self.transmit
    }

    /// Takes every waiting byte as one buffer. Convenient for tests and simple drivers.
    pub fn take_transmit(&mut self) -> Bytes {
        self.transmit.take_all()
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

    // ---------------------------------------------------------------------------------------
    // Time

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (next_ping, pong_deadline) = match &self.keepalive {
            Some(k) => (Some(k.next_ping), k.pong_deadline),
            None => (None, None),
        };
        [self.close_deadline, next_ping, pong_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires the timers due at `now`: keepalive pings, the pong deadline, the close timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.close_deadline.is_some_and(|d| d <= now) {
            self.close_deadline = None;
            self.transport_done = true;
            if self.state == State::Closing {
                // §7.1.1: the peer never answered our close.
                self.enter_closed(CloseInfo {
                    code: CloseCode::ABNORMAL,
                    reason: Utf8Bytes::from_static("close timeout"),
                    initiator: Initiator::Local,
                    clean: false,
                });
            }
        }
        if self.state != State::Open {
            return;
        }
        let Some(k) = self.keepalive.as_mut() else {
            return;
        };
        if k.pong_deadline.is_some_and(|d| d <= now) {
            self.keepalive = None;
            let reason = Utf8Bytes::from_static("keepalive ping timeout");
            self.write_close(&CloseFrame::new(CloseCode::INTERNAL_ERROR, reason.clone()));
            self.transport_done = true;
            self.enter_closed(CloseInfo {
                code: CloseCode::INTERNAL_ERROR,
                reason,
                initiator: Initiator::Local,
                clean: false,
            });
            return;
        }
        if let Some(keepalive) = self.config.keepalive
            && k.next_ping <= now
        {
            k.pings_sent += 1;
            let payload = k.pings_sent.to_be_bytes();
            k.pong_deadline.get_or_insert(now + keepalive.timeout);
            k.next_ping = now + keepalive.interval;
            self.write_frame(OpCode::Ping, true, 0, &payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u8) -> Event {
        Event::Message(Message::binary(vec![n]))
    }

    #[test]
    fn event_queue_keeps_order_when_pushed_between_pops_and_frees_its_overflow() {
        let mut queue = EventQueue::default();
        for n in 0..3 {
            queue.push(message(n));
        }
        assert_eq!(queue.pop(), Some(message(0)));
        // The inline slot is free but two wait behind it: a new event goes after them.
        queue.push(message(3));
        assert_eq!(queue.last(), Some(&message(3)));
        let rest: Vec<Event> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(rest, [message(1), message(2), message(3)]);
        assert!(queue.is_empty());
        queue.release_idle();
        assert_eq!(queue.rest.capacity(), 0, "an idle queue holds no slots");
        queue.push(message(4));
        assert_eq!(queue.rest.capacity(), 0, "one event waits inline");
        assert_eq!(queue.pop(), Some(message(4)));
    }
}
