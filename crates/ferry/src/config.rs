//! Connection configuration shared by clients and servers.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::extension::deflate::DeflateConfig;
use ferry_proto::{Keepalive, Limits};

/// How a connection is set up and run.
///
/// Plain data with safe defaults; build it with struct update syntax. permessage-deflate is on
/// by default, with the decompressed size always bounded by `Limits::max_message_size`.
///
/// ```
/// use ferry::{Config, Limits};
/// let config = Config {
///     limits: Limits { max_message_size: 16 << 20, max_frame_size: 16 << 20, ..Limits::default() },
///     protocols: vec!["chat".into()],
///     ..Config::default()
/// };
/// assert_eq!(config.limits.max_message_size, 16 << 20);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// Resource limits; see [`Limits`] for each default.
    pub limits: Limits,
    /// Periodic pings with a pong deadline. Off by default.
    pub keepalive: Option<Keepalive>,
    /// Split outgoing messages into frames of at most this many bytes. Off by default.
    pub fragment_size: Option<usize>,
    /// Subprotocols. A client offers them in this order; a server picks the first of these the
    /// client offered, or none.
    pub protocols: Vec<String>,
    /// Client only: the Origin header to send.
    pub origin: Option<String>,
    /// Client only: extra request headers.
    pub headers: Vec<(String, String)>,
    /// permessage-deflate (RFC 7692): a client offers it, a server accepts the first acceptable
    /// offer. `None` turns compression off. See `docs/compression.md`.
    pub deflate: Option<DeflateConfig>,
    /// Client only: time allowed to open the TCP (or Unix socket) connection. 10 s by default.
    pub connect_timeout: Duration,
    /// Client only: time allowed for the TLS handshake of a `wss://` connection. 10 s by default.
    /// (The WebSocket handshake that follows has `Limits::handshake_timeout`.)
    pub tls_timeout: Duration,
    /// Client only: the TLS configuration for `wss://`. `None` checks servers against the
    /// built-in Mozilla roots; build one with [`TlsOptions`](crate::tls::TlsOptions) for a
    /// private CA or a client certificate. (Feature `tls`, on by default through `ring`.)
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<crate::tls::ClientConfig>>,
    /// Client only: the proxy for `ws://` and `wss://` URLs. None by default; see
    /// [`ProxySetting`](crate::proxy::ProxySetting).
    pub proxy: crate::proxy::ProxySetting,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            keepalive: None,
            fragment_size: None,
            protocols: Vec::new(),
            origin: None,
            headers: Vec::new(),
            // A build without the codec has nothing to offer (see the `deflate` feature).
            deflate: cfg!(feature = "deflate").then(DeflateConfig::default),
            connect_timeout: Duration::from_secs(10),
            tls_timeout: Duration::from_secs(10),
            #[cfg(feature = "tls")]
            tls: None,
            proxy: crate::proxy::ProxySetting::None,
        }
    }
}

impl Config {
    /// A config with keepalive pings every `interval`, failing after `timeout` without a pong.
    pub fn with_keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive = Some(Keepalive { interval, timeout });
        self
    }

    /// This config without compression.
    pub fn without_deflate(mut self) -> Self {
        self.deflate = None;
        self
    }

    /// The protocol settings a connection with this config runs with (limits, fragment size,
    /// keepalive), for building one with
    /// [`Request::accept_connection`](ferry_proto::handshake::Request::accept_connection). It is
    /// shared: connections built one after another on a thread with equal settings hold one
    /// copy between them.
    pub fn proto(&self) -> Arc<ferry_proto::Config> {
        thread_local! {
            /// The settings the last connection on this thread was built with.
            static LAST: RefCell<Option<Arc<ferry_proto::Config>>> = const { RefCell::new(None) };
        }
        let config = ferry_proto::Config {
            limits: self.limits.clone(),
            fragment_size: self.fragment_size,
            keepalive: self.keepalive,
            ..ferry_proto::Config::default()
        };
        // Shared with the connections before this one while the settings stay the same (a
        // server's usually do): each connection holds its protocol settings for its whole life,
        // and a copy each is 144 bytes per idle connection (docs/memory.md). Comparing costs
        // far less than the handshake that comes with it.
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            match last.as_ref() {
                Some(shared) if **shared == config => shared.clone(),
                _ => last.insert(Arc::new(config)).clone(),
            }
        })
    }
}
