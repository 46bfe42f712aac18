//! Accepting WebSocket connections on any transport.

use bytes::Bytes;
use ferry_proto::extension::deflate::DeflateParams;
use ferry_proto::handshake::{Accepted, HandshakeError, Refusal, Request, ServerHandshake};
use ferry_proto::{Connection, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::Config;
use crate::error::Error;
use crate::socket::{self, Receiver, Sender, WebSocket};

/// Accepts a WebSocket connection on `stream` with the default [`Config`], on any path.
///
/// Reads and validates the opening handshake (bounded by `Limits::handshake_timeout` and
/// `Limits::max_handshake_bytes`), answers 101, and starts the connection. A bad request gets
/// the right HTTP refusal (400, 405, 426, 431) before the error is returned.
///
/// For TCP, set `TCP_NODELAY` on the stream first: WebSocket messages are latency-sensitive and
/// ferry already batches its writes.
pub async fn accept<S>(stream: S) -> Result<(Sender, Receiver), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    accept_with(stream, &Config::default()).await
}

/// Accepts with a given [`Config`]: limits, keepalive, and the subprotocols to choose from.
pub async fn accept_with<S>(stream: S, config: &Config) -> Result<(Sender, Receiver), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, receiver, _request) = accept_with_request(stream, config, |_| Ok(())).await?;
    Ok((sender, receiver))
}

/// Accepts after letting `check` look at the request (path, Origin, headers) and refuse it.
///
/// `check` returns `Err(refusal)` to answer with that HTTP error instead of upgrading; the
/// function then returns [`Error::Refused`]. On success the request is returned with the
/// handles, so the caller can route on its path.
///
/// ```no_run
/// # async fn f(stream: tokio::net::TcpStream) -> Result<(), ferry::Error> {
/// use ferry::{Config, Refusal};
/// let (sender, receiver, request) = ferry::accept_with_request(stream, &Config::default(), |req| {
///     if req.path() == "/chat" { Ok(()) } else { Err(Refusal::new(404, "no such endpoint")) }
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn accept_with_request<S, F>(
    stream: S,
    config: &Config,
    check: F,
) -> Result<(Sender, Receiver, Request), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(&Request) -> Result<(), Refusal>,
{
    let (ws, request, ()) = accept_websocket(stream, config, check).await?;
    let (sender, receiver) = ws.split();
    Ok((sender, receiver, request))
}

/// Accepts after letting `check` see the request as the `http` crate's
/// [`Parts`](http::request::Parts) (method, URI, version, headers), the type hyper, axum and
/// tower code already works with; otherwise like [`accept_with_request`].
///
/// ```no_run
/// # async fn f(stream: tokio::net::TcpStream) -> Result<(), ferry::Error> {
/// use ferry::{Config, Refusal};
/// let (sender, receiver, parts) = ferry::accept_with_parts(stream, &Config::default(), |parts| {
///     match parts.headers.get(http::header::AUTHORIZATION) {
///         Some(value) if value == "Bearer open-sesame" => Ok(()),
///         _ => Err(Refusal::new(401, "a bearer token is needed")),
///     }
/// })
/// .await?;
/// println!("a WebSocket on {}", parts.uri.path());
/// # Ok(()) }
/// ```
pub async fn accept_with_parts<S, F>(
    stream: S,
    config: &Config,
    check: F,
) -> Result<(Sender, Receiver, http::request::Parts), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(&http::request::Parts) -> Result<(), Refusal>,
{
    let (ws, _request, parts) = accept_websocket(stream, config, |request| {
        let parts = http_parts(request)?;
        check(&parts)?;
        Ok(parts)
    })
    .await?;
    let (sender, receiver) = ws.split();
    Ok((sender, receiver, parts))
}

/// The request as `http` types. The handshake already checked the method, version and header
/// syntax; what `http` is stricter about (a header value with bytes `http` refuses, a
/// request-target it cannot parse) is refused with 400.
fn http_parts(request: &Request) -> Result<http::request::Parts, Refusal> {
    let mut builder = http::Request::get(request.path()).version(http::Version::HTTP_11);
    for (name, value) in request.headers() {
        builder = builder.header(name, value);
    }
    builder
        .body(())
        .map(|request| request.into_parts().0)
        .map_err(|_| Refusal::new(400, "the request cannot be represented as HTTP types"))
}

