//! A raw WebSocket client for the suites that write frames as bytes (`layers.rs`,
//! `over_http2.rs`): the HTTP/1.1 upgrade by hand, and client frames masked with a zero key,
//! so payloads go out as they are.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a TCP connection to `addr` (`HOST:PORT`), sends an upgrade for `path` and reads the
/// response head, which must be a 101.
pub async fn upgraded_tcp(addr: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(upgrade_request(addr, path).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// An HTTP/1.1 upgrade request for `path` on `addr` (`HOST:PORT`).
pub fn upgrade_request(addr: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A client frame: `first_byte` (FIN, RSV bits, opcode), the length in the shortest form, a
/// zero mask, the payload.
pub fn masked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}
