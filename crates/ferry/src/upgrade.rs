//! WebSockets inside hyper, and so inside anything built on it (axum): an HTTP/1.1 Upgrade or an
//! HTTP/2 extended CONNECT (RFC 8441) is checked with ferry's handshake rules, answered through
//! the HTTP server, and run by ferry once the server hands the stream over.
//!
//! An echo handler for a hyper `service_fn` (any body type with `Default` and `From<String>`):
//!
//! ```
//! use ferry::upgrade::{refusal_response, Upgrade};
//!
//! async fn handle<B: Default + From<String>>(
//!     mut req: http::Request<B>,
//! ) -> http::Response<B> {
//!     let upgrade = match Upgrade::from_request(&mut req) {
//!         Ok(upgrade) => upgrade,
//!         Err(err) => return refusal_response(&err.refusal(), req.version()),
//!     };
//!     let (response, pending) = upgrade.accept(&ferry::Config::default());
//!     tokio::spawn(async move {
//!         let Ok((sender, mut receiver)) = pending.websocket().await else { return };
//!         while let Some(message) = receiver.recv_message().await {
//!             if sender.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     });
//!     response
//! }
//! ```
//!
//! hyper serves HTTP/1.1 upgrades only on a connection served `with_upgrades()`, and HTTP/2
//! WebSockets only with `enable_connect_protocol()` on its HTTP/2 builder.
//!
//! [`PendingWebSocket::websocket`] gives the `Sender`/`Receiver` handles, with a connection
//! task of their own; [`PendingWebSocket::into_websocket`] gives a single-task
//! [`WebSocket`] that the awaiting task drives, for a handler that only
//! answers what it receives (one task and no queues per connection).

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;

use ferry_proto::handshake::{Accepted, HandshakeError, Refusal, Request};
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::error::Error;
use crate::socket::{Receiver, Sender, WebSocket};

/// Why a request cannot become a WebSocket; [`refusal`](Self::refusal) is the answer to send.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The request breaks the handshake's rules (RFC 6455 §4.2.1, RFC 8441 §4).
    Handshake(HandshakeError),
    /// The request did not come from a hyper server connection that can hand its stream over
    /// (hyper puts an `OnUpgrade` in the request's extensions). 500: the server's fault.
    NotUpgradable,
}

impl UpgradeError {
    /// The HTTP refusal: 400, 405, 426 or 431 as the handshake error says, 501 for an HTTP/2
    /// `:protocol` other than websocket, 500 for [`NotUpgradable`](Self::NotUpgradable).
    /// Answer with [`refusal_response`].
    pub fn refusal(&self) -> Refusal {
        match self {
            UpgradeError::Handshake(err) => err
                .refusal()
                .unwrap_or_else(|| Refusal::new(400, "bad WebSocket handshake")),
            UpgradeError::NotUpgradable => Refusal::new(
                500,
                "this HTTP server cannot hand connections over to WebSockets",
            ),
        }
    }
}

impl std::fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpgradeError::Handshake(err) => err.fmt(f),
            UpgradeError::NotUpgradable => {
                f.write_str("the request came from no hyper connection that can upgrade")
            }
        }
    }
}

impl std::error::Error for UpgradeError {}

/// A valid WebSocket request, not yet answered: look at it (path, Origin, subprotocols,
/// [`is_http2`](Request::is_http2)), then [`accept`](Self::accept) it or answer with a
/// [`refusal_response`].
#[derive(Debug)]
pub struct Upgrade {
    request: Request,
    on_upgrade: OnUpgrade,
}

impl Upgrade {
    /// Reads a request that asks for a WebSocket: over HTTP/1.1 a GET with `Upgrade: websocket`
    /// (RFC 6455 §4.2.1), over HTTP/2 a CONNECT with `:protocol websocket` (RFC 8441 §4).
    /// An error's [`refusal`](UpgradeError::refusal) is the status and one-line body to answer
    /// with.
    pub fn from_request<B>(req: &mut http::Request<B>) -> Result<Upgrade, UpgradeError> {
        let (method, uri, version) = (req.method().clone(), req.uri().clone(), req.version());
        let headers = std::mem::take(req.headers_mut());
        let result = read(&method, &uri, version, &headers, req.extensions_mut());
        *req.headers_mut() = headers;
        result
    }