/// The server's opening handshake (RFC 6455 §4.2): read and check the request, answer it, and
/// build the connection, driven by the calling task until it is split. What `check` makes of
/// the request comes back with it.
pub(crate) async fn accept_websocket<S, F, T>(
    mut stream: S,
    config: &Config,
    check: F,
) -> Result<(WebSocket<S>, Request, T), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(&Request) -> Result<T, Refusal>,
{
    let timeout = config.limits.handshake_timeout;
    let read = tokio::time::timeout(timeout, read_request(&mut stream, config)).await;
    let mut request = match read {
        Err(_) => {
            let refusal = Refusal::new(408, "handshake timed out");
            let _ = write_refusal(&mut stream, &refusal).await;
            return Err(Error::HandshakeTimeout);
        }
        Ok(Err(Error::Handshake(err))) => {
            if let Some(refusal) = err.refusal() {
                let _ = write_refusal(&mut stream, &refusal).await;
            }
            return Err(Error::Handshake(err));
        }
        Ok(Err(err)) => return Err(err),
        Ok(Ok(request)) => request,
    };
    let checked = match check(&request) {
        Ok(checked) => checked,
        Err(refusal) => {
            let _ = write_refusal(&mut stream, &refusal).await;
            return Err(Error::Refused(refusal.status));
        }
    };
    let offered: Vec<&str> = config.protocols.iter().map(String::as_str).collect();
    let accepted = request.accept_connection(
        &offered,
        config.deflate.as_ref(),
        config.proto(),
        socket::now(),
    );
    stream.write_all(&accepted.response()).await?;
    let ws = socket::websocket(stream, accepted.connection, accepted.deflate);
    Ok((ws, request, checked))
}

/// Starts a connection on a transport whose handshake was done elsewhere (by an HTTP server
/// such as hyper), with `leftover` bytes already read past the handshake, and the
/// permessage-deflate parameters that handshake agreed on, if any (used with `config.deflate`).
pub fn from_raw<S>(
    stream: S,
    role: Role,
    config: &Config,
    deflate: Option<DeflateParams>,
    leftover: Bytes,
) -> (Sender, Receiver)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let deflate = deflate.zip(config.deflate.as_ref());
    let conn = Connection::after_handshake(role, config.proto(), deflate, &leftover, socket::now());
    socket::start(stream, conn, deflate.map(|(params, _)| params))
}

/// Starts a connection from a request accepted with
/// [`Request::accept_connection`](ferry_proto::handshake::Request::accept_connection), on the
/// transport another HTTP server (hyper, say) upgraded; `leftover` is what that server read
/// past the request. The response and the connection were settled together, so they agree.
pub fn from_accepted<S>(stream: S, accepted: Accepted, leftover: &[u8]) -> (Sender, Receiver)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (conn, deflate) = fed_leftover(accepted, leftover);
    socket::start(stream, conn, deflate)
}

/// [`from_accepted`], as a single-task [`WebSocket`] driven by whoever awaits it instead of
/// handles with a connection task of their own: one task per connection instead of two, for a
/// route that only answers what it receives (an echo).
pub fn websocket_from_accepted<S>(stream: S, accepted: Accepted, leftover: &[u8]) -> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (conn, deflate) = fed_leftover(accepted, leftover);
    socket::websocket(stream, conn, deflate)
}

/// The accepted connection, having read what the HTTP server read past the request.
fn fed_leftover(accepted: Accepted, leftover: &[u8]) -> (Connection, Option<DeflateParams>) {
    let mut conn = accepted.connection;
    if !leftover.is_empty() {
        conn.receive_data(leftover, socket::now());
    }
    (conn, accepted.deflate)
}

async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    config: &Config,
) -> Result<Request, Error> {
    let mut handshake = ServerHandshake::new(&config.limits);
    // A pooled buffer: the connection's own read buffer later comes from the same pool.
    let mut buf = socket::pool::take();
    let result = loop {
        buf.clear();
        match stream.read_buf(&mut buf).await {
            Ok(0) => break Err(Error::Handshake(HandshakeError::Eof)),
            Ok(_) => {}
            Err(err) => break Err(err.into()),
        }
        match handshake.receive(&buf) {
            Ok(Some(request)) => break Ok(request),
            Ok(None) => {}
            Err(err) => break Err(err.into()),
        }
    };
    socket::pool::put(buf);
    result
}

async fn write_refusal<S: AsyncWrite + Unpin>(
    stream: &mut S,
    refusal: &Refusal,
) -> std::io::Result<()> {
    stream.write_all(&refusal.to_bytes()).await?;
    stream.shutdown().await
}

/// Accepting into a [`WebSocket`] driven by the calling task; the handshake lives here, the
/// connection in `socket/`.
impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Accepts a WebSocket connection on `stream`, on any path, like [`accept_with`](crate::accept_with),
    /// and returns it to be driven by the calling task.
    pub async fn accept(stream: S, config: &crate::Config) -> Result<Self, crate::Error> {
        let (ws, _request, ()) = accept_websocket(stream, config, |_| Ok(())).await?;
        Ok(ws)
    }

    /// Accepts after letting `check` look at the request and refuse it, like
    /// [`accept_with_request`](crate::accept_with_request).
    pub async fn accept_with_request<F>(
        stream: S,
        config: &crate::Config,
        check: F,
    ) -> Result<(Self, ferry_proto::handshake::Request), crate::Error>
    where
        F: FnOnce(&ferry_proto::handshake::Request) -> Result<(), ferry_proto::handshake::Refusal>,
    {
        let (ws, request, ()) = accept_websocket(stream, config, check).await?;
        Ok((ws, request))
    }
}
