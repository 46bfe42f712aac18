//! Bridges to TCP and Unix services, through `ferry serve` and `ferry bridge` run as real
//! processes, against real TCP services started by the tests.

mod common;

use std::time::Duration;

use common::Server;
use ferry::{CloseCode, Config, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP echo service on a free loopback port.
async fn tcp_echo() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// A loopback port nothing listens on.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

async fn raw_status(addr: &str, path: &str, extra: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out[..n]).into_owned()
}

/// Reads binary messages until `want` bytes have come.
async fn read_bytes(receiver: &mut ferry::Receiver, want: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(want);
    while got.len() < want {
        match receiver.recv_message().await {
            Some(message) => {
                assert!(message.is_binary(), "the bridge sends binary messages");
                got.extend_from_slice(message.as_bytes());
            }
            None => panic!("closed after {} of {want} bytes", got.len()),
        }
    }
    got
}

#[tokio::test]
async fn a_bridge_carries_bytes_both_ways_and_speaks_websockify_binary() {
    let echo = tcp_echo().await;
    let server = Server::serve(&["--bridge", &format!("echo=tcp://{echo}")]);
    let config = Config {
        protocols: vec!["binary".into()],
        ..Config::default()
    };
    let url = format!("ws://{}/ws/bridge/echo", server.addr);
    let (sender, mut receiver, response) = ferry::connect_with(&url, &config).await.unwrap();
    assert_eq!(response.protocol.as_deref(), Some("binary"));

    // 1 MB of varied bytes, sent as many messages; text messages are written as their bytes.
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let writer = {
        let sender = sender.clone();
        let data = data.clone();
        tokio::spawn(async move {
            for chunk in data.chunks(50_000) {
                sender.send(chunk.to_vec()).await.unwrap();
            }
        })
    };
    let got = read_bytes(&mut receiver, data.len()).await;
    writer.await.unwrap();
    assert!(got == data, "the bytes came back intact and in order");
    sender.send("κόσμε").await.unwrap();
    assert_eq!(read_bytes(&mut receiver, 10).await, "κόσμε".as_bytes());

    let info = sender.close(CloseCode::NORMAL, "done").await;
    assert_eq!(info.code, CloseCode::NORMAL);
    let metrics = reqwest_free_get(&server.addr, "/metrics").await;
    assert!(
        metrics.contains("ferry_bytes_received_total{route=\"bridge\"} 1000010"),
        "{metrics}"
    );
}

async fn reqwest_free_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_target_that_is_down_closes_with_1014_and_a_reason() {
    let down = closed_port().await;
    let server = Server::serve(&["--bridge", &format!("down=tcp://{down}")]);
    let url = format!("ws://{}/ws/bridge/down", server.addr);
    let (_sender, mut receiver, _) = ferry::connect(&url).await.unwrap();
    let Some(Incoming::Closed(info)) = receiver.recv().await else {
        panic!("expected a close");
    };
    assert_eq!(info.code, CloseCode::BAD_GATEWAY);
    assert_eq!(
        info.reason.as_str(),
        "bridge target unreachable: connection refused"
    );
    let metrics = reqwest_free_get(&server.addr, "/metrics").await;
    assert!(
        metrics.contains("ferry_bridge_failures_total{reason=\"unreachable\"} 1"),
        "{metrics}"
    );
    // The server stays up for others.
    assert!(
        reqwest_free_get(&server.addr, "/healthz")
            .await
            .ends_with("ok\n")
    );
}

#[tokio::test]
async fn the_target_closing_delivers_its_last_bytes_then_closes_1000() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"banner: hello\n").await.unwrap();
        // Closes right away: the bytes must still arrive before the close.
    });
    let server = Server::serve(&["--bridge", &format!("svc=tcp://{addr}")]);
    let (_sender, mut receiver, _) = ferry::connect(&format!("ws://{}/ws/bridge/svc", server.addr))
        .await
        .unwrap();
    assert_eq!(read_bytes(&mut receiver, 14).await, b"banner: hello\n");
    let Some(Incoming::Closed(info)) = receiver.recv().await else {
        panic!("expected a close");
    };
    assert_eq!(info.code, CloseCode::NORMAL);
    assert_eq!(info.reason.as_str(), "bridge target closed the connection");
}

