//! Handshake errors, and the HTTP refusal a server sends for each.

use std::fmt;

/// Why an opening handshake failed.
///
/// On the server side each variant maps to an HTTP refusal ([`HandshakeError::refusal`]) with
/// the right status and a one-line body; on the client side it says what was wrong with the
/// server's response.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes are not a valid HTTP/1.1 message. 400.
    Malformed(&'static str),
    /// The header block is over `Limits::max_handshake_bytes`. 431.
    HeadersTooLarge {
        /// The limit.
        limit: usize,
    },
    /// More header fields than `Limits::max_headers`. 431.
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// A method other than GET (§4.1). 405.
    MethodNotAllowed,
    /// HTTP/1.0 (§4.1 requires HTTP/1.1 or later). 400.
    HttpVersion,
    /// No Host header (§4.1). 400.
    MissingHost,
    /// No `Upgrade: websocket`: a plain HTTP request to a WebSocket endpoint. 426.
    NotWebSocket,
    /// A Connection header without the `upgrade` token (§4.1). 400.
    MissingConnectionUpgrade,
    /// A missing Sec-WebSocket-Key, or one that does not decode to 16 bytes (§4.1). 400.
    InvalidKey,
    /// A Sec-WebSocket-Version other than 13 (§4.4). 426 with `Sec-WebSocket-Version: 13`.
    UnsupportedVersion,
    /// Over HTTP/2, a request to a WebSocket endpoint that is not an extended CONNECT
    /// (RFC 8441 §4: method CONNECT with a `:protocol` pseudo-header). 400: HTTP/2 has no
    /// Upgrade header to ask for.
    NotExtendedConnect,
    /// An extended CONNECT for a protocol other than `websocket`. 501, as RFC 9220 §3 advises:
    /// accepting extended CONNECT does not mean serving every protocol.
    UnknownProtocol,
    /// Client side: a header name or value that would break the request (CR, LF, or not a token).
    InvalidHeader(String),
    /// Client side: the server answered with a status other than 101 (over HTTP/2, other than
    /// 2xx).
    Status {
        /// The HTTP status code.
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// Client side: the 101 lacks `Upgrade: websocket`.
    MissingUpgrade,
    /// Client side: the 101 lacks `Connection: upgrade`.
    MissingConnection,
    /// Client side: Sec-WebSocket-Accept is missing or does not match the key.
    InvalidAccept,
    /// Client side: the server chose a subprotocol that was not offered.
    UnexpectedProtocol(String),
    /// Client side: the server chose an extension that was not offered.
    UnexpectedExtension(String),
    /// Client side: the server's extension parameters break the extension's rules (RFC 7692
    /// §5: unknown, duplicate or invalid parameters, or ones this end cannot honour).
    InvalidExtension(String),
    /// The peer closed the connection before the handshake completed.
    Eof,
}

impl HandshakeError {
    /// The HTTP refusal a server sends for this error, or `None` for client-side errors.
    pub fn refusal(&self) -> Option<Refusal> {
        use HandshakeError::*;
        let refusal = match self {
            Malformed(what) => Refusal::new(400, format!("malformed HTTP request: {what}")),
            HeadersTooLarge { limit } => {
                Refusal::new(431, format!("request header block over {limit} bytes"))
            }
            TooManyHeaders { limit } => {
                Refusal::new(431, format!("more than {limit} request headers"))
            }
            MethodNotAllowed => {
                Refusal::new(405, "a WebSocket handshake must use GET").header("Allow", "GET")
            }
            HttpVersion => Refusal::new(400, "a WebSocket handshake needs HTTP/1.1 or later"),
            MissingHost => Refusal::new(400, "missing Host header"),
            NotWebSocket => {
                Refusal::new(426, "this is a WebSocket endpoint: send Upgrade: websocket")
                    .header("Upgrade", "websocket")
                    .header("Sec-WebSocket-Version", "13")
            }
            MissingConnectionUpgrade => {
                Refusal::new(400, "Connection header must contain the upgrade token")
            }
            InvalidKey => Refusal::new(400, "Sec-WebSocket-Key must be 16 bytes in base64"),
            UnsupportedVersion => Refusal::new(
                426,
                "unsupported Sec-WebSocket-Version: only 13 is supported",
            )
            .header("Sec-WebSocket-Version", "13"),
            NotExtendedConnect => Refusal::new(
                400,
                "this is a WebSocket endpoint: over HTTP/2 send CONNECT with :protocol websocket",
            ),
            UnknownProtocol => Refusal::new(501, "the only :protocol served here is websocket"),
            InvalidHeader(_)
            | Status { .. }
            | MissingUpgrade
            | MissingConnection
            | InvalidAccept
            | UnexpectedProtocol(_)
            | UnexpectedExtension(_)
            | InvalidExtension(_)
            | Eof => return None,
        };
        Some(refusal)
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HandshakeError::*;
        match self {
            InvalidHeader(name) => write!(f, "invalid request header {name:?}"),
            Status { code, reason } => {
                let sep = if reason.is_empty() { "" } else { " " };
                write!(
                    f,
                    "server answered HTTP {code}{sep}{reason} instead of accepting the WebSocket"
                )
            }
            MissingUpgrade => f.write_str("response lacks Upgrade: websocket"),
            MissingConnection => f.write_str("response lacks Connection: upgrade"),
            InvalidAccept => f.write_str("Sec-WebSocket-Accept does not match the key"),
            UnexpectedProtocol(p) => {
                write!(f, "server chose subprotocol {p:?}, which was not offered")
            }
            UnexpectedExtension(e) => {
                write!(f, "server chose extension {e:?}, which was not offered")
            }
            Eof => f.write_str("connection closed during the handshake"),
            other => match other.refusal() {
                Some(refusal) => write!(f, "{} ({})", refusal.body, refusal.status),
                None => f.write_str("handshake failed"),
            },
        }
    }
}

impl std::error::Error for HandshakeError {}

/// An HTTP error response that refuses a handshake: a status, a few headers and a one-line
/// plain-text body. The body never echoes request input.
///
/// ```
/// use ferry_proto::handshake::Refusal;
/// let bytes = Refusal::new(404, "no such endpoint").to_bytes();
/// assert!(bytes.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
/// assert!(bytes.ends_with(b"\r\n\r\nno such endpoint\n"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// One line of text, sent with a trailing newline.
    pub body: String,
}

impl Refusal {
    /// A refusal with a status and a body line.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Refusal {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The whole response, ready to write. It asks the client to close the connection.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}\n",
            self.body.len() + 1,
            self.body
        ));
        out.into_bytes()
    }
}

/// The standard reason phrase for the statuses ferry sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}
