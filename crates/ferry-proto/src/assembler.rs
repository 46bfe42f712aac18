//! Reassembly of fragmented messages (RFC 6455 §5.4), with limits and streaming UTF-8 checks.

use bytes::{Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::extension::Extension;
use crate::frame::{FrameHeader, OpCode};
use crate::limits::{Limits, encoded_limit};
use crate::message::{Message, Utf8Bytes};
use crate::utf8::Validator;

/// The type of the message being assembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// Turns data frames into whole messages.
///
/// The connection calls [`Assembler::check_header`] as soon as a data frame's header is parsed,
/// so sequence and size violations are caught before the payload is buffered; then
/// [`Assembler::validate_text`] on each newly arrived slice of a text payload; then
/// [`Assembler::push`] when the frame is complete.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    /// The type of the fragmented message in progress, if any.
    kind: Option<Kind>,
    /// Fragments so far, copied together. Empty for unfragmented messages, which pass through
    /// without a copy.
    buf: BytesMut,
    /// Payload bytes so far, including the frame being received.
    size: u64,
    /// Frames so far in this message, counting empty ones.
    fragments: usize,
    /// The message's first frame carried the extension's RSV bits: its frames go through
    /// `Extension::decode`.
    encoded: bool,
    utf8: Validator,
}

impl Assembler {
    /// Checks a data frame's header against the message sequence and the limits.
    pub(crate) fn check_header(
        &mut self,
        header: &FrameHeader,
        limits: &Limits,
    ) -> Result<(), ProtocolError> {
        match (header.opcode, self.kind) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            (OpCode::Text | OpCode::Binary, None) => self.encoded = header.rsv != 0,
            _ => {}
        }
        // For an encoded (compressed) message this bounds the encoded size; the decoded size is
        // bounded again as it is produced.
        let size = self.size.saturating_add(header.payload_len);
        let limit = if self.encoded {
            encoded_limit(limits.max_message_size)
        } else {
            limits.max_message_size
        };
        if size > limit as u64 {
            return Err(ProtocolError::MessageTooLarge {
                size,
                limit: limits.max_message_size,
            });
        }
        // This frame would be number `fragments + 1`; empty frames count too (ws CVE-2026-48779).
        if self.fragments >= limits.max_fragments {
            return Err(ProtocolError::TooManyFragments {
                limit: limits.max_fragments,
            });
        }
        Ok(())
    }

    /// Whether the message being received is encoded by the extension (compressed).
    pub(crate) fn is_encoded(&self) -> bool {
        self.encoded
    }

    /// Whether payload bytes of a frame with this opcode are text.
    pub(crate) fn is_text(&self, opcode: OpCode) -> bool {
        // Encoded payloads are not text until decoded; they are validated after decoding.
        match opcode {
            _ if self.encoded => false,
            OpCode::Text => true,
            OpCode::Continuation => self.kind == Some(Kind::Text),
            _ => false,
        }
    }

    /// Validates a newly arrived, unmasked slice of a text payload.
    pub(crate) fn validate_text(&mut self, slice: &[u8]) -> Result<(), ProtocolError> {
        self.utf8
            .feed(slice)
            .map_err(|_| ProtocolError::InvalidUtf8)
    }

    /// Adds a complete data frame. Returns the message when this frame finishes it.
    ///
    /// The frame's header has passed [`Assembler::check_header`] and, for text, its payload has
    /// been fed to [`Assembler::validate_text`] (unless the message is encoded, in which case
    /// `extension` decodes it here, bounded by `limit`, and the output is validated).
    pub(crate) fn push(
        &mut self,
        header: &FrameHeader,
        payload: Bytes,
        extension: Option<&mut (dyn Extension + 'static)>,
        limit: usize,
    ) -> Result<Option<Message>, ProtocolError> {
        let kind = match header.opcode {
            OpCode::Text => Kind::Text,
            OpCode::Binary => Kind::Binary,
            _ => self.kind.ok_or(ProtocolError::UnexpectedContinuation)?,
        };
        if self.encoded {
            let extension = extension.ok_or(ProtocolError::ReservedBits(header.rsv))?;
            self.kind = Some(kind);
            self.size += payload.len() as u64;
            self.fragments += 1;
            let start = self.buf.len();
            extension.decode(&payload, header.fin, &mut self.buf, limit)?;
            if kind == Kind::Text {
                self.utf8
                    .feed(self.buf.get(start..).unwrap_or_default())
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        } else if header.fin && self.kind.is_none() {
            // An unfragmented message: the payload is the message, no copy.
            return self.finish(kind, payload).map(Some);
        } else {
            self.kind = Some(kind);
            self.size += payload.len() as u64;
            self.fragments += 1;
            self.buf.extend_from_slice(&payload);
        }
        if !header.fin {
            return Ok(None);
        }
        let whole = std::mem::take(&mut self.buf).freeze();
        self.finish(kind, whole).map(Some)
    }

    fn finish(&mut self, kind: Kind, payload: Bytes) -> Result<Message, ProtocolError> {
        self.kind = None;
        self.encoded = false;
        self.size = 0;
        self.fragments = 0;
        match kind {
            Kind::Binary => Ok(Message::Binary(payload)),
            Kind::Text => {
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Message::Text(Utf8Bytes::from_validated(payload)))
            }
        }
    }
}
