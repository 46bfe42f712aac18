//! Messages encoded once and written by many connections: the fan-out fast path.
//!
//! A server's frames are not masked (RFC 6455 §5.1), so every server connection that encodes
//! messages the same way puts the same bytes on the wire for the same message. Without context
//! takeover (RFC 7692 §7.1.1.1) permessage-deflate keeps no state between messages either, so
//! connections with the same compressor settings produce the same compressed frame.
//! [`Connection::frame_encoding`](crate::Connection::frame_encoding) says which group a
//! connection belongs to; [`PreparedMessage::frame`] encodes a message once per group, header
//! included, as one [`Bytes`] that every connection of the group shares.
//!
//! ```
//! use ferry_proto::{Config, Connection, Message, PreparedMessage, Role};
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! let mut a = Connection::new(Role::Server, Config::default(), now);
//! let mut b = Connection::new(Role::Server, Config::default(), now);
//! let mut prepared = PreparedMessage::new(Message::text("to everyone"));
//! for conn in [&mut a, &mut b] {
//!     let frame = prepared.frame(conn.frame_encoding());
//!     conn.send_prepared(&frame).unwrap();
//! }
//! assert_eq!(prepared.encodings(), 1);
//! assert_eq!(a.take_transmit(), b.take_transmit());
//! ```

use bytes::{BufMut, Bytes, BytesMut};

#[cfg(feature = "deflate")]
use crate::extension::Extension;
use crate::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use crate::message::Message;

pub use crate::encoding::{DeflateEncoding, FrameEncoding};

/// One message encoded as one complete server frame for one [`FrameEncoding`], or, for a
/// connection that must encode for itself, just the message. Cloning shares the bytes.
#[derive(Clone, Debug)]
pub struct PreparedFrame {
    message: Message,
    encoded: Option<(FrameEncoding, Bytes)>,
}

impl PreparedFrame {
    /// The message, as the application handed it over.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The payload length of the message (what send budgets count).
    pub fn len(&self) -> usize {
        self.message.len()
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.message.is_empty()
    }

    /// The encoding these bytes are for, and the frame itself; `None` when the connection
    /// encodes the message itself.
    pub fn encoded(&self) -> Option<(FrameEncoding, &Bytes)> {
        self.encoded.as_ref().map(|(e, b)| (*e, b))
    }
}

/// A message to be sent to many connections, with its frame cached per [`FrameEncoding`].
#[derive(Debug)]
pub struct PreparedMessage {
    message: Message,
    frames: Vec<(FrameEncoding, Bytes)>,
    compressions: usize,
}

