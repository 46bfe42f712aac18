//! Accepting WebSocket connections on any transport.

use bytes::Bytes;
use ferry_proto::Role;
use ferry_proto::extension::deflate::DeflateParams;
use ferry_proto::handshake::{HandshakeError, Refusal, Request, ServerHandshake};
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
    let (ws, request) = accept_websocket(stream, config, check).await?;
    let (sender, receiver) = ws.split();
    Ok((sender, receiver, request))
}

/// The server's opening handshake (RFC 6455 §4.2): read and check the request, answer it, and
/// build the connection, driven by the calling task until it is split.
pub(crate) async fn accept_websocket<S, F>(
    mut stream: S,
    config: &Config,
    check: F,
) -> Result<(WebSocket<S>, Request), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(&Request) -> Result<(), Refusal>,
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
    if let Err(refusal) = check(&request) {
        let _ = write_refusal(&mut stream, &refusal).await;
        return Err(Error::Refused(refusal.status));
    }
    let offered: Vec<&str> = config.protocols.iter().map(String::as_str).collect();
    let protocol = request.choose_protocol(&offered);
    // RFC 7692 §5: the first acceptable offer, or none (the connection opens uncompressed).
    let deflate = config
        .deflate
        .as_ref()
        .and_then(|d| Some((d.accept_offer(&request.extension_offers())?, d)));
    let response = match &deflate {
        Some(((_, header), _)) => {
            request.accept_with_headers(protocol, &[("Sec-WebSocket-Extensions", header)])
        }
        None => request.accept(protocol),
    };
    stream.write_all(&response).await?;
    let leftover = request.take_leftover();
    let deflate = deflate.map(|((params, _), settings)| (params, settings));
    let ws = socket::websocket(stream, Role::Server, config.proto(), deflate, &leftover);
    Ok((ws, request))
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
    socket::start(stream, role, config.proto(), deflate, leftover)
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
