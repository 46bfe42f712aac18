//! Connecting to WebSocket servers.

use bytes::BytesMut;
use ferry_proto::Role;
use ferry_proto::handshake::{ClientHandshake, ClientRequest, HandshakeError, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::address::{Address, Transport};
use crate::config::Config;
use crate::error::Error;
use crate::socket::{self, Receiver, Sender};

/// Connects to a `ws://` or `ws+unix://` URL with the default [`Config`].
///
/// The whole connection (TCP connect and handshake) is bounded by `Limits::handshake_timeout`.
pub async fn connect(url: &str) -> Result<(Sender, Receiver, Response), Error> {
    connect_with(url, &Config::default()).await
}

/// Connects with a given [`Config`]: subprotocols, Origin, extra headers, limits.
pub async fn connect_with(
    url: &str,
    config: &Config,
) -> Result<(Sender, Receiver, Response), Error> {
    let address = Address::parse(url)?;
    let timeout = config.limits.handshake_timeout;
    let connected = tokio::time::timeout(timeout, async {
        match &address.transport {
            Transport::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                handshake(stream, &address, config).await
            }
            Transport::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await?;
                handshake(stream, &address, config).await
            }
        }
    });
    connected.await.map_err(|_| Error::HandshakeTimeout)?
}

/// Runs the client handshake over a transport the caller opened (TLS, a proxy tunnel, an
/// in-memory pipe), for the given URL's host and path.
pub async fn connect_stream<S>(
    stream: S,
    url: &str,
    config: &Config,
) -> Result<(Sender, Receiver, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let address = Address::parse(url)?;
    tokio::time::timeout(
        config.limits.handshake_timeout,
        handshake(stream, &address, config),
    )
    .await
    .map_err(|_| Error::HandshakeTimeout)?
}

async fn handshake<S>(
    mut stream: S,
    address: &Address,
    config: &Config,
) -> Result<(Sender, Receiver, Response), Error>
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
    let leftover = std::mem::take(&mut response.leftover);
    let deflate = response.deflate.zip(config.deflate.as_ref());
    let (sender, receiver) = socket::start(stream, Role::Client, config.proto(), deflate, leftover);
    Ok((sender, receiver, response))
}