    /// [`from_request`](Self::from_request) on the parts of a request, as an extractor sees
    /// them (axum's `FromRequestParts`).
    pub fn from_parts(parts: &mut Parts) -> Result<Upgrade, UpgradeError> {
        read(
            &parts.method,
            &parts.uri,
            parts.version,
            &parts.headers,
            &mut parts.extensions,
        )
    }

    /// The request: path, headers, Origin, the subprotocols and extensions offered.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Accepts with `config`: its subprotocols (the first of `config.protocols` the client
    /// offered), its permessage-deflate settings and its limits. Returns the response to send
    /// (101, or 200 over HTTP/2, with the negotiated headers) and the WebSocket to come.
    pub fn accept<B: Default>(self, config: &Config) -> (http::Response<B>, PendingWebSocket) {
        let protocols: Vec<&str> = config.protocols.iter().map(String::as_str).collect();
        self.accept_with_protocols(config, &protocols)
    }

    /// [`accept`](Self::accept), choosing among `protocols` instead of `config.protocols`.
    pub fn accept_with_protocols<B: Default>(
        mut self,
        config: &Config,
        protocols: &[&str],
    ) -> (http::Response<B>, PendingWebSocket) {
        let accepted = self.request.accept_connection(
            protocols,
            config.deflate.as_ref(),
            config.proto(),
            Instant::now(),
        );
        let mut response = http::Response::new(B::default());
        // 101 for an HTTP/1.1 upgrade, 200 for an HTTP/2 extended CONNECT (RFC 8441 §5).
        *response.status_mut() = StatusCode::from_u16(accepted.status).unwrap_or(StatusCode::OK);
        for (name, value) in &accepted.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(*name),
                HeaderValue::try_from(value.as_ref()),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        let pending = PendingWebSocket {
            accepted,
            on_upgrade: self.on_upgrade,
        };
        (response, pending)
    }
}

fn read(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    extensions: &mut Extensions,
) -> Result<Upgrade, UpgradeError> {
    // Copied once, into the request's own buffer.
    let pairs = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()));
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let parsed = if version == Version::HTTP_2 {
        Request::from_extended_connect(
            method.as_str(),
            extensions
                .get::<hyper::ext::Protocol>()
                .map(hyper::ext::Protocol::as_str),
            uri.authority().map(|a| a.as_str()),
            path,
            pairs,
        )
    } else {
        let minor = match version {
            Version::HTTP_09 | Version::HTTP_10 => 0,
            _ => 1,
        };
        Request::from_parts(method.as_str(), minor, path, pairs)
    };
    let request = parsed.map_err(UpgradeError::Handshake)?;
    let on_upgrade = extensions
        .remove::<OnUpgrade>()
        .ok_or(UpgradeError::NotUpgradable)?;
    Ok(Upgrade {
        request,
        on_upgrade,
    })
}

/// An accepted WebSocket, waiting for the HTTP server to send the response and hand the stream
/// over.
#[derive(Debug)]
pub struct PendingWebSocket {
    accepted: Accepted,
    on_upgrade: OnUpgrade,
}

impl PendingWebSocket {
    /// The subprotocol chosen, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.accepted.protocol.as_deref()
    }

    /// Whether permessage-deflate was agreed.
    pub fn compressed(&self) -> bool {
        self.accepted.deflate.is_some()
    }

    /// Waits for the stream and starts the WebSocket. Over HTTP/1.1 on TCP it runs on the
    /// socket itself, with whatever hyper read past the request; over TLS or HTTP/2, through
    /// hyper's stream.
    pub async fn websocket(self) -> Result<(Sender, Receiver), Error> {
        self.websocket_on::<TcpStream>().await
    }

    /// [`websocket`](Self::websocket) for a server whose connections are `S` (a TLS stream,
    /// say): a WebSocket on such a connection runs on `S` itself.
    pub async fn websocket_on<S>(self) -> Result<(Sender, Receiver), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let upgraded = self.on_upgrade.await.map_err(std::io::Error::other)?;
        Ok(start_on::<S>(upgraded, self.accepted))
    }

    /// Waits for the stream and returns the WebSocket as a single-task [`WebSocket`], driven
    /// by the task that awaits it: no connection task of its own, no queues between tasks. For
    /// a handler that only answers what it receives; [`websocket`](Self::websocket) gives
    /// handles for sending from other tasks. On a hyper server over TCP.
    ///
    /// ```
    /// # async fn handle(pending: ferry::upgrade::PendingWebSocket) {
    /// let Ok(mut ws) = pending.into_websocket().await else { return };
    /// while let Some(message) = ws.recv_message().await {
    ///     if ws.send(message).await.is_err() {
    ///         break;
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn into_websocket(self) -> Result<WebSocket<UpgradedIo<TcpStream>>, Error> {
        self.into_websocket_on::<TcpStream>().await
    }

    /// [`into_websocket`](Self::into_websocket) for a server whose connections are `S` (a TLS
    /// stream, say): over HTTP/1.1 the WebSocket runs on `S` itself, else on hyper's stream.
    pub async fn into_websocket_on<S>(self) -> Result<WebSocket<UpgradedIo<S>>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let upgraded = self.on_upgrade.await.map_err(std::io::Error::other)?;
        let (io, leftover) = take_back::<S>(upgraded);
        Ok(crate::websocket_from_accepted(io, self.accepted, &leftover))
    }
}