impl PreparedMessage {
    /// Prepares `message`; nothing is encoded until a [`frame`](Self::frame) is asked for.
    pub fn new(message: Message) -> Self {
        PreparedMessage {
            message,
            frames: Vec::new(),
            compressions: 0,
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The frame for a connection with this encoding (from
    /// [`Connection::frame_encoding`](crate::Connection::frame_encoding)), encoded on the first
    /// call for each encoding and shared after. `None` gives a frame holding only the message,
    /// which such a connection encodes itself.
    pub fn frame(&mut self, encoding: Option<FrameEncoding>) -> PreparedFrame {
        let Some(encoding) = encoding else {
            return PreparedFrame {
                message: self.message.clone(),
                encoded: None,
            };
        };
        if let Some((_, bytes)) = self.frames.iter().find(|(e, _)| *e == encoding) {
            return PreparedFrame {
                message: self.message.clone(),
                encoded: Some((encoding, bytes.clone())),
            };
        }
        let (bytes, compressed) = encode(&self.message, encoding);
        self.compressions += usize::from(compressed);
        self.frames.push((encoding, bytes.clone()));
        PreparedFrame {
            message: self.message.clone(),
            encoded: Some((encoding, bytes)),
        }
    }

    /// How many distinct encodings were made: one per group of connections.
    pub fn encodings(&self) -> usize {
        self.frames.len()
    }

    /// How many of those encodings ran the compressor and kept its output (a message under the
    /// threshold, or one that does not shrink, goes out uncompressed).
    pub fn compressions(&self) -> usize {
        self.compressions
    }
}

/// Encodes `message` as one unmasked frame; returns the bytes and whether they are compressed.
fn encode(message: &Message, encoding: FrameEncoding) -> (Bytes, bool) {
    let (opcode, payload) = match message {
        Message::Text(text) => (OpCode::Text, text.as_bytes()),
        Message::Binary(data) => (OpCode::Binary, &data[..]),
    };
    let compressed: Option<Bytes> = match encoding {
        FrameEncoding::Plain => None,
        // Without context takeover the codec is stateless between messages, so a fresh one
        // with the group's settings compresses exactly as each connection's own would.
        #[cfg(feature = "deflate")]
        FrameEncoding::Deflate(settings) => {
            crate::extension::deflate::PerMessageDeflate::stateless(settings)
                .encode(payload, message.is_text())
        }
        // A build without the codec sends the message uncompressed, which RFC 7692 §6 always
        // allows (and no such build negotiates the extension in the first place).
        #[cfg(not(feature = "deflate"))]
        FrameEncoding::Deflate(_) => None,
    };
    let (body, rsv) = match &compressed {
        Some(bytes) => (&bytes[..], crate::extension::deflate::RSV1),
        None => (payload, 0),
    };
    let header = FrameHeader {
        fin: true,
        rsv,
        opcode,
        mask: None,
        payload_len: body.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    let mut out = BytesMut::with_capacity(n + body.len());
    out.put_slice(head.get(..n).unwrap_or_default());
    out.put_slice(body);
    (out.freeze(), compressed.is_some())
}

// The tests share frames between deflate connections.
#[cfg(all(test, feature = "deflate"))]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::extension::deflate::{DeflateConfig, DeflateParams, PerMessageDeflate};
    use crate::{Config, Connection, Event, Role};

    fn deflate_pair(server_nct: bool) -> (Connection, Connection) {
        let now = Instant::now();
        let params = DeflateParams {
            server_no_context_takeover: server_nct,
            ..DeflateParams::default()
        };
        let settings = DeflateConfig {
            own_no_context_takeover: server_nct,
            ..DeflateConfig::default()
        };
        let server = Connection::new(Role::Server, Config::default(), now).with_extension(
            Box::new(PerMessageDeflate::new(Role::Server, params, &settings)),
        );
        let client = Connection::new(Role::Client, Config::default(), now).with_extension(
            Box::new(PerMessageDeflate::new(Role::Client, params, &settings)),
        );
        (server, client)
    }

    fn receive(client: &mut Connection, wire: &[u8]) -> Message {
        client.receive_data(wire, Instant::now());
        match client.poll_event() {
            Some(Event::Message(m)) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn a_shared_deflate_frame_is_what_the_connection_would_have_written() {
        let text = "the same line again and again; ".repeat(40);
        let (mut own, _) = deflate_pair(true);
        own.send(Message::text(text.clone())).unwrap();
        let by_itself = own.take_transmit();

        let mut prepared = PreparedMessage::new(Message::text(text.clone()));
        let (mut a, mut client_a) = deflate_pair(true);
        let (mut b, mut client_b) = deflate_pair(true);
        for conn in [&mut a, &mut b] {
            let frame = prepared.frame(conn.frame_encoding());
            conn.send_prepared(&frame).unwrap();
        }
        assert_eq!(prepared.encodings(), 1);
        assert_eq!(prepared.compressions(), 1);
        let (wire_a, wire_b) = (a.take_transmit(), b.take_transmit());
        assert_eq!(wire_a, by_itself);
        assert_eq!(wire_a, wire_b);
        assert!(
            wire_a.len() < text.len() / 4,
            "compressed: {}",
            wire_a.len()
        );
        assert_eq!(receive(&mut client_a, &wire_a).as_text(), Some(&text[..]));
        assert_eq!(receive(&mut client_b, &wire_b).as_text(), Some(&text[..]));
    }

    #[test]
    fn context_takeover_connections_encode_for_themselves() {
        let (mut server, mut client) = deflate_pair(false);
        assert_eq!(server.frame_encoding(), None);
        let text = "abcabcabc".repeat(100);
        let mut prepared = PreparedMessage::new(Message::text(text.clone()));
        let frame = prepared.frame(server.frame_encoding());
        assert!(frame.encoded().is_none());
        server.send_prepared(&frame).unwrap();
        assert_eq!(prepared.encodings(), 0);
        let wire = server.take_transmit();
        assert_eq!(receive(&mut client, &wire).as_text(), Some(&text[..]));
    }

    #[test]
    fn a_frame_for_another_group_is_re_encoded_not_written() {
        let now = Instant::now();
        let mut plain = Connection::new(Role::Server, Config::default(), now);
        let (mut deflate, mut client) = deflate_pair(true);
        let text = "xyz".repeat(500);
        let mut prepared = PreparedMessage::new(Message::text(text.clone()));
        let plain_frame = prepared.frame(plain.frame_encoding());
        plain.send_prepared(&plain_frame).unwrap();
        // Handing the uncompressed group's frame to a deflate connection must still work.
        deflate.send_prepared(&plain_frame).unwrap();
        let wire = deflate.take_transmit();
        assert!(wire.len() < text.len());
        assert_eq!(receive(&mut client, &wire).as_text(), Some(&text[..]));
        let mut client_conn = Connection::new(Role::Client, Config::default(), now);
        assert_eq!(client_conn.frame_encoding(), None);
        client_conn.send_prepared(&plain_frame).unwrap();
        let masked = client_conn.take_transmit();
        assert_eq!(masked.first().map(|b| b & 0x0f), Some(1));
        assert_eq!(masked.get(1).map(|b| b & 0x80), Some(0x80));
    }

    #[test]
    fn a_closed_connection_refuses_prepared_frames() {
        let now = Instant::now();
        let mut conn = Connection::new(Role::Server, Config::default(), now);
        conn.close(crate::CloseCode::NORMAL, "", now).unwrap();
        let mut prepared = PreparedMessage::new(Message::binary(vec![1, 2, 3]));
        let frame = prepared.frame(conn.frame_encoding());
        assert_eq!(conn.send_prepared(&frame), Err(crate::SendError::Closed));
    }
}
