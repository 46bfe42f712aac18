//! The close frame payload (RFC 6455 §5.5.1): a code, then a reason of at most 123 bytes.

use bytes::Bytes;

pub use crate::close_code::CloseCode;
use crate::error::ProtocolError;
use crate::frame::MAX_CONTROL_PAYLOAD;
use crate::message::Utf8Bytes;

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
                    (Some(&hi), Some(&lo)) => CloseCode::from(u16::from_be_bytes([hi, lo])),
                    _ => return Err(ProtocolError::CloseFrameTooShort),
                };
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode(code.as_u16()));
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

    /// Encodes the payload: the code in network byte order, then the reason, cut to
    /// [`MAX_REASON_LEN`] bytes on a character boundary so the payload always fits a control
    /// frame. A connection writes the same bytes without allocating (`encode_into`).
    pub fn encode(&self) -> Bytes {
        let mut buf = [0; MAX_CONTROL_PAYLOAD];
        Bytes::copy_from_slice(self.encode_into(&mut buf))
    }

    /// Writes the payload into `buf`, a control frame's room (§5.5), and returns the bytes
    /// written; the reason is cut as [`encode`](Self::encode) cuts it.
    pub(crate) fn encode_into<'b>(&self, buf: &'b mut [u8; MAX_CONTROL_PAYLOAD]) -> &'b [u8] {
        let Some(code) = self.code else {
            return &[];
        };
        let reason = truncate_reason(&self.reason).as_bytes();
        let code = code.as_u16().to_be_bytes();
        let mut len = 0;
        for (slot, byte) in buf.iter_mut().zip(code.iter().chain(reason)) {
            *slot = *byte;
            len += 1;
        }
        buf.get(..len).unwrap_or_default()
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
            assert!(CloseCode::from(code).is_sendable(), "{code}");
        }
        for code in [3000, 3999, 4000, 4999] {
            assert!(CloseCode::from(code).is_sendable(), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode::from(code).is_sendable(), "{code}");
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
    fn encode_writes_the_code_then_the_reason_cut_to_fit() {
        let long = "é".repeat(100); // 200 bytes: cut to 122, a whole number of characters
        let cases = [
            (CloseFrame::new(CloseCode::NORMAL, ""), b"\x03\xe8".to_vec()),
            (CloseFrame::parse(Bytes::new()).unwrap(), Vec::new()),
            (
                CloseFrame::new(CloseCode::GOING_AWAY, long.clone()),
                [b"\x03\xe9".as_slice(), &long.as_bytes()[..122]].concat(),
            ),
        ];
        let mut buf = [0u8; MAX_CONTROL_PAYLOAD];
        for (frame, expected) in cases {
            assert_eq!(&frame.encode()[..], expected);
            assert_eq!(frame.encode_into(&mut buf), expected);
        }
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
