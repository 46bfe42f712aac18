//! Bridges: a WebSocket on one side, a TCP or Unix stream service on the other (websockify's
//! job).
//!
//! The target is fixed by the server's configuration, never named by the client: a bridge that
//! let clients pick host and port would be an open proxy into the server's network.
//!
//! Bytes read from the target go to the client as binary messages, as they arrive (one read, one
//! message); every message from the client, text or binary, is written to the target. WebSocket
//! has no half-close, so the two directions end like this:
//! - the target closes its side (EOF): what it sent is delivered, then the client gets close 1000
//!   "bridge target closed the connection";
//! - the client closes: the target gets EOF on its read side (shutdown of our write side), and the
//!   connection ends;
//! - the target cannot be reached: close 1014 (bad gateway, RFC 6455 section 7.4.1 registry)
//!   with the reason; the target fails mid-stream (reset): close 1011.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferry::{CloseCode, CloseInfo, Incoming, Message, Receiver, Sender};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::auth::CLOSE_TOKEN_EXPIRED;
use super::config::{BridgeConfig, Target};
use super::metrics::{Metrics, Route};

/// Bytes read from the target per message, at most.
const READ_CHUNK: usize = 16 * 1024;

/// One configured bridge.
#[derive(Debug)]
pub struct Bridge {
    pub target: Target,
    tokens: Tokens,
    connect_timeout: Duration,
}

#[derive(Debug)]
enum Tokens {
    Open,
    Fixed(String),
    File(PathBuf),
}

/// What a token check found.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenCheck {
    Accepted,
    /// The bridge needs a token and the request brought none.
    Missing,
    /// The request's token is not one the bridge accepts.
    Refused,
    /// The token file could not be read: the server's fault, not the client's.
    Unavailable,
}

impl Bridge {
    /// From a validated config entry.
    pub fn new(config: &BridgeConfig) -> Result<Bridge, String> {
        let tokens = match (&config.token, &config.token_file) {
            (Some(token), _) => Tokens::Fixed(token.trim().to_owned()),
            (None, Some(path)) => Tokens::File(path.clone()),
            (None, None) => Tokens::Open,
        };
        Ok(Bridge {
            target: Target::parse(&config.to)?,
            tokens,
            connect_timeout: config.connect_timeout.0,
        })
    }

    /// Whether the bridge takes any client (no token of its own configured).
    pub fn is_open(&self) -> bool {
        matches!(self.tokens, Tokens::Open)
    }

    /// Checks the token a request presents, in constant time per candidate.
    pub fn check_token(&self, presented: Option<&str>) -> TokenCheck {
        let file;
        let accepted: Box<dyn Iterator<Item = &str>> = match &self.tokens {
            Tokens::Open => return TokenCheck::Accepted,
            Tokens::Fixed(token) => Box::new(std::iter::once(token.as_str())),
            Tokens::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    file = text;
                    Box::new(
                        file.lines()
                            .map(|line| line.split('#').next().unwrap_or("").trim())
                            .filter(|line| !line.is_empty()),
                    )
                }
                Err(err) => {
                    tracing::error!(file = %path.display(), error = %err, "bridge token file unreadable");
                    return TokenCheck::Unavailable;
                }
            },
        };
        let Some(presented) = presented else {
            return TokenCheck::Missing;
        };
        // Every candidate is compared, so the time does not tell which one matched.
        let found = accepted.fold(false, |found, token| {
            found | constant_time_eq(token.as_bytes(), presented.as_bytes())
        });
        if found {
            TokenCheck::Accepted
        } else {
            TokenCheck::Refused
        }
    }
}

