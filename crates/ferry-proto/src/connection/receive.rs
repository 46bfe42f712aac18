//! The input side: bytes in, frames checked and reassembled into messages, control frames
//! answered, the peer's close and this end's failures.

use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use super::send::Lane;
use super::{CloseInfo, Connection, Deferred, Event, Initiator, State};
use crate::close::{CloseCode, CloseFrame};
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, OpCode};
use crate::limits::encoded_limit;
use crate::mask::apply_mask;
use crate::message::Utf8Bytes;
use crate::role::Role;

/// A frame whose header has been parsed and whose payload is still arriving.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    header: FrameHeader,
    /// Payload length, already checked against the frame size limit.
    len: usize,
    /// Payload bytes already unmasked (and, for text, validated) in place.
    done: usize,
}

impl Connection {
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
        match self.deferred.take().map(|deferred| *deferred) {
            Some(Deferred::Failure(err)) => self.fail(err),
            Some(Deferred::Close(frame)) => self.receive_close(frame, Some(clock())),
            None => {}
        }
        let mut produced_message = false;
        while self.state != State::Closed {
            let result = match self.next_frame() {
                // The peer's close right behind messages of this read waits for the
                // application to have seen them, as a violation does, so its replies go
                // first. Only while open: once this end has sent its close, it sends nothing
                // more, and the peer's close is the answer it is waiting for.
                Ok(Some((header, payload)))
                    if produced_message
                        && header.opcode == OpCode::Close
                        && self.state == State::Open =>
                {
                    match CloseFrame::parse(payload) {
                        Ok(frame) => {
                            self.deferred = Some(Box::new(Deferred::Close(frame)));
                            break;
                        }
                        Err(err) => Err(err),
                    }
                }
                Ok(Some((header, payload))) => self.handle_frame(header, payload, &mut clock),
                Ok(None) => break,
                Err(err) => Err(err),
            };
            match result {
                Ok(()) => produced_message |= matches!(self.events.last(), Some(Event::Message(_))),
                Err(err) if produced_message => {
                    self.deferred = Some(Box::new(Deferred::Failure(err)));
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

    /// Whether a protocol error, or the peer's close, is held back until the messages before it
    /// have been handled.
    /// Call [`handle_received`](Self::handle_received) (or `receive_data` with no bytes) once
    /// the application has seen them, to fail the connection.
    pub fn is_stalled(&self) -> bool {
        self.deferred.is_some()
    }

    /// The peer closed its side of the transport (read returned 0 bytes).
    pub fn receive_eof(&mut self) {
        self.eof = true;
        match self.deferred.take().map(|deferred| *deferred) {
            Some(Deferred::Failure(err)) => self.fail(err),
            Some(Deferred::Close(frame)) => self.receive_close(frame, None),
            None => {}
        }
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
                    self.write_frame(Lane::Control, OpCode::Pong, true, 0, &payload);
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
                self.receive_close(frame, Some(clock()));
            }
        }
        Ok(())
    }

    /// The peer's close. `now` sets a client's wait for the transport's end; `None` once the
    /// transport has ended already.
    fn receive_close(&mut self, frame: CloseFrame, now: Option<Instant>) {
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
                // After the data already queued: the answers this end owes (an echo of the
                // peer's last message, say) still reach the peer, which reads until our close
                // (§5.5.1 lets the close wait for the current message; nothing new is queued
                // after it).
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
                if let Some(now) = now.filter(|_| !self.eof) {
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
            // After what is queued: a violation held back behind messages (`is_stalled`) is
            // failed once the application has answered them, and those answers go first.
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

    pub(super) fn enter_closed(&mut self, info: CloseInfo) {
        self.state = State::Closed;
        self.keepalive = None;
        if self.transport_done {
            self.close_deadline = None;
        }
        self.events.push(Event::Closed(info));
    }
}
