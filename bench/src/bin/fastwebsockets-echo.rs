//! fastwebsockets' own echo server (its examples/echo_server.rs: a FragmentCollector, echo text
//! and binary frames, run unconstrained), on a current_thread runtime. The upgrade is done by
//! hand over the raw TcpStream rather than through hyper, so the echo path has no hyper
//! `Upgraded` indirection: the fastest way to run fastwebsockets, and so the hardest peer.

use base64::Engine as _;
use fastwebsockets::{FragmentCollector, OpCode, Role, WebSocket};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() {
    let listen = ferry_bench_peers::listen_arg(
        "fastwebsockets-echo",
        "a fastwebsockets WebSocket echo server",
    );
    ferry_bench_peers::runtime().block_on(async move {
        let listener = ferry_bench_peers::bind("fastwebsockets-echo", &listen).await;
        ferry_bench_peers::serve(listener, |stream| async move {
            let _ = tokio::task::unconstrained(echo(stream)).await;
        })
        .await
    })
}

async fn echo(mut stream: TcpStream) -> Result<(), Box<dyn std::error::Error>> {
    upgrade(&mut stream).await?;
    let mut ws = WebSocket::after_handshake(stream, Role::Server);
    ws.set_max_message_size(64 << 20);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

/// Reads the HTTP/1.1 upgrade request and answers 101 (RFC 6455 §4.2.2). A client that sends
/// frames before the response is refused (none does: it must wait for the 101).
async fn upgrade(stream: &mut TcpStream) -> Result<(), Box<dyn std::error::Error>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err("handshake too large".into());
        }
    };
    if end != buf.len() {
        return Err("data before the handshake response".into());
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(&buf)?;
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if request.method != Some("GET")
        || !has_token("upgrade", "websocket")
        || !has_token("connection", "upgrade")
        || header("sec-websocket-version") != Some(b"13")
    {
        stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Err("not a WebSocket upgrade".into());
    }
    let key = header("sec-websocket-key").ok_or("no Sec-WebSocket-Key")?;
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    Ok(())
}
