//! Protocol errors: everything a peer can do wrong after the handshake, and the close code each
//! one earns. This is the one place where that mapping lives.

use std::fmt;

use crate::close_code::CloseCode;

/// A violation of RFC 6455 by the peer, or a message over one of the local [`Limits`].
///
/// Each variant knows the close code ([`ProtocolError::close_code`]) and the short reason
/// ([`ProtocolError::reason`]) that [`Connection`] sends when it fails the connection. The
/// `Display` form adds the details for logs.
///
/// [`Limits`]: crate::Limits
/// [`Connection`]: crate::Connection
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1, RSV2 or RSV3 was set, and no negotiated extension owns that bit (§5.2).
    ReservedBits(u8),
    /// An opcode in the reserved ranges 0x3-0x7 or 0xB-0xF (§5.2).
    ReservedOpcode(u8),
    /// A client sent a frame without a mask (§5.1: the server MUST close the connection).
    UnmaskedFrame,
    /// A server sent a masked frame (§5.1: the client MUST close the connection).
    MaskedFrame,
    /// A 64-bit payload length with the most significant bit set (§5.2).
    InvalidLength,
    /// A control frame with a payload over 125 bytes (§5.5).
    ControlFrameTooLong(u64),
    /// A control frame without FIN (§5.5: control frames MUST NOT be fragmented).
    FragmentedControlFrame,
    /// A continuation frame with no message in progress (§5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message was in progress (§5.4).
    ExpectedContinuation,
    /// Text that is not valid UTF-8 (§8.1: fail the connection with 1007).
    InvalidUtf8,
    /// A close frame with a 1-byte payload (§5.5.1).
    CloseFrameTooShort,
    /// A close frame with a code that may not appear on the wire (§7.4).
    InvalidCloseCode(u16),
    /// A close frame whose reason is not valid UTF-8 (§5.5.1).
    InvalidCloseReason,
    /// A compressed message that does not inflate (RFC 7692 §7.2.2).
    InvalidCompressedData,
    /// A frame longer than `Limits::max_frame_size`.
    FrameTooLarge {
        /// The frame's payload length.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// A message longer than `Limits::max_message_size`.
    MessageTooLarge {
        /// The size the message reached.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// A message in more frames than `Limits::max_fragments`.
    TooManyFragments {
        /// The limit.
        limit: usize,
    },
}

impl ProtocolError {
    /// The close code sent to the peer for this error (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> CloseCode {
        use ProtocolError::*;
        match self {
            InvalidUtf8 | InvalidCloseReason | InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            FrameTooLarge { .. } | MessageTooLarge { .. } | TooManyFragments { .. } => {
                CloseCode::MESSAGE_TOO_BIG
            }
            ReservedBits(_)
            | ReservedOpcode(_)
            | UnmaskedFrame
            | MaskedFrame
            | InvalidLength
            | ControlFrameTooLong(_)
            | FragmentedControlFrame
            | UnexpectedContinuation
            | ExpectedContinuation
            | CloseFrameTooShort
            | InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// The short reason sent to the peer in the close frame. It says what was wrong without
    /// echoing anything the peer sent.
    pub fn reason(&self) -> &'static str {
        use ProtocolError::*;
        match self {
            ReservedBits(_) => "reserved bits set",
            ReservedOpcode(_) => "reserved opcode",
            UnmaskedFrame => "client frame not masked",
            MaskedFrame => "server frame masked",
            InvalidLength => "invalid payload length",
            ControlFrameTooLong(_) => "control frame too long",
            FragmentedControlFrame => "fragmented control frame",
            UnexpectedContinuation => "unexpected continuation frame",
            ExpectedContinuation => "expected continuation frame",
            InvalidUtf8 => "invalid UTF-8 in text",
            CloseFrameTooShort => "close frame too short",
            InvalidCloseCode(_) => "invalid close code",
            InvalidCloseReason => "invalid UTF-8 in close reason",
            InvalidCompressedData => "invalid compressed data",
            FrameTooLarge { .. } => "frame too large",
            MessageTooLarge { .. } => "message too large",
            TooManyFragments { .. } => "too many fragments",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProtocolError::*;
        match self {
            ReservedBits(bits) => write!(f, "reserved bits {bits:#05b} set without an extension"),
            ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ControlFrameTooLong(len) => write!(f, "control frame of {len} bytes (max 125)"),
            InvalidCloseCode(code) => write!(f, "close code {code} may not be sent"),
            FrameTooLarge { size, limit } => {
                write!(f, "frame of {size} bytes over the {limit}-byte limit")
            }
            MessageTooLarge { size, limit } => {
                write!(f, "message of {size}+ bytes over the {limit}-byte limit")
            }
            TooManyFragments { limit } => write!(f, "message in more than {limit} frames"),
            other => f.write_str(other.reason()),
        }?;
        write!(f, " (close {})", self.close_code())
    }
}

impl std::error::Error for ProtocolError {}
