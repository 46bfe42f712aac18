//! # ferry-proto: RFC 6455 as a pure state machine
//!
//! This crate is the WebSocket protocol with no I/O in it: no sockets, no async runtime, no clock.
//! Bytes and time go in; events, bytes to send and the next deadline come out. The tokio layer in
//! the `ferry` crate is a thin shell around it, and so can any other runtime be.
//!
//! The pieces, in the order a connection meets them:
//!
//! - [`handshake`]: the HTTP/1.1 opening handshake, both roles ([`handshake::ClientHandshake`],
//!   [`handshake::ServerHandshake`]), parsed incrementally and bounded by [`Limits`]. It ends
//!   in one step that yields the connection together with what the handshake agreed
//!   ([`handshake::Request::accept_connection`], [`handshake::ClientHandshake::connection`]),
//!   so the response and the connection (subprotocol, permessage-deflate) cannot disagree.
//! - [`Connection`]: the framing layer after the handshake. Feed it bytes with
//!   [`Connection::receive_data`], take [`Event`]s with [`Connection::poll_event`], hand it
//!   messages with [`Connection::send`], and write out what [`Connection::transmit`] holds:
//!   data in order (the close last), and pongs and pings at the next frame boundary, never
//!   behind the queue ([`Transmit`]).
//! - [`frame`], [`mask`], [`utf8`], [`close`]: the wire formats and checks it is built from.
//! - [`ProtocolError`]: every way a peer can break the protocol, each mapped to its close code.
//!
//! ```
//! use ferry_proto::{Connection, Config, Event, Message, Role};
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! let mut client = Connection::new(Role::Client, Config::default(), now);
//! let mut server = Connection::new(Role::Server, Config::default(), now);
//!
//! client.send(Message::text("hello")).unwrap();
//! let wire = client.take_transmit();
//! server.receive_data(&wire, now);
//! match server.poll_event() {
//!     Some(Event::Message(Message::Text(text))) => assert_eq!(text.as_str(), "hello"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    warn(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod assembler;
pub mod close;
mod close_code;
mod connection;
mod encoding;
mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
mod limits;
pub mod mask;
mod message;
pub mod prepared;
mod role;
mod transmit;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{
    CloseInfo, Config, Connection, Event, Initiator, Keepalive, Role, SendError, SendOptions, State,
};
pub use error::ProtocolError;
pub use limits::Limits;
pub use message::{Message, Utf8Bytes};
pub use prepared::{FrameEncoding, PreparedFrame, PreparedMessage};
pub use transmit::Transmit;
