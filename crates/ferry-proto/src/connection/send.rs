//! The output side: messages and control frames into the transmit queue, in two lanes (data in
//! order; control at the next frame boundary, see [`Transmit`]), and the close this end starts.

use std::time::Instant;

use bytes::{BufMut, Bytes};

use super::{Connection, State};
use crate::close::{CloseCode, CloseFrame, truncate_reason};
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
use crate::mask::apply_mask;
use crate::message::Message;
use crate::prepared::{FrameEncoding, PreparedFrame};
use crate::role::Role;
use crate::transmit::{LAZY_MASK_MIN_FRAME, LAZY_MASK_THRESHOLD, Transmit};

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

impl Connection {
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
        // A client masks a large message as it goes out, frame by frame: the choice is by the
        // message, so a fragmented one is not copied whole either (unless its frames are
        // tiny, where a copy costs less than a masked frame's bookkeeping).
        let mask_lazily = self.role == Role::Client
            && payload.len() >= LAZY_MASK_THRESHOLD
            && frame_size >= LAZY_MASK_MIN_FRAME;
        if payload.len() <= frame_size {
            self.write_frame_bytes(opcode, true, rsv, payload, mask_lazily);
            return Ok(());
        }
        let mut rest = payload;
        let (mut opcode, mut rsv) = (opcode, rsv);
        while !rest.is_empty() {
            let chunk = rest.split_to(frame_size.min(rest.len()));
            self.write_frame_bytes(opcode, rest.is_empty(), rsv, chunk, mask_lazily);
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
        self.write_frame(Lane::Control, opcode, true, 0, &payload);
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
        // After the messages already queued: a close this end starts is the last of its data.
        self.write_close(&CloseFrame::new(code, truncate_reason(reason)));
        self.state = State::Closing;
        self.keepalive = None;
        self.close_deadline = Some(now + self.config.limits.close_timeout);
        Ok(())
    }

    /// Queues a close frame, after the data already queued: a close this end starts, a reply to
    /// the peer's, or a failure's. Nothing is queued after it (§5.5.1).
    pub(super) fn write_close(&mut self, frame: &CloseFrame) {
        let mut payload = [0; MAX_CONTROL_PAYLOAD];
        let payload = frame.encode_into(&mut payload);
        self.write_frame(Lane::Data, OpCode::Close, true, 0, payload);
        self.close_sent = true;
    }

    fn next_mask(&self) -> [u8; 4] {
        self.config.fixed_mask.unwrap_or_else(rand::random)
    }

    /// Writes a frame whose payload is shared when large (server), masked as it goes out for a
    /// client's large message (`mask_lazily`: only what is about to be written is ever masked,
    /// see [`Transmit`]), or copied (and masked, for a client) otherwise.
    fn write_frame_bytes(
        &mut self,
        opcode: OpCode,
        fin: bool,
        rsv: u8,
        payload: Bytes,
        mask_lazily: bool,
    ) {
        match self.role {
            Role::Server => {
                self.write_header(opcode, fin, rsv, payload.len(), None);
                self.transmit.put_bytes(payload);
            }
            Role::Client if mask_lazily => {
                let key = self.next_mask();
                self.write_header(opcode, fin, rsv, payload.len(), Some(key));
                self.transmit.put_masked(payload, key);
            }
            Role::Client => self.write_frame(Lane::Data, opcode, fin, rsv, &payload),
        }
    }

    /// Writes a frame into `lane` by copying its payload (masking it for a client).
    pub(super) fn write_frame(
        &mut self,
        lane: Lane,
        opcode: OpCode,
        fin: bool,
        rsv: u8,
        payload: &[u8],
    ) {
        let mask = match self.role {
            Role::Client => Some(self.next_mask()),
            Role::Server => None,
        };
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut buf);
        let out = match lane {
            Lane::Data => self.transmit.tail_mut(),
            Lane::Control => self.transmit.control_mut(),
        };
        out.put_slice(buf.get(..n).unwrap_or_default());
        let start = out.len();
        out.put_slice(payload);
        if let (Some(key), Some(written)) = (mask, out.get_mut(start..)) {
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
}

/// Which lane of [`Transmit`] a frame goes in: data in order, control at the next frame
/// boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lane {
    Data,
    Control,
}
