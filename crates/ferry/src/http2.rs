//! The client side of WebSockets over HTTP/2 (RFC 8441): one HTTP/2 connection, and as many
//! WebSockets as its streams as the server allows.
//!
//! ```no_run
//! # async fn f() -> Result<(), ferry::Error> {
//! use ferry::http2::Http2Connection;
//! let connection = Http2Connection::connect("wss://example.com", &ferry::Config::default()).await?;
//! let (chat, _, _) = connection.websocket("/ws/topics/chat").await?;
//! let (news, _, _) = connection.websocket("/ws/topics/news").await?; // same TCP connection
//! # Ok(()) }
//! ```
//!
//! [`connect`] opens one WebSocket, over HTTP/2 when the server allows it and over HTTP/1.1
//! otherwise.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::handshake::{ClientHandshake, ClientRequest, Response};
use http_body_util::Empty;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::address::{Address, Transport};
use crate::config::Config;
use crate::error::Error;
use crate::proxy::ProxySetting;
use crate::socket::{self, Receiver, Sender};

/// How long to wait for the server's SETTINGS to allow extended CONNECT. A server sends its
/// SETTINGS first thing (RFC 9113 §3.4), so this is about one round trip; a server that does
/// not allow WebSockets over HTTP/2 costs this much before [`connect`] falls back.
const SETTINGS_WAIT: Duration = Duration::from_secs(1);

/// Bytes the server may send on one stream, and on the whole connection, before they are read:
/// one WebSocket that stops reading holds back only its own stream.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Opens a WebSocket to `url` over HTTP/2 when the server allows it (TLS with ALPN h2, or
/// cleartext HTTP/2 with prior knowledge for `ws://`), and over HTTP/1.1 otherwise: when ALPN
/// picks http/1.1, the server does not speak HTTP/2, or its SETTINGS do not allow extended
/// CONNECT. A proxy from `config.proxy` means HTTP/1.1. Each call opens its own connection; use
/// [`Http2Connection`] to run many WebSockets on one.
///
/// `request` is a URL, an `http::Uri` or an `http::Request<()>` (see
/// [`IntoClientRequest`](crate::IntoClientRequest)); a request's headers go into either
/// handshake.
pub async fn connect(
    request: impl crate::IntoClientRequest,
    config: &Config,
) -> Result<(Sender, Receiver, Response), Error> {
    let target = request.into_target()?;
    let config = &*target.apply(config);
    let url = target.url.as_str();
    let address = Address::parse(url)?;
    match Http2Connection::open(&address, config).await {
        Ok(connection) => connection.websocket(&address.path).await,
        Err(Unavailable::Error(err)) => Err(err),
        Err(Unavailable::Http2(why)) => {
            tracing::debug!(
                url,
                why,
                "WebSocket over HTTP/1.1: no HTTP/2 WebSockets here"
            );
            crate::connect_with(url, config).await
        }
    }
}

/// Why HTTP/2 was not used: the server does not offer it (fall back), or an error that would
/// fail HTTP/1.1 too.
enum Unavailable {
    Http2(&'static str),
    Error(Error),
}

impl From<Error> for Unavailable {
    fn from(err: Error) -> Self {
        Unavailable::Error(err)
    }
}

/// One stream of an HTTP/2 connection, carrying a WebSocket's frames both ways.
pub type Http2Stream = TokioIo<hyper::upgrade::Upgraded>;

/// One HTTP/2 connection whose server allows WebSockets (its SETTINGS enable extended
/// CONNECT); each [`websocket`](Self::websocket) is a stream of it. Cloning shares the
/// connection.
#[derive(Clone, Debug)]
pub struct Http2Connection {
    requests: SendRequest<Empty<Bytes>>,
    /// `:authority` of every request: the URL's host and port.
    authority: String,
    scheme: &'static str,
    config: Arc<Config>,
}

impl Http2Connection {
    /// Connects to `url`'s server (its path is not used): TCP, TLS offering only ALPN h2 for
    /// `wss://`, HTTP/2 prior knowledge for `ws://`, and waits for SETTINGS that allow
    /// extended CONNECT. Fails with [`Error::Http2Unavailable`] when the server does not offer
    /// WebSockets over HTTP/2, or when a proxy would be needed.
    pub async fn connect(url: &str, config: &Config) -> Result<Http2Connection, Error> {
        let address = Address::parse(url)?;
        Http2Connection::open(&address, config)
            .await
            .map_err(|unavailable| match unavailable {
                Unavailable::Http2(why) => Error::Http2Unavailable(why),
                Unavailable::Error(err) => err,
            })
    }

    async fn open(address: &Address, config: &Config) -> Result<Http2Connection, Unavailable> {
        let Transport::Tcp { host, port } = &address.transport else {
            return Err(Unavailable::Http2("Unix sockets are HTTP/1.1 here"));
        };
        let proxied = match &config.proxy {
            ProxySetting::None => false,
            ProxySetting::FromEnv => crate::proxy::Proxy::from_env(host, address.secure)?.is_some(),
            ProxySetting::Use(_) => true,
        };
        if proxied {
            return Err(Unavailable::Http2("HTTP/2 is not tried through a proxy"));
        }
        let stream = tokio::time::timeout(
            config.connect_timeout,
            TcpStream::connect((host.as_str(), *port)),
        )
        .await
        .map_err(|_| Error::ConnectTimeout)?
        .map_err(Error::Io)?;
        stream.set_nodelay(true).map_err(Error::Io)?;
        let requests = if address.secure {
            start(tls_h2(stream, host, config).await?, config).await?
        } else {
            start(stream, config).await?
        };
        Ok(Http2Connection {
            requests,
            authority: address.host_header.clone(),
            scheme: if address.secure { "https" } else { "http" },
            config: Arc::new(config.clone()),
        })
    }

