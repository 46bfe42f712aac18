//! Connecting to WebSocket servers.

#[cfg(feature = "tls")]
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use ferry_proto::Connection;
use ferry_proto::handshake::{ClientHandshake, ClientRequest, HandshakeError, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::address::{Address, Transport};
use crate::config::Config;
use crate::error::Error;
use crate::proxy::{Proxy, ProxySetting};
use crate::socket::{self, Receiver, Sender, WebSocket};
use crate::target::IntoClientRequest;
#[cfg(feature = "tls")]
use crate::tls;

/// Connects to a `ws://`, `wss://` or `ws+unix://` URL with the default [`Config`]. The URL
/// can also be an `http::Uri`, or an `http::Request<()>` whose headers go into the handshake
/// (see [`IntoClientRequest`]).
///
/// Each stage has its own deadline: `Config::connect_timeout` for the TCP (or Unix socket)
/// connection, `Config::tls_timeout` for TLS, `Limits::handshake_timeout` for the WebSocket
/// handshake.
pub async fn connect(
    request: impl IntoClientRequest,
) -> Result<(Sender, Receiver, Response), Error> {
    connect_with(request, &Config::default()).await
}

/// Connects with a given [`Config`]: subprotocols, Origin, extra headers, limits, timeouts,
/// TLS settings.
pub async fn connect_with(
    request: impl IntoClientRequest,
    config: &Config,
) -> Result<(Sender, Receiver, Response), Error> {
    let target = request.into_target()?;
    let config = &*target.apply(config);
    let address = Address::parse(&target.url)?;
    match &address.transport {
        Transport::Tcp { host, port } => {
            #[cfg(not(feature = "tls"))]
            if address.secure {
                return Err(no_tls());
            }
            let proxy = match &config.proxy {
                ProxySetting::None => None,
                ProxySetting::FromEnv => Proxy::from_env(host, address.secure)?,
                ProxySetting::Use(proxy) => Some(proxy.clone()),
            };
            // The connect timeout covers reaching the proxy and its tunnel too.
            let stream = deadline(config.connect_timeout, Error::ConnectTimeout, async {
                match &proxy {
                    None => Ok(tokio::net::TcpStream::connect((host.as_str(), *port)).await?),
                    Some(proxy) => {
                        let mut stream =
                            tokio::net::TcpStream::connect((proxy.host.as_str(), proxy.port))
                                .await
                                .map_err(|err| {
                                    Error::Proxy(format!(
                                        "cannot reach the proxy {}:{}: {err}",
                                        proxy.host, proxy.port
                                    ))
                                })?;
                        crate::proxy::tunnel(&mut stream, proxy, host, *port).await?;
                        Ok::<_, Error>(stream)
                    }
                }
            })
            .await??;
            stream.set_nodelay(true)?;
            if address.secure {
                #[cfg(feature = "tls")]
                {
                    let stream = tls_handshake(stream, host, config).await?;
                    timed_handshake(stream, &address, config).await
                }
                // Refused above, before connecting; kept so the branch needs no panic.
                #[cfg(not(feature = "tls"))]
                Err(no_tls())
            } else {
                timed_handshake(stream, &address, config).await
            }
        }
        #[cfg(unix)]
        Transport::Unix(path) => {
            let stream = deadline(
                config.connect_timeout,
                Error::ConnectTimeout,
                tokio::net::UnixStream::connect(path),
            )
            .await??;
            timed_handshake(stream, &address, config).await
        }
        #[cfg(not(unix))]
        Transport::Unix(_) => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "ws+unix:// needs Unix sockets, which this platform does not have",
        ))),
    }
}

/// The error for a `wss://` URL in a build without TLS.
#[cfg(not(feature = "tls"))]
pub(crate) fn no_tls() -> Error {
    Error::TlsConfig(
        "wss:// needs ferry built with TLS: enable the `ring` or `aws-lc-rs` feature".into(),
    )
}

/// Runs the TLS handshake of a `wss://` connection over an open transport (a TCP connection,
/// a proxy tunnel), within `Config::tls_timeout`, with `Config::tls` or the built-in roots.
#[cfg(feature = "tls")]
pub async fn tls_handshake<S>(
    stream: S,
    host: &str,
    config: &Config,
) -> Result<tls::TlsStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let tls = match &config.tls {
        Some(tls) => tls.clone(),
        None => default_tls()?,
    };
    deadline(
        config.tls_timeout,
        Error::TlsTimeout,
        tls::handshake(stream, host, tls),
    )
    .await?
}

/// The built-in roots' configuration, built once: parsing the root store takes a while.
#[cfg(feature = "tls")]
pub(crate) fn default_tls() -> Result<Arc<tls::ClientConfig>, Error> {
    static DEFAULT: OnceLock<Arc<tls::ClientConfig>> = OnceLock::new();
    if let Some(config) = DEFAULT.get() {
        return Ok(config.clone());
    }
    let config = tls::TlsOptions::default().client_config()?;
    Ok(DEFAULT.get_or_init(|| config).clone())
}

