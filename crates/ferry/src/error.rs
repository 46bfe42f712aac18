//! Errors of the tokio layer.

use std::fmt;
use std::io;

use ferry_proto::Message;
use ferry_proto::handshake::HandshakeError;

/// Why connecting or accepting failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    Io(io::Error),
    /// The opening handshake failed; a server has already sent the refusal.
    Handshake(HandshakeError),
    /// The opening handshake did not complete within `Limits::handshake_timeout`.
    HandshakeTimeout,
    /// A URL ferry cannot connect to.
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server refused the request because the application said so (see
    /// [`accept_with_request`](crate::accept_with_request)).
    Refused(u16),
    /// The TCP or Unix socket connection was not open within `Config::connect_timeout`.
    ConnectTimeout,
    /// The TLS handshake failed: an untrusted or mismatched certificate, a protocol
    /// mismatch, or the connection ending mid-handshake.
    Tls(io::Error),
    /// The TLS handshake did not complete within `Config::tls_timeout`.
    TlsTimeout,
    /// The TLS settings cannot be used: an unreadable CA file, a key that does not match.
    TlsConfig(String),
    /// The proxy could not be reached, refused the tunnel, or wants other credentials.
    Proxy(String),
    /// The server does not offer WebSockets over HTTP/2 (RFC 8441), and why: no h2 in ALPN, no
    /// HTTP/2 at all, or SETTINGS that do not allow extended CONNECT.
    /// [`http2::connect`](crate::http2::connect) falls back to HTTP/1.1 instead.
    Http2Unavailable(&'static str),
    /// An `http::Request` given to [`connect`](crate::connect) that cannot open a WebSocket:
    /// not GET, or a header the handshake writes itself (Host, Upgrade, Connection,
    /// Sec-WebSocket-Key, -Version, -Extensions).
    InvalidRequest(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(err) => write!(f, "{err}"),
            Error::Handshake(err) => write!(f, "handshake failed: {err}"),
            Error::HandshakeTimeout => f.write_str("handshake timed out"),
            Error::InvalidUrl { url, reason } => write!(f, "invalid URL {url:?}: {reason}"),
            Error::Refused(status) => write!(f, "request refused with HTTP {status}"),
            Error::ConnectTimeout => f.write_str("connecting timed out"),
            Error::Tls(err) => write!(f, "TLS handshake failed: {err}"),
            Error::TlsTimeout => f.write_str("TLS handshake timed out"),
            Error::TlsConfig(err) => write!(f, "TLS settings: {err}"),
            Error::Proxy(err) => write!(f, "proxy: {err}"),
            Error::Http2Unavailable(why) => write!(f, "no WebSockets over HTTP/2: {why}"),
            Error::InvalidRequest(why) => write!(f, "invalid request: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(err) => Some(err),
            Error::Handshake(err) => Some(err),
            Error::Tls(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::Io(err)
    }
}

impl From<HandshakeError> for Error {
    fn from(err: HandshakeError) -> Self {
        Error::Handshake(err)
    }
}

/// [`Sender::send`](crate::Sender::send) failed: the connection is closing or closed. The message
/// is handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct SendError(pub Message);

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection is closing or closed")
    }
}

impl std::error::Error for SendError {}

/// [`Sender::try_send`](crate::Sender::try_send) did not queue the message; it is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError {
    /// The send queue is over its byte budget (`Limits::send_queue_bytes`). Try again once
    /// [`buffered_amount`](crate::Sender::buffered_amount) drops, or use `send().await`.
    Full(Message),
    /// The connection is closing or closed.
    Closed(Message),
}

impl TrySendError {
    /// The message that was not sent.
    pub fn into_message(self) -> Message {
        match self {
            TrySendError::Full(message) | TrySendError::Closed(message) => message,
        }
    }
}

impl fmt::Display for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("the send queue is full"),
            TrySendError::Closed(_) => f.write_str("the connection is closing or closed"),
        }
    }
}

impl std::error::Error for TrySendError {}

impl From<SendError> for Error {
    fn from(_: SendError) -> Self {
        Error::Io(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the connection is closing or closed",
        ))
    }
}
