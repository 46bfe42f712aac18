//! The opening handshake (RFC 6455 §4): an HTTP/1.1 Upgrade request and its 101 response.
//!
//! Both sides buffer the header block, search only the newly arrived bytes for its end, and
//! parse it once with `httparse` when it is complete: linear in its size, however it is split
//! (tungstenite's CVE-2023-43669 was a quadratic re-parse on every read). The block is bounded
//! by `Limits::max_handshake_bytes` and `Limits::max_headers`.

mod client;
mod error;
mod headers;
mod key;
mod server;

pub use client::{ClientHandshake, ClientRequest, Response};
pub use error::{HandshakeError, Refusal};
pub use server::{Accepted, Request, ServerHandshake};

use sha1::{Digest, Sha1};

/// The GUID appended to the key before hashing (RFC 6455 §1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)) (§4.2.2).
///
/// ```
/// // The example from RFC 6455 §1.3.
/// assert_eq!(ferry_proto::handshake::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    key::encode_digest(&sha.finalize().into())
}

/// Whether a comma-separated header value contains `token`, compared case-insensitively
/// (`Connection: keep-alive, Upgrade`).
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Splits a comma-separated header value into trimmed, non-empty items.
pub(crate) fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Finds the end of an HTTP header block (`\r\n\r\n`), searching only from `from` on, where
/// `from` lets a caller skip the bytes it already searched. Returns the index just past it.
pub(crate) fn find_header_end(buf: &[u8], from: usize) -> Option<usize> {
    // Back up 3 bytes: the terminator may straddle the previous search's end.
    let start = from.saturating_sub(3);
    buf.get(start..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| start + i + 4)
}

/// A header name must be an HTTP token and a value must not contain CR, LF or NUL, or the
/// response could be split.
pub(crate) fn is_safe_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_case_insensitive_and_trimmed() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(has_token(b"UPGRADE", "upgrade"));
        assert!(!has_token(b"keep-alive, upgraded", "upgrade"));
        assert!(!has_token(b"", "upgrade"));
    }

    #[test]
    fn header_end_found_across_searches() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        // A caller's `from` is the length it had before: always short of the end.
        for from in 0..buf.len() - 4 {
            let end = find_header_end(buf, from);
            assert_eq!(end, Some(buf.len() - 4), "from {from}");
        }
        assert_eq!(find_header_end(b"GET / HTTP/1.1\r\n", 0), None);
    }
}