    /// Opens a WebSocket to `path` (with its query) as a new stream: an extended CONNECT with
    /// this connection's subprotocols, Origin, headers and permessage-deflate offer, checked
    /// like an HTTP/1.1 handshake, within `Limits::handshake_timeout`.
    pub async fn websocket(&self, path: &str) -> Result<(Sender, Receiver, Response), Error> {
        let (stream, connection, response) = self.open_stream(path).await?;
        let (sender, receiver) = socket::start(stream, connection, response.deflate);
        Ok((sender, receiver, response))
    }

    /// [`websocket`](Self::websocket) without ferry's connection on top: the stream whose
    /// bytes are WebSocket frames, and the accepted response (its subprotocol and
    /// permessage-deflate parameters), for a caller that runs the frames itself (`ferry
    /// bench`, a proxy).
    pub async fn websocket_stream(&self, path: &str) -> Result<(Http2Stream, Response), Error> {
        let (stream, _, response) = self.open_stream(path).await?;
        Ok((stream, response))
    }

    async fn open_stream(
        &self,
        path: &str,
    ) -> Result<(Http2Stream, ferry_proto::Connection, Response), Error> {
        let config = &self.config;
        let request = ClientRequest {
            host: self.authority.clone(),
            path: path.to_owned(),
            origin: config.origin.clone(),
            protocols: config.protocols.clone(),
            headers: config.headers.clone(),
            deflate: config.deflate.clone(),
        };
        let (handshake, headers) = ClientHandshake::extended_connect(&request, &config.limits)?;
        let mut builder = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("{}://{}{}", self.scheme, self.authority, path));
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let mut connect = builder.body(Empty::new()).map_err(|err| {
            Error::Handshake(ferry_proto::handshake::HandshakeError::InvalidHeader(
                err.to_string(),
            ))
        })?;
        connect
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        let mut requests = self.requests.clone();
        let exchange = async {
            let mut answer = requests.send_request(connect).await.map_err(io_error)?;
            let answer_headers = answer
                .headers()
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                .collect();
            let mut response =
                handshake.extended_connect_response(answer.status().as_u16(), answer_headers)?;
            let upgraded = hyper::upgrade::on(&mut answer).await.map_err(io_error)?;
            let connection = handshake.connection(&mut response, config.proto(), socket::now());
            Ok::<_, Error>((upgraded, connection, response))
        };
        let (upgraded, connection, response) =
            tokio::time::timeout(config.limits.handshake_timeout, exchange)
                .await
                .map_err(|_| Error::HandshakeTimeout)??;
        Ok((TokioIo::new(upgraded), connection, response))
    }

    /// Whether the connection can still open streams.
    pub fn is_open(&self) -> bool {
        !self.requests.is_closed()
    }
}

/// The TLS handshake of an `https` HTTP/2 connection, offering only `h2` in ALPN: a server
/// that picks nothing, or http/1.1, is not served here.
#[cfg(feature = "tls")]
async fn tls_h2(
    stream: TcpStream,
    host: &str,
    config: &Config,
) -> Result<crate::tls::TlsStream<TcpStream>, Unavailable> {
    let mut tls = match &config.tls {
        Some(tls) => (**tls).clone(),
        None => (*crate::client::default_tls()?).clone(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let stream = tokio::time::timeout(
        config.tls_timeout,
        crate::tls::handshake(stream, host, Arc::new(tls)),
    )
    .await
    .map_err(|_| Error::TlsTimeout)??;
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(Unavailable::Http2("the server did not choose h2 in ALPN"));
    }
    Ok(stream)
}

#[cfg(not(feature = "tls"))]
async fn tls_h2(_: TcpStream, _: &str, _: &Config) -> Result<TcpStream, Unavailable> {
    Err(crate::client::no_tls().into())
}

/// Runs HTTP/2's handshake on `stream` and waits (up to [`SETTINGS_WAIT`]) for the server to
/// allow extended CONNECT; then leaves the connection to a task of its own.
async fn start<S>(stream: S, config: &Config) -> Result<SendRequest<Empty<Bytes>>, Unavailable>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (requests, mut connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|_| Unavailable::Http2("the server does not speak HTTP/2"))?;
    let wait = SETTINGS_WAIT.min(config.limits.handshake_timeout);
    let deadline = tokio::time::Instant::now() + wait;
    while !connection.is_extended_connect_protocol_enabled() {
        tokio::select! {
            _ = &mut connection => {
                return Err(Unavailable::Http2("the server does not speak HTTP/2"));
            }
            () = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Unavailable::Http2(
                "the server's HTTP/2 SETTINGS do not allow WebSockets (extended CONNECT)",
            ));
        }
    }
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "HTTP/2 connection ended");
        }
    });
    Ok(requests)
}

fn io_error(err: hyper::Error) -> Error {
    Error::Io(std::io::Error::other(err))
}
