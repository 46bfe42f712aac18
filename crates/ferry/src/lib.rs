//! # ferry: WebSocket for tokio, with message semantics that hold
//!
//! A WebSocket moves whole messages, not bytes. Ferry keeps that promise over any
//! `AsyncRead + AsyncWrite` transport (TCP, Unix sockets, TLS, an in-memory pipe):
//!
//! - [`Sender::send`] hands over a whole message or nothing, and waits only while the send
//!   queue is over its byte budget; [`Sender::try_send`] never waits and gives the message back
//!   when the queue is full; [`Sender::buffered_amount`] is the browser's `bufferedAmount`.
//! - [`Receiver::recv`] yields each message whole, however TCP split or merged the bytes, then
//!   the close as the last item. It is cancel-safe.
//! - Pongs and close replies are sent by the connection itself, ahead of queued data.
//!
//! The protocol itself lives in [`ferry_proto`], a sans-I/O state machine; this crate drives it
//! with one small task per connection behind the `Sender`/`Receiver` handles, or, with
//! [`WebSocket`], from the task that owns the connection and nothing else (the cheapest way to
//! run a receive-and-answer loop).
//!
//! ## A server
//!
//! ```no_run
//! # async fn run() -> Result<(), ferry::Error> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     tokio::spawn(async move {
//!         let Ok((sender, mut receiver)) = ferry::accept(stream).await else { return };
//!         while let Some(ferry::Incoming::Message(message)) = receiver.recv().await {
//!             if sender.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     });
//! }
//! # }
//! ```
//!
//! ## A client
//!
//! ```no_run
//! # async fn run() -> Result<(), ferry::Error> {
//! use ferry::{CloseCode, Incoming, Message};
//! let (sender, mut receiver, _response) = ferry::connect("ws://127.0.0.1:9001/").await?;
//! sender.send(Message::text("hello")).await?;
//! if let Some(Incoming::Message(reply)) = receiver.recv().await {
//!     println!("got {reply:?}");
//! }
//! sender.close(CloseCode::NORMAL, "done").await;
//! # Ok(()) }
//! ```
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `ring` | yes | `wss://` with rustls and the ring crypto provider |
//! | `aws-lc-rs` | no | `wss://` with rustls and the aws-lc-rs provider instead (with both on, ring is used) |
//! | `tls` | with either | `wss://` with the provider the process installed (`rustls::crypto::CryptoProvider::install_default`) |
//! | `webpki-roots` | yes | the Mozilla root store compiled in, trusted by default |
//! | `native-roots` | yes | the platform's store, with `TlsOptions::platform_roots` |
//! | `deflate` | yes | permessage-deflate (RFC 7692); without it no handshake offers or accepts it |
//! | `hyper` | no | `ferry::upgrade` (WebSockets inside hyper and axum, HTTP/1.1 and HTTP/2) and `ferry::http2` (the client over HTTP/2) |
//!
//! A build without TLS (`default-features = false` and none of `ring`, `aws-lc-rs`, `tls`)
//! refuses `wss://` URLs with [`Error::TlsConfig`] naming the features. A provider the process
//! installed wins over the compiled-in ones. Unix-socket transports (`ws+unix://`) exist on Unix
//! only; elsewhere connecting to one is an [`Error::Io`] of kind `Unsupported`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod address;
mod client;
mod config;
mod error;
mod handler;
#[cfg(feature = "hyper")]
pub mod http2;
mod origin;
pub mod proxy;
pub mod pubsub;
pub mod reconnect;
mod server;
mod socket;
mod target;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "hyper")]
pub mod upgrade;

pub use address::{Address, Transport};
#[cfg(feature = "tls")]
pub use client::tls_handshake;
pub use client::{connect, connect_stream, connect_with};
pub use config::Config;
pub use error::{Error, SendError, TrySendError};
pub use handler::{Handler, serve, serve_with};
pub use origin::{InvalidOrigin, OriginPolicy};
pub use server::{
    accept, accept_with, accept_with_parts, accept_with_request, from_accepted, from_raw,
    websocket_from_accepted,
};
pub use socket::{
    Drive, Incoming, MessageSink, Overflow, Receiver, SendMessage, Sender, WebSocket,
};
pub use target::IntoClientRequest;

/// The protocol core, for those who need the state machine itself.
pub use ferry_proto as proto;
pub use ferry_proto::extension::deflate::{DeflateConfig, DeflateParams};
pub use ferry_proto::handshake::{Refusal, Request, Response};
pub use ferry_proto::{
    CloseCode, CloseInfo, FrameEncoding, Initiator, Keepalive, Limits, Message, PreparedFrame,
    PreparedMessage, Role, Utf8Bytes,
};
