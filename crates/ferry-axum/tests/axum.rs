//! The extractor in a real axum app (`axum::serve`), reached by ferry's client over HTTP/1.1
//! and by hyper's HTTP/2 client with an extended CONNECT (RFC 8441).

use std::time::Duration;

use axum::Router;
use axum::response::Response;
use axum::routing::any;
use bytes::Bytes;
use ferry::proto::{Message, Role};
use ferry_axum::WebSocketUpgrade;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Echoes every message, prefixed with the HTTP version it came over.
async fn echo(ws: WebSocketUpgrade) -> Response {
    let version = if ws.is_http2() { "h2" } else { "h1" };
    ws.protocols(["echo.v2", "echo"])
        .on_upgrade(move |sender, mut receiver| async move {
            while let Some(message) = receiver.recv_message().await {
                let reply = match message {
                    Message::Text(text) => Message::text(format!("{version}: {text}")),
                    binary => binary,
                };
                if sender.send(reply).await.is_err() {
                    break;
                }
            }
        })
}

/// The same echo on a single-task `WebSocket`.
async fn echo_single_task(ws: WebSocketUpgrade) -> Response {
    let version = if ws.is_http2() { "h2" } else { "h1" };
    ws.protocols(["echo.v2", "echo"])
        .on_upgrade_websocket(move |mut ws| async move {
            while let Some(message) = ws.recv_message().await {
                let reply = match message {
                    Message::Text(text) => Message::text(format!("{version} one task: {text}")),
                    binary => binary,
                };
                if ws.send(reply).await.is_err() {
                    break;
                }
            }
        })
}

async fn app() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = Router::new()
        .route("/ws", any(echo))
        .route("/ws/one-task", any(echo_single_task));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn http1_echo_with_compression_and_a_subprotocol() {
    let addr = app().await;
    let config = ferry::Config {
        protocols: vec!["echo".into()],
        ..ferry::Config::default()
    };
    let (sender, mut receiver, response) = ferry::connect_with(&format!("ws://{addr}/ws"), &config)
        .await
        .unwrap();
    assert_eq!(response.protocol.as_deref(), Some("echo"));
    assert!(
        response.deflate.is_some(),
        "permessage-deflate is on by default"
    );
    sender.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        receiver.recv_message().await,
        Some(Message::text("h1: hello"))
    );
    let big = vec![7u8; 300_000];
    sender.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(receiver.recv_message().await, Some(Message::binary(big)));
    let closed = sender.close(ferry::CloseCode::NORMAL, "bye").await;
    assert_eq!(closed.code, ferry::CloseCode::NORMAL);
}

/// A request that is not a WebSocket handshake gets ferry's refusal from the extractor.
#[tokio::test]
async fn bad_handshakes_are_refused_by_the_extractor() {
    let addr = app().await;
    let head = |request: String| {
        let addr = addr.clone();
        async move {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = vec![0u8; 4096];
            let n = stream.read(&mut answer).await.unwrap();
            String::from_utf8_lossy(&answer[..n]).into_owned()
        }
    };
    let plain = head(format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n\r\n")).await;
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
    assert!(
        plain.to_ascii_lowercase().contains("upgrade: websocket"),
        "{plain}"
    );
    let version = head(format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    ))
    .await;
    assert!(version.starts_with("HTTP/1.1 426"), "{version}");
    assert!(
        version
            .to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{version}"
    );
}

/// hyper's own HTTP/2 client opens the WebSocket as a stream (extended CONNECT), and ferry's
/// client side runs on that stream.
#[tokio::test]
async fn http2_extended_connect() {
    let addr = app().await;
    let stream = TcpStream::connect(&addr).await.unwrap();
    let (mut requests, mut connection) =
        hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
    // The server's SETTINGS allow extended CONNECT once they have arrived: drive the
    // connection until they have.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !connection.is_extended_connect_protocol_enabled() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "axum::serve never allowed extended CONNECT"
        );
        tokio::select! {
            ended = &mut connection => panic!("the HTTP/2 connection ended: {ended:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    tokio::spawn(connection);
    let open = |protocol: &'static str| {
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://{addr}/ws"))
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "echo.v2")
            .body(Empty::<Bytes>::new())
            .unwrap();
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static(protocol));
        request
    };
    let unknown = requests.send_request(open("connect-udp")).await.unwrap();
    assert_eq!(unknown.status(), 501);

    let mut response = requests.send_request(open("websocket")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["sec-websocket-protocol"], "echo.v2");
    assert!(!response.headers().contains_key("sec-websocket-accept"));
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    let (sender, mut receiver) = ferry::from_raw(
        TokioIo::new(upgraded),
        Role::Client,
        &ferry::Config::default(),
        None,
        Bytes::new(),
    );
    sender.send(Message::text("over a stream")).await.unwrap();
    assert_eq!(
        receiver.recv_message().await,
        Some(Message::text("h2: over a stream"))
    );
    let closed = sender.close(ferry::CloseCode::NORMAL, "bye").await;
    assert_eq!(closed.code, ferry::CloseCode::NORMAL);
}

/// The single-task handler over HTTP/1.1 (on axum's socket itself) and HTTP/2 (on hyper's
/// stream): the same echo, compression and subprotocol as the handles.
#[tokio::test]
async fn a_single_task_handler_over_both_versions() {
    let addr = app().await;
    let config = ferry::Config {
        protocols: vec!["echo".into()],
        ..ferry::Config::default()
    };
    let (sender, mut receiver, response) =
        ferry::connect_with(&format!("ws://{addr}/ws/one-task"), &config)
            .await
            .unwrap();
    assert_eq!(response.protocol.as_deref(), Some("echo"));
    assert!(response.deflate.is_some());
    sender.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        receiver.recv_message().await,
        Some(Message::text("h1 one task: hello"))
    );
    let big = vec![7u8; 300_000];
    sender.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(receiver.recv_message().await, Some(Message::binary(big)));
    assert!(sender.close(ferry::CloseCode::NORMAL, "bye").await.clean);

    let http2 = ferry::http2::Http2Connection::connect(&format!("ws://{addr}"), &config)
        .await
        .unwrap();
    let (sender, mut receiver, _) = http2.websocket("/ws/one-task").await.unwrap();
    sender.send(Message::text("over a stream")).await.unwrap();
    assert_eq!(
        receiver.recv_message().await,
        Some(Message::text("h2 one task: over a stream"))
    );
    assert!(sender.close(ferry::CloseCode::NORMAL, "").await.clean);
}
