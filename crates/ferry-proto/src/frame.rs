//! The frame header (RFC 6455 §5.2): parse and encode, nothing else.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use crate::error::ProtocolError;

/// The longest possible header: 2 bytes, 8 of extended length, 4 of masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload of a control frame (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode (§5.2, §11.8). Reserved opcodes are a parse error, so this enum is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decodes the low 4 bits of the first header byte.
    pub fn from_bits(bits: u8) -> Result<OpCode, ProtocolError> {
        match bits {
            0x0 => Ok(OpCode::Continuation),
            0x1 => Ok(OpCode::Text),
            0x2 => Ok(OpCode::Binary),
            0x8 => Ok(OpCode::Close),
            0x9 => Ok(OpCode::Ping),
            0xA => Ok(OpCode::Pong),
            other => Err(ProtocolError::ReservedOpcode(other)),
        }
    }

    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong are control frames (§5.5).
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final frame of a message.
    pub fin: bool,
    /// RSV1, RSV2 and RSV3 as the three low bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the MASK bit was set.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header, and otherwise the header
    /// and its length in bytes. Only what the header alone decides is checked here: reserved
    /// opcodes and the 64-bit length's most significant bit. The connection checks the rest
    /// (masking direction, RSV ownership, control frame rules, limits).
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let (b0, b1) = match buf {
            [b0, b1, ..] => (*b0, *b1),
            _ => return Ok(None),
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x07;
        let opcode = OpCode::from_bits(b0 & 0x0F)?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut len) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(&[hi, lo]) => (u64::from(u16::from_be_bytes([hi, lo])), 4),
                _ => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(bytes) => {
                    let n = u64::from_be_bytes(bytes);
                    // §5.2: "the most significant bit MUST be 0".
                    if n >> 63 != 0 {
                        return Err(ProtocolError::InvalidLength);
                    }
                    (n, 10)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            match buf
                .get(len..len + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
            {
                Some(key) => {
                    len += 4;
                    Some(key)
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv,
                opcode,
                mask,
                payload_len,
            },
            len,
        )))
    }

    /// Encodes this header into `out`, using the shortest length form (§5.2: "the minimal number
    /// of bytes MUST be used to encode the length"), and returns the number of bytes written.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        let mut b0 = self.opcode.bits() | ((self.rsv & 0x07) << 4);
        if self.fin {
            b0 |= 0x80;
        }
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        out[0] = b0;
        let mut len = match self.payload_len {
            n @ 0..=125 => {
                out[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let (Some(key), Some(slot)) = (self.mask, out.get_mut(len..len + 4)) {
            slot.copy_from_slice(&key);
            len += 4;
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(header: FrameHeader) -> Vec<u8> {
        let mut out = [0; MAX_HEADER_LEN];
        let n = header.encode(&mut out);
        let (parsed, len) = FrameHeader::parse(&out[..n]).unwrap().unwrap();
        assert_eq!(parsed, header);
        assert_eq!(len, n);
        // Every strict prefix is "need more".
        for cut in 0..n {
            assert_eq!(FrameHeader::parse(&out[..cut]).unwrap(), None);
        }
        out[..n].to_vec()
    }

    fn header(len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask,
            payload_len: len,
        }
    }

    #[test]
    fn length_forms_are_minimal() {
        assert_eq!(roundtrip(header(0, None)), [0x82, 0]);
        assert_eq!(roundtrip(header(125, None)), [0x82, 125]);
        assert_eq!(roundtrip(header(126, None)), [0x82, 126, 0, 126]);
        assert_eq!(roundtrip(header(0xFFFF, None)), [0x82, 126, 0xFF, 0xFF]);
        assert_eq!(
            roundtrip(header(0x10000, None)),
            [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(roundtrip(header(1 << 62, Some([1, 2, 3, 4]))).len(), 14);
    }

    #[test]
    fn masked_header_carries_key() {
        assert_eq!(
            roundtrip(header(5, Some([0x37, 0xfa, 0x21, 0x3d]))),
            [0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d]
        );
    }

    #[test]
    fn rsv_and_fin_bits() {
        let h = FrameHeader {
            fin: false,
            rsv: 0b101,
            opcode: OpCode::Text,
            mask: None,
            payload_len: 1,
        };
        assert_eq!(roundtrip(h), [0x51, 1]);
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn length_with_msb_set_is_rejected() {
        let buf = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&buf), Err(ProtocolError::InvalidLength));
    }
}