async fn deadline<F: Future>(limit: Duration, error: Error, future: F) -> Result<F::Output, Error> {
    tokio::time::timeout(limit, future).await.map_err(|_| error)
}

async fn timed_handshake<S>(
    stream: S,
    address: &Address,
    config: &Config,
) -> Result<(Sender, Receiver, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (opened, response) = timed_open(stream, address, config).await?;
    let (sender, receiver) = socket::start(opened.stream, opened.connection, response.deflate);
    Ok((sender, receiver, response))
}

/// A transport whose client handshake succeeded, and the connection it agreed on, before
/// either kind of handle owns them.
pub(crate) struct Opened<S> {
    pub(crate) stream: S,
    /// The bytes the server sent after its response are already in it.
    pub(crate) connection: Connection,
}

/// The client handshake under `Limits::handshake_timeout`.
pub(crate) async fn timed_open<S>(
    stream: S,
    address: &Address,
    config: &Config,
) -> Result<(Opened<S>, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    deadline(
        config.limits.handshake_timeout,
        Error::HandshakeTimeout,
        open(stream, address, config),
    )
    .await?
}

/// Runs the client handshake over a transport the caller opened (TLS, a proxy tunnel, an
/// in-memory pipe), for the given URL's host and path (or those of an `http::Uri` or
/// `http::Request<()>`, see [`IntoClientRequest`]). The caller does TLS itself, if any (see
/// `tls_handshake`).
pub async fn connect_stream<S>(
    stream: S,
    request: impl IntoClientRequest,
    config: &Config,
) -> Result<(Sender, Receiver, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let target = request.into_target()?;
    let config = &*target.apply(config);
    let address = Address::parse(&target.url)?;
    timed_handshake(stream, &address, config).await
}

async fn open<S>(
    mut stream: S,
    address: &Address,
    config: &Config,
) -> Result<(Opened<S>, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = ClientRequest {
        host: address.host_header.clone(),
        path: address.path.clone(),
        origin: config.origin.clone(),
        protocols: config.protocols.clone(),
        headers: config.headers.clone(),
        deflate: config.deflate.clone(),
    };
    let (mut state, bytes) = ClientHandshake::new(&request, &config.limits)?;
    stream.write_all(&bytes).await?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut response = loop {
        buf.clear();
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(Error::Handshake(HandshakeError::Eof));
        }
        if let Some(response) = state.receive(&buf)? {
            break response;
        }
    };
    let connection = state.connection(&mut response, config.proto(), socket::now());
    Ok((Opened { stream, connection }, response))
}

/// A client handshake into a [`WebSocket`] driven by the calling task.
impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Runs the client handshake on a transport the caller opened (TCP, TLS from
    /// [`tls_handshake`](crate::tls_handshake), a Unix socket, an in-memory pipe) for `url`'s
    /// host and path, like [`connect_stream`](crate::connect_stream), and returns the
    /// connection to be driven by the calling task, with the server's response.
    ///
    /// The handshake is bounded by `Limits::handshake_timeout`; the URL's scheme is not acted
    /// on (the transport is whatever `stream` is).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ferry::Error> {
    /// use ferry::{Config, Incoming, Message, WebSocket};
    /// let stream = tokio::net::TcpStream::connect("127.0.0.1:9001").await?;
    /// stream.set_nodelay(true)?;
    /// let (mut ws, _response) =
    ///     WebSocket::connect_stream(stream, "ws://127.0.0.1:9001/", &Config::default()).await?;
    /// ws.send(Message::text("hello")).await.ok();
    /// if let Some(Incoming::Message(reply)) = ws.recv().await {
    ///     println!("{} bytes back", reply.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn connect_stream(
        stream: S,
        request: impl IntoClientRequest,
        config: &crate::Config,
    ) -> Result<(Self, ferry_proto::handshake::Response), crate::Error> {
        let target = request.into_target()?;
        let config = &*target.apply(config);
        let address = crate::Address::parse(&target.url)?;
        let (opened, response) = timed_open(stream, &address, config).await?;
        let ws = socket::websocket(opened.stream, opened.connection, response.deflate);
        Ok((ws, response))
    }
}

#[cfg(all(test, not(feature = "tls")))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_build_without_tls_refuses_wss_before_connecting() {
        // Port 1 on loopback refuses; the answer must come before any attempt.
        let err = connect("wss://127.0.0.1:1/").await.unwrap_err();
        assert!(matches!(err, Error::TlsConfig(_)), "{err:?}");
        assert!(err.to_string().contains("`ring` or `aws-lc-rs`"), "{err}");
    }
}