/// The stream under a WebSocket accepted through hyper as a single-task [`WebSocket`]: the
/// connection's own stream when hyper could hand it back (HTTP/1.1 on an `S`), else hyper's
/// (an HTTP/2 stream, or a connection of another type).
#[derive(Debug)]
pub enum UpgradedIo<S> {
    /// The connection's own stream, taken back from hyper.
    Own(S),
    /// hyper's stream: an HTTP/2 stream, or a connection that is not an `S`.
    ///
    /// Boxed: it is the rarer kind (HTTP/2), and inline it would make every WebSocket on the
    /// common kind a word larger, for each idle connection's whole life (docs/memory.md).
    Hyper(Box<TokioIo<Upgraded>>),
}

impl<S> UpgradedIo<S> {
    /// The connection's own stream, if the WebSocket runs on it.
    pub fn own(&self) -> Option<&S> {
        match self {
            UpgradedIo::Own(io) => Some(io),
            UpgradedIo::Hyper(_) => None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for UpgradedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpgradedIo::Own(io) => Pin::new(io).poll_read(cx, buf),
            UpgradedIo::Hyper(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for UpgradedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpgradedIo::Own(io) => Pin::new(io).poll_write(cx, buf),
            UpgradedIo::Hyper(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpgradedIo::Own(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            UpgradedIo::Hyper(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpgradedIo::Own(io) => io.is_write_vectored(),
            UpgradedIo::Hyper(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpgradedIo::Own(io) => Pin::new(io).poll_flush(cx),
            UpgradedIo::Hyper(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpgradedIo::Own(io) => Pin::new(io).poll_shutdown(cx),
            UpgradedIo::Hyper(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }
}

/// The stream hyper hands over, as the connection's own `S` with what hyper read past the
/// request when it can be, else as hyper's stream.
fn take_back<S>(upgraded: Upgraded) -> (UpgradedIo<S>, Bytes)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgraded = match upgraded.downcast::<TokioIo<S>>() {
        Ok(parts) => return (UpgradedIo::Own(parts.io.into_inner()), parts.read_buf),
        Err(upgraded) => upgraded,
    };
    match hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<S>>(upgraded) {
        Ok(parts) => (UpgradedIo::Own(parts.io.into_inner()), parts.read_buf),
        Err(upgraded) => (
            UpgradedIo::Hyper(Box::new(TokioIo::new(upgraded))),
            Bytes::new(),
        ),
    }
}

/// Runs the WebSocket on the connection's own stream when it is an `S` (served by hyper
/// directly, or through hyper-util's version-sniffing server), else on hyper's stream.
fn start_on<S>(upgraded: Upgraded, accepted: Accepted) -> (Sender, Receiver)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match take_back::<S>(upgraded) {
        (UpgradedIo::Own(io), leftover) => crate::from_accepted(io, accepted, &leftover),
        (UpgradedIo::Hyper(io), leftover) => crate::from_accepted(*io, accepted, &leftover),
    }
}

/// The HTTP answer to a refused handshake: its status, headers and one-line body. Over HTTP/2,
/// headers HTTP/2 forbids (Upgrade) are left out.
pub fn refusal_response<B: From<String>>(refusal: &Refusal, version: Version) -> http::Response<B> {
    let mut response = http::Response::new(B::from(format!("{}\n", refusal.body)));
    *response.status_mut() =
        StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for (name, value) in &refusal.headers {
        if version == Version::HTTP_2 && name.eq_ignore_ascii_case("upgrade") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(*name),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.insert(name, value);
        }
    }
    response
}
