//! Limits: every resource a peer can make a connection spend has a cap here.

use std::time::Duration;

/// Resource limits for one connection, with defaults safe for a public server.
///
/// Each field says what it bounds and what it costs. The defaults assume many connections per
/// process: a peer can make a connection hold at most about `max_message_size` for reassembly,
/// plus `send_queue_bytes` and `recv_queue_bytes` in the tokio layer. See `docs/limits.md`.
///
/// ```
/// use ferry_proto::Limits;
/// let limits = Limits { max_message_size: 16 << 20, max_frame_size: 16 << 20, ..Limits::default() };
/// assert_eq!(limits.max_fragments, Limits::default().max_fragments);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, after reassembly, in bytes. Default 1 MiB. Over it: close 1009.
    /// Memory: a message being received is buffered whole, so this is the per-connection
    /// worst case for reassembly.
    pub max_message_size: usize,
    /// Largest single frame payload, in bytes. Default 1 MiB. Over it: close 1009, decided from
    /// the frame header before the payload arrives.
    pub max_frame_size: usize,
    /// Most frames in one message, counting empty ones. Default 1024. Over it: close 1009.
    /// Bounds the CPU a peer can spend with floods of tiny fragments.
    pub max_fragments: usize,
    /// Largest opening-handshake header block, in bytes. Default 16 KiB. Over it: HTTP 431.
    pub max_handshake_bytes: usize,
    /// Most header fields in the opening handshake. Default 64. Over it: HTTP 431.
    pub max_headers: usize,
    /// Time allowed for the whole opening handshake. Default 10 s. Enforced by the I/O layer.
    pub handshake_timeout: Duration,
    /// Bytes of outgoing messages that may wait in a connection's send queue. Default 1 MiB.
    /// `send` waits and `try_send` refuses while a new message would go over it; a single
    /// message larger than the budget is accepted only into an empty queue.
    pub send_queue_bytes: usize,
    /// Bytes of received messages that may wait for the application to read them. Default
    /// 1 MiB. Past it the connection stops reading from the socket (TCP backpressure).
    pub recv_queue_bytes: usize,
    /// Time to wait for the peer's close frame after sending one, and for a server to close the
    /// TCP connection after the closing handshake. Default 5 s.
    pub close_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            max_fragments: 1024,
            max_handshake_bytes: 16 << 10,
            max_headers: 64,
            handshake_timeout: Duration::from_secs(10),
            send_queue_bytes: 1 << 20,
            recv_queue_bytes: 1 << 20,
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// The wire-size limit for a frame or message of a compressed message. Compressing data that
/// does not compress makes it slightly bigger (peers compress everything: 16 MiB of random
/// bytes from Python `websockets` is 0.25% bigger on the wire), so a message within
/// `max_message_size` must not be refused for its compressed size. The decompressed size is
/// held to the limit itself, as it is produced.
pub(crate) fn encoded_limit(limit: usize) -> usize {
    limit.saturating_add(limit / 16).saturating_add(1024)
}