/// Equality whose time depends only on the lengths, so a client cannot find a token byte by
/// byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request presents: `Authorization: Bearer TOKEN`, or `?token=TOKEN` in the URL
/// for browsers, whose WebSocket API cannot set headers.
pub fn presented_token<'a>(
    authorization: Option<&'a str>,
    query: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(value) = authorization {
        let (scheme, token) = value.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

async fn connect(target: &Target) -> std::io::Result<(BoxRead, BoxWrite)> {
    match target {
        Target::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
            let _ = stream.set_nodelay(true);
            let (read, write) = stream.into_split();
            Ok((Box::pin(read), Box::pin(write)))
        }
        #[cfg(unix)]
        Target::Unix(path) => {
            let (read, write) = tokio::net::UnixStream::connect(path).await?.into_split();
            Ok((Box::pin(read), Box::pin(write)))
        }
        #[cfg(not(unix))]
        Target::Unix(_) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "unix: targets need Unix sockets, which this platform does not have",
        )),
    }
}

/// How the target-to-client direction ended.
enum Upstream {
    /// The target closed its side.
    Eof,
    /// The client's side is closed; nothing more can be sent.
    ClientGone,
    Failed(std::io::Error),
}

/// Runs one bridged connection to its end; returns how the WebSocket closed.
pub async fn relay(
    bridge: &Bridge,
    sender: Sender,
    mut receiver: Receiver,
    metrics: &Metrics,
    idle_timeout: Duration,
    token_expires_in: Option<Duration>,
) -> Option<CloseInfo> {
    // A token's connection ends when the token does, counted from the upgrade: a token that
    // expires while the target is being reached closes the relay as soon as it starts.
    let token_expires = token_expires_in.map(|left| Instant::now() + left);
    let connected = tokio::time::timeout(bridge.connect_timeout, connect(&bridge.target)).await;
    let (mut target_read, mut target_write) = match connected {
        Ok(Ok(halves)) => halves,
        Ok(Err(err)) => {
            tracing::warn!(target = %bridge.target, error = %err, "bridge target unreachable");
            metrics.bridge_failed("unreachable");
            let reason = format!("bridge target unreachable: {}", short(&err));
            sender.start_close(CloseCode::BAD_GATEWAY, &reason);
            return drain(&mut receiver).await;
        }
        Err(_) => {
            tracing::warn!(target = %bridge.target, "bridge target connect timed out");
            metrics.bridge_failed("timeout");
            sender.start_close(
                CloseCode::BAD_GATEWAY,
                "bridge target did not answer in time",
            );
            return drain(&mut receiver).await;
        }
    };
    let started = Instant::now();
    // Milliseconds since `started` of the last byte moved either way, for the idle timeout.
    let last_activity = AtomicU64::new(0);
    let touch = || {
        let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        last_activity.store(now, Ordering::Relaxed);
    };

    let upstream = async {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            if buf.capacity() < READ_CHUNK {
                buf = BytesMut::with_capacity(READ_CHUNK);
            }
            match target_read.read_buf(&mut buf).await {
                Ok(0) => return Upstream::Eof,
                Ok(n) => {
                    touch();
                    let chunk = buf.split().freeze();
                    // Waits while the client's send queue is full: the target is then not read,
                    // and TCP pushes back on it.
                    if sender.send(Message::binary(chunk)).await.is_err() {
                        return Upstream::ClientGone;
                    }
                    metrics.sent(Route::Bridge, 1, n as u64);
                }
                Err(err) => return Upstream::Failed(err),
            }
        }
    };
    let downstream = async {
        let mut target_ok = true;
        while let Some(item) = receiver.recv().await {
            match item {
                Incoming::Message(message) => {
                    touch();
                    metrics.received(Route::Bridge, message.len());
                    if target_ok && let Err(err) = target_write.write_all(message.as_bytes()).await
                    {
                        target_ok = false;
                        metrics.bridge_failed("write");
                        let reason = format!("bridge target failed: {}", short(&err));
                        sender.start_close(CloseCode::INTERNAL_ERROR, &reason);
                    }
                }
                Incoming::Closed(info) => {
                    let _ = target_write.shutdown().await;
                    return Some(info);
                }
            }
        }
        let _ = target_write.shutdown().await;
        None
    };
    let idle = async {
        if idle_timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
            let deadline = started + last + idle_timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    };
    let expiry = async {
        match token_expires {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(upstream, downstream, idle, expiry);
    tokio::select! {
        ended = &mut upstream => {
            match ended {
                Upstream::Eof => {
                    sender.start_close(CloseCode::NORMAL, "bridge target closed the connection");
                }
                Upstream::Failed(err) => {
                    metrics.bridge_failed("read");
                    let reason = format!("bridge target failed: {}", short(&err));
                    sender.start_close(CloseCode::INTERNAL_ERROR, &reason);
                }
                Upstream::ClientGone => {}
            }
            downstream.await
        }
        info = &mut downstream => info,
        () = &mut idle => {
            sender.start_close(CloseCode::GOING_AWAY, "idle timeout");
            downstream.await
        }
        () = &mut expiry => {
            sender.start_close(CloseCode::from(CLOSE_TOKEN_EXPIRED), "token expired");
            downstream.await
        }
    }
}

/// Waits for the close handshake, discarding messages that arrive meanwhile.
async fn drain(receiver: &mut Receiver) -> Option<CloseInfo> {
    while let Some(item) = receiver.recv().await {
        if let Incoming::Closed(info) = item {
            return Some(info);
        }
    }
    None
}

/// An I/O error as a close reason: short (a reason is at most 123 bytes) and with no detail a
/// client should not see, such as internal addresses.
fn short(err: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match err.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset".into(),
        K::ConnectionAborted => "connection aborted".into(),
        K::NotFound => "not found".into(),
        K::PermissionDenied => "permission denied".into(),
        K::TimedOut => "timed out".into(),
        K::BrokenPipe => "broken pipe".into(),
        kind => {
            let mut text = kind.to_string();
            text.truncate(60);
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(token: Option<&str>) -> Bridge {
        Bridge::new(&BridgeConfig {
            to: "tcp://127.0.0.1:9".into(),
            token: token.map(str::to_owned),
            token_file: None,
            connect_timeout: crate::size::Dur(Duration::from_secs(1)),
        })
        .unwrap()
    }

    #[test]
    fn tokens() {
        assert_eq!(bridge(None).check_token(None), TokenCheck::Accepted);
        let b = bridge(Some("s3cret"));
        assert_eq!(b.check_token(Some("s3cret")), TokenCheck::Accepted);
        assert_eq!(b.check_token(Some("s3cre")), TokenCheck::Refused);
        assert_eq!(b.check_token(Some("s3creT")), TokenCheck::Refused);
        assert_eq!(b.check_token(None), TokenCheck::Missing);
    }

    #[test]
    fn token_file() {
        let path = std::env::temp_dir().join(format!("ferry-tokens-{}", std::process::id()));
        std::fs::write(&path, "# rotated weekly\nalpha\n  beta  # laptop\n\n").unwrap();
        let b = Bridge::new(&BridgeConfig {
            to: "unix:/tmp/x".into(),
            token: None,
            token_file: Some(path.clone()),
            connect_timeout: crate::size::Dur(Duration::from_secs(1)),
        })
        .unwrap();
        assert_eq!(b.check_token(Some("beta")), TokenCheck::Accepted);
        assert_eq!(b.check_token(Some("alpha")), TokenCheck::Accepted);
        assert_eq!(b.check_token(Some("# rotated weekly")), TokenCheck::Refused);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(b.check_token(Some("beta")), TokenCheck::Unavailable);
    }

    #[test]
    fn where_tokens_come_from() {
        assert_eq!(presented_token(Some("Bearer abc"), None), Some("abc"));
        assert_eq!(presented_token(Some("bearer  abc "), None), Some("abc"));
        assert_eq!(presented_token(Some("Basic abc"), None), None);
        assert_eq!(presented_token(None, Some("a=1&token=xyz")), Some("xyz"));
        assert_eq!(presented_token(None, Some("tokens=1")), None);
        assert_eq!(presented_token(None, None), None);
    }
}
