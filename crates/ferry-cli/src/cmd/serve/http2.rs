//! HTTP/2 beside HTTP/1.1 on one port: which of the two a connection speaks, and the settings
//! of the HTTP/2 server, which lets WebSockets open as streams (extended CONNECT, RFC 8441).
//! docs/http2.md has the whole picture.

use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;

use super::config::ServeConfig;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4). No HTTP/1.1 request line starts
/// with it, so its first bytes tell the two apart ("prior knowledge", RFC 9113 §3.3).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Header bytes one HTTP/2 request may carry (HPACK-decoded), as HTTP/1.1's read buffer allows.
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Whether a cleartext connection opens with HTTP/2's preface. The bytes are peeked, not read,
/// so the HTTP server that takes the connection still sees them all. `None` when the client
/// closed, or sent too little to tell within `timeout`.
pub async fn opens_with_preface(stream: &TcpStream, timeout: Duration) -> Option<bool> {
    let sniff = async {
        let mut buf = [0u8; PREFACE.len()];
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            let seen = buf.get(..n)?;
            if n == 0 {
                return None;
            }
            if !PREFACE.starts_with(seen) {
                return Some(false);
            }
            if n == PREFACE.len() {
                return Some(true);
            }
            // Part of the preface, the rest still in flight: peeking again at once would spin
            // on the same bytes.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(timeout, sniff).await.ok().flatten()
}

/// The HTTP/2 server for one connection: extended CONNECT on (RFC 8441 §3), the flow-control
/// windows and stream limit of `http2.*`, and pings on the connection with the WebSocket ping
/// settings, so a dead client is found even while its streams are idle.
pub fn builder(config: &ServeConfig) -> http2::Builder<TokioExecutor> {
    let h2 = &config.http2;
    let limits = &config.limits;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(h2.max_streams)
        // Validated to fit HTTP/2's 31-bit windows (config.rs).
        .initial_stream_window_size(u32::try_from(h2.stream_window.0).unwrap_or(u32::MAX >> 1))
        .initial_connection_window_size(
            u32::try_from(h2.connection_window.0).unwrap_or(u32::MAX >> 1),
        )
        .max_header_list_size(MAX_HEADER_LIST);
    if !limits.ping_interval.0.is_zero() {
        builder
            .keep_alive_interval(limits.ping_interval.0)
            .keep_alive_timeout(limits.ping_timeout.0);
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn sniffed(chunks: &[&[u8]]) -> Option<bool> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        for chunk in chunks {
            client.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let verdict = opens_with_preface(&server, Duration::from_millis(300)).await;
        // Peeked, not read: the bytes are all still there for the HTTP server.
        let mut buf = [0u8; 64];
        let n = server.peek(&mut buf).await.unwrap();
        let sent: Vec<u8> = chunks.concat();
        assert_eq!(&buf[..n], &sent[..n.min(sent.len())]);
        verdict
    }

    #[tokio::test]
    async fn the_preface_says_which_http() {
        assert_eq!(sniffed(&[PREFACE]).await, Some(true));
        assert_eq!(
            sniffed(&[b"PRI * HT", b"TP/2.0\r\n\r\nSM\r\n\r\n"]).await,
            Some(true)
        );
        assert_eq!(sniffed(&[b"GET / HTTP/1.1\r\n"]).await, Some(false));
        assert_eq!(sniffed(&[b"POST /api HTTP/1.1\r\n"]).await, Some(false));
        // Too little to tell before the timeout.
        assert_eq!(sniffed(&[b"PRI * "]).await, None);
    }
}
