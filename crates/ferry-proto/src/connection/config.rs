//! A connection's settings after the handshake.

use std::time::Duration;

use crate::limits::Limits;

/// Keepalive: ping the peer every `interval`, and fail the connection with 1011 if no pong
/// arrives within `timeout` of a ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Time between pings.
    pub interval: Duration,
    /// Time allowed for the pong.
    pub timeout: Duration,
}

/// Connection settings after the handshake.
///
/// ```
/// use ferry_proto::{Config, Keepalive, Limits};
/// use std::time::Duration;
/// let config = Config {
///     keepalive: Some(Keepalive { interval: Duration::from_secs(20), timeout: Duration::from_secs(20) }),
///     ..Config::default()
/// };
/// assert_eq!(config.limits, Limits::default());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Resource limits.
    pub limits: Limits,
    /// Split outgoing messages longer than this into frames of at most this many bytes, so
    /// control frames can interleave: a pong or a ping then waits behind at most one
    /// fragment, however much is queued. `None` (the default) sends each message as one frame,
    /// which a control frame cannot cut (RFC 6455 §5.4).
    pub fragment_size: Option<usize>,
    /// Periodic pings; off by default.
    pub keepalive: Option<Keepalive>,
    /// A fixed masking key instead of a fresh random one per frame. For tests and fuzzing only:
    /// predictable masks defeat their purpose (RFC 6455 §10.3).
    #[doc(hidden)]
    pub fixed_mask: Option<[u8; 4]>,
}
