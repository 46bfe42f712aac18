//! Close codes and the close frame payload (RFC 6455 §5.5.1, §7.4).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::message::Utf8Bytes;

/// A WebSocket close status code (RFC 6455 §7.4).
///
/// An open newtype rather than a closed enum: codes 3000-3999 are registered by libraries and
/// frameworks and 4000-4999 belong to applications, so any `u16` can be held. The registered
/// codes have named constants.
///
/// ```
/// use ferry_proto::CloseCode;
/// assert_eq!(CloseCode::NORMAL.as_u16(), 1000);
/// assert!(CloseCode::from(4001).is_sendable());
/// assert!(!CloseCode::ABNORMAL.is_sendable());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose for which the connection was established has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: an endpoint is going away (server shutting down, browser leaving the page).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: the endpoint cannot accept this type of data (text or binary).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present. Reserved: never sent on the wire; reported locally
    /// when the peer's close frame had no code.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection closed without a close frame. Reserved: never sent on the wire.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a message's data was not consistent with its type (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected the server to negotiate an extension it did not.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (the server is overloaded).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway or proxy received an invalid response from the upstream.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: the TLS handshake failed. Reserved: never sent on the wire.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether this code may appear in a close frame on the wire.
    ///
    /// RFC 6455 §7.4.1/§7.4.2: 1000-1003 and 1007-1014 are defined for use; 1004, 1005, 1006 and
    /// 1015 are reserved and MUST NOT be sent; below 1000 is unused; 1016-2999 are reserved for
    /// future protocol revisions; 3000-4999 are for libraries and applications; 5000 and up are
    /// not defined.
    pub const fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// A short name for logs and metrics ("normal", "protocol_error", "application", ...).
    pub fn name(self) -> &'static str {
        match self.0 {
            1000 => "normal",
            1001 => "going_away",
            1002 => "protocol_error",
            1003 => "unsupported_data",
            1005 => "no_status",
            1006 => "abnormal",
            1007 => "invalid_payload",
            1008 => "policy_violation",
            1009 => "message_too_big",
            1010 => "mandatory_extension",
            1011 => "internal_error",
            1012 => "service_restart",
            1013 => "try_again_later",
            1014 => "bad_gateway",
            1015 => "tls_handshake",
            3000..=3999 => "registered",
            4000..=4999 => "application",
            _ => "reserved",
        }
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({} {})", self.0, self.name())
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The largest close reason that fits a control frame: 125 bytes of payload less the 2-byte code.
pub const MAX_REASON_LEN: usize = 123;

/// The payload of a close frame: an optional code and a UTF-8 reason.
///
/// RFC 6455 §5.5.1: the body, if present, starts with a 2-byte code, followed by a UTF-8 reason.
/// A close frame with no body carries no code; [`CloseFrame::code`] is then `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code, or `None` for an empty close frame.
    pub code: Option<CloseCode>,
    /// The reason, at most [`MAX_REASON_LEN`] bytes; empty when there was none.
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// A close frame with a code and a reason.
    pub fn new(code: CloseCode, reason: impl Into<Utf8Bytes>) -> Self {
        CloseFrame {
            code: Some(code),
            reason: reason.into(),
        }
    }

    /// Parses and validates a received close frame payload.
    ///
    /// RFC 6455 §5.5.1: a 1-byte body is malformed; a code that may not appear on the wire is a
    /// protocol error (1002); a reason that is not UTF-8 is invalid data (1007).
    pub fn parse(payload: Bytes) -> Result<CloseFrame, ProtocolError> {
        match payload.len() {
            0 => Ok(CloseFrame {
                code: None,
                reason: Utf8Bytes::default(),
            }),
            1 => Err(ProtocolError::CloseFrameTooShort),
            _ => {
                let code = match (payload.first(), payload.get(1)) {
                    (Some(&hi), Some(&lo)) => CloseCode(u16::from_be_bytes([hi, lo])),
                    _ => return Err(ProtocolError::CloseFrameTooShort),
                };
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = Utf8Bytes::try_from(payload.slice(2..))
                    .map_err(|_| ProtocolError::InvalidCloseReason)?;
                Ok(CloseFrame {
                    code: Some(code),
                    reason,
                })
            }
        }
    }

    /// Encodes the payload: the code in network byte order, then the reason.
    pub fn encode(&self) -> Bytes {
        match self.code {
            None => Bytes::new(),
            Some(code) => {
                let mut out = BytesMut::with_capacity(2 + self.reason.len());
                out.put_u16(code.0);
                out.put_slice(self.reason.as_bytes());
                out.freeze()
            }
        }
    }
}

/// Truncates `reason` to at most [`MAX_REASON_LEN`] bytes on a character boundary, so a close
/// frame built from it is always a valid control frame.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_follow_rfc_7_4() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ] {
            assert!(CloseCode(code).is_sendable(), "{code}");
        }
        for code in [3000, 3999, 4000, 4999] {
            assert!(CloseCode(code).is_sendable(), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(code).is_sendable(), "{code}");
        }
    }

    #[test]
    fn parse_empty_close_has_no_code() {
        let frame = CloseFrame::parse(Bytes::new()).unwrap();
        assert_eq!(frame.code, None);
        assert_eq!(frame.reason.as_str(), "");
    }

    #[test]
    fn parse_one_byte_close_is_protocol_error() {
        let err = CloseFrame::parse(Bytes::from_static(&[3])).unwrap_err();
        assert_eq!(err, ProtocolError::CloseFrameTooShort);
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn parse_reserved_code_is_protocol_error() {
        let err = CloseFrame::parse(Bytes::from_static(&[0x03, 0xED])).unwrap_err(); // 1005
        assert_eq!(err, ProtocolError::InvalidCloseCode(1005));
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn parse_invalid_utf8_reason_is_1007() {
        let err = CloseFrame::parse(Bytes::from_static(&[0x03, 0xE8, 0xff])).unwrap_err();
        assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn encode_roundtrip() {
        let frame = CloseFrame::new(CloseCode::GOING_AWAY, "bye");
        let bytes = frame.encode();
        assert_eq!(&bytes[..], b"\x03\xe9bye");
        assert_eq!(CloseFrame::parse(bytes).unwrap(), frame);
    }

    #[test]
    fn truncate_reason_respects_char_boundaries() {
        let long = "é".repeat(100); // 200 bytes
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_REASON_LEN);
        assert_eq!(cut.len(), 122);
        assert_eq!(truncate_reason("short"), "short");
    }
}
