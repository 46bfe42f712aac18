//! ferry's WebSockets in [axum](https://docs.rs/axum): an extractor with the shape of axum's own
//! `WebSocketUpgrade`, whose connections are ferry's: permessage-deflate (on by default), every
//! limit of [`ferry::Limits`], bounded send queues, keepalive pings, and the same handler over
//! HTTP/1.1 and HTTP/2 (RFC 8441).
//!
//! ```no_run
//! use axum::{Router, response::Response, routing::any};
//! use ferry_axum::WebSocketUpgrade;
//!
//! async fn echo(ws: WebSocketUpgrade) -> Response {
//!     ws.on_upgrade(|sender, mut receiver| async move {
//!         while let Some(message) = receiver.recv_message().await {
//!             if sender.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! # async fn run() {
//! // `any`, not `get`: over HTTP/2 a WebSocket opens with CONNECT.
//! let app = Router::new().route("/ws", any(echo));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! `axum::serve` allows HTTP/2 WebSockets (extended CONNECT) by default. A request that is not a
//! valid WebSocket handshake is answered by the extractor: 400, 405, 426 (with
//! `Sec-WebSocket-Version: 13` where the version is wrong), 501 for an HTTP/2 `:protocol`
//! other than websocket, with a one-line body that echoes nothing.

use std::future::Future;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::Version;
use axum::http::request::Parts;
use axum::response::Response;
use ferry::upgrade::{Upgrade, UpgradedIo, refusal_response};
use ferry::{Config, DeflateConfig, Limits, Receiver, Request, Sender, WebSocket};
use tokio::net::TcpStream;

/// A WebSocket request, extracted: configure it, then answer it with
/// [`on_upgrade`](Self::on_upgrade).
#[derive(Debug)]
pub struct WebSocketUpgrade {
    upgrade: Upgrade,
    config: Config,
    version: Version,
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    /// The handshake's refusal, as a response.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match Upgrade::from_parts(parts) {
            Ok(upgrade) => Ok(WebSocketUpgrade {
                upgrade,
                config: Config::default(),
                version: parts.version,
            }),
            Err(err) => Err(refusal_response::<Body>(&err.refusal(), parts.version)),
        }
    }
}

impl WebSocketUpgrade {
    /// The subprotocols this server speaks, in its order of preference: the first one the
    /// client offered is chosen, and none if it offered none of them.
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.config.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// The limits of the connection: message and frame sizes, fragments, queues, timeouts.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// permessage-deflate settings; `None` declines compression.
    pub fn deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.config.deflate = deflate;
        self
    }

    /// The whole connection configuration (limits, keepalive, compression, subprotocols).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The request: its path, headers, Origin, and the subprotocols and extensions offered.
    pub fn request(&self) -> &Request {
        self.upgrade.request()
    }

    /// Whether the WebSocket is a stream of an HTTP/2 connection rather than an HTTP/1.1
    /// connection of its own.
    pub fn is_http2(&self) -> bool {
        self.version == Version::HTTP_2
    }

    /// Accepts the WebSocket: returns the response for the handler to return (101, or 200 over
    /// HTTP/2), and runs `callback` with the connection's two halves once axum has sent it.
    pub fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(Sender, Receiver) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (response, pending) = self.upgrade.accept::<Body>(&self.config);
        tokio::spawn(async move {
            // Fails only when the client went away before the response reached it.
            if let Ok((sender, receiver)) = pending.websocket().await {
                callback(sender, receiver).await;
            }
        });
        response
    }

    /// Accepts the WebSocket like [`on_upgrade`](Self::on_upgrade), but runs `callback` with a
    /// single-task [`WebSocket`] that the callback's own task drives: no connection task beside
    /// it and no queues between tasks, for a handler that only answers what it receives. Over
    /// HTTP/1.1 the WebSocket runs on axum's TCP socket itself, over HTTP/2 on hyper's stream.
    ///
    /// ```no_run
    /// use axum::response::Response;
    /// use ferry_axum::WebSocketUpgrade;
    ///
    /// async fn echo(ws: WebSocketUpgrade) -> Response {
    ///     ws.on_upgrade_websocket(|mut ws| async move {
    ///         while let Some(message) = ws.recv_message().await {
    ///             if ws.send(message).await.is_err() {
    ///                 break;
    ///             }
    ///         }
    ///     })
    /// }
    /// ```
    pub fn on_upgrade_websocket<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(WebSocket<UpgradedIo<TcpStream>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (response, pending) = self.upgrade.accept::<Body>(&self.config);
        // Boxed: the task keeps its size for the connection's life, and the wait for the
        // stream is needed only until it comes.
        let upgrading = Box::pin(pending.into_websocket());
        tokio::spawn(async move {
            // Fails only when the client went away before the response reached it.
            if let Ok(ws) = upgrading.await {
                callback(ws).await;
            }
        });
        response
    }
}