#[tokio::test]
async fn the_client_closing_sends_eof_to_the_target() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut all = Vec::new();
        // read_to_end returns only at EOF.
        stream.read_to_end(&mut all).await.unwrap();
        let _ = tx.send(all);
    });
    let server = Server::serve(&["--bridge", &format!("sink=tcp://{addr}")]);
    let (sender, _receiver, _) = ferry::connect(&format!("ws://{}/ws/bridge/sink", server.addr))
        .await
        .unwrap();
    sender.send(b"last words".to_vec()).await.unwrap();
    sender.close(CloseCode::NORMAL, "bye").await;
    let all = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the target saw EOF")
        .unwrap();
    assert_eq!(all, b"last words");
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let echo = tcp_echo().await;
    let dir = std::env::temp_dir().join(format!("ferry-bridge-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ferry.toml");
    std::fs::write(
        &config,
        format!("[bridges.echo]\nto = \"tcp://{echo}\"\ntoken = \"s3cret-token\"\n"),
    )
    .unwrap();
    let server = Server::serve(&["--config", config.to_str().unwrap()]);
    let missing = raw_status(&server.addr, "/ws/bridge/echo", "").await;
    assert!(missing.starts_with("HTTP/1.1 401"), "{missing}");
    assert!(
        missing
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer")
    );
    let wrong = raw_status(&server.addr, "/ws/bridge/echo?token=guess", "").await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    assert!(
        !wrong.contains("guess"),
        "the refusal does not echo the token"
    );
    let header = raw_status(
        &server.addr,
        "/ws/bridge/echo",
        "Authorization: Bearer s3cret-token\r\n",
    )
    .await;
    assert!(header.starts_with("HTTP/1.1 101"), "{header}");
    let url = format!("ws://{}/ws/bridge/echo?token=s3cret-token", server.addr);
    let (sender, mut receiver, _) = ferry::connect(&url).await.unwrap();
    sender.send(b"ping".to_vec()).await.unwrap();
    assert_eq!(read_bytes(&mut receiver, 4).await, b"ping");
    let unknown = raw_status(&server.addr, "/ws/bridge/nope", "").await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn ferry_bridge_serves_one_target_on_any_path() {
    let echo = tcp_echo().await;
    let server = Server::bridge(&["--to", &format!("tcp://{echo}")]);
    for path in ["/", "/websockify", "/any/path?x=1"] {
        let url = format!("ws://{}{path}", server.addr);
        let (sender, mut receiver, _) = ferry::connect(&url).await.unwrap();
        sender.send(path.as_bytes().to_vec()).await.unwrap();
        assert_eq!(read_bytes(&mut receiver, path.len()).await, path.as_bytes());
        sender.close(CloseCode::NORMAL, "").await;
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_unix_socket_target() {
    let path = std::env::temp_dir().join(format!("ferry-bridge-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let (mut read, mut write) = stream.split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
    });
    let server = Server::bridge(&["--to", &format!("unix:{}", path.display())]);
    let (sender, mut receiver, _) = ferry::connect(&format!("ws://{}/", server.addr))
        .await
        .unwrap();
    sender
        .send(ferry::Message::binary(vec![42u8; 70_000]))
        .await
        .unwrap();
    assert_eq!(read_bytes(&mut receiver, 70_000).await, vec![42u8; 70_000]);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn bad_bridge_flags_name_the_flag_and_the_fix() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--bridge", "vnc=ftp://h:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--bridge"), "{err}");
    assert!(err.contains("tcp://HOST:PORT"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["bridge", "--to", "tcp://nohost"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to"));
}
