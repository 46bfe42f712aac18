//! ferry's client over HTTP/2 (RFC 8441) against `ferry serve`: many WebSockets as streams of
//! one connection, pub/sub between two of them, TLS with ALPN h2, and the fall back to
//! HTTP/1.1 when the server does not allow WebSockets over HTTP/2.

mod common;

use common::Server;
use ferry::http2::Http2Connection;
use ferry::{CloseCode, Config, Error, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `ferry_connections_total` by its `http` label.
async fn connections_by_http(addr: &str) -> (u64, u64) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let count = |label: &str| {
        let prefix = format!("ferry_connections_total{{http=\"{label}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} line in {text}"))
    };
    (count("1.1"), count("2"))
}

#[tokio::test]
async fn many_websockets_share_one_http2_connection() {
    let server = Server::serve(&[]);
    let connection = Http2Connection::connect(&format!("ws://{}", server.addr), &Config::default())
        .await
        .unwrap();
    let mut echoes = Vec::new();
    for _ in 0..8 {
        echoes.push(connection.websocket("/ws/echo").await.unwrap());
    }
    for (i, (sender, _, response)) in echoes.iter().enumerate() {
        assert_eq!(
            response.status, 200,
            "an extended CONNECT is answered with 200"
        );
        assert!(response.deflate.is_some(), "permessage-deflate over HTTP/2");
        sender
            .send(Message::text(format!("stream {i}")))
            .await
            .unwrap();
    }
    let big = vec![42u8; 1 << 20];
    echoes[3]
        .0
        .send(Message::binary(big.clone()))
        .await
        .unwrap();
    for (i, (_, receiver, _)) in echoes.iter_mut().enumerate() {
        assert_eq!(
            receiver.recv_message().await,
            Some(Message::text(format!("stream {i}")))
        );
    }
    assert_eq!(echoes[3].1.recv_message().await, Some(Message::binary(big)));

    // Pub/sub between two streams of the same connection.
    let (subscriber_tx, mut subscriber, _) = connection.websocket("/ws/topics/news").await.unwrap();
    let (publisher, _publisher_rx, _) = connection.websocket("/ws/topics/news").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    publisher.send(Message::text("extra!")).await.unwrap();
    assert_eq!(
        subscriber.recv_message().await,
        Some(Message::text("extra!"))
    );

    for (sender, _, _) in &echoes {
        let closed = sender.close(CloseCode::NORMAL, "done").await;
        assert_eq!(closed.code, CloseCode::NORMAL);
    }
    subscriber_tx.close(CloseCode::NORMAL, "done").await;
    assert!(
        connection.is_open(),
        "closing WebSockets ends streams, not the connection"
    );
    assert_eq!(connections_by_http(&server.addr).await, (0, 10));
}

#[tokio::test]
async fn falls_back_to_http1_when_the_server_has_no_http2() {
    let server = Server::serve(&["--http2", "off"]);
    let url = format!("ws://{}/ws/echo", server.addr);
    match Http2Connection::connect(&url, &Config::default()).await {
        Err(Error::Http2Unavailable(_)) => {}
        other => panic!("expected Http2Unavailable, got {other:?}"),
    }
    let (sender, mut receiver, response) = ferry::http2::connect(&url, &Config::default())
        .await
        .unwrap();
    assert_eq!(response.status, 101, "HTTP/1.1 after the fall back");
    sender.send(Message::text("hi")).await.unwrap();
    assert_eq!(receiver.recv_message().await, Some(Message::text("hi")));
    assert_eq!(connections_by_http(&server.addr).await, (1, 0));
}

#[tokio::test]
async fn wss_over_http2_with_alpn() {
    let dir = std::env::temp_dir().join(format!("ferry-h2-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let server = Server::start(
        "serve",
        "https://",
        &[
            "--tls-cert",
            dir.join("cert.pem").to_str().unwrap(),
            "--tls-key",
            dir.join("key.pem").to_str().unwrap(),
        ],
    );
    let tls = ferry::tls::TlsOptions {
        ca_file: Some(dir.join("cert.pem")),
        only_ca_file: true,
        ..ferry::tls::TlsOptions::default()
    };
    let config = Config {
        tls: Some(tls.client_config().unwrap()),
        ..Config::default()
    };
    let port = server.addr.rsplit_once(':').unwrap().1;
    let url = format!("wss://localhost:{port}/ws/echo");
    let (sender, mut receiver, response) = ferry::http2::connect(&url, &config).await.unwrap();
    assert_eq!(response.status, 200, "ALPN chose h2");
    sender.send(Message::text("secure stream")).await.unwrap();
    assert_eq!(
        receiver.recv_message().await,
        Some(Message::text("secure stream"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The limits hold per WebSocket over HTTP/2 as over HTTP/1.1: a message over
/// --max-message-size closes that stream's WebSocket with 1009, and its neighbour on the same
/// connection goes on.
#[tokio::test]
async fn limits_close_one_stream_and_spare_its_neighbour() {
    let server = Server::serve(&["--max-message-size", "1KiB"]);
    let connection = Http2Connection::connect(&format!("ws://{}", server.addr), &Config::default())
        .await
        .unwrap();
    let (big_tx, mut big_rx, _) = connection.websocket("/ws/echo").await.unwrap();
    let (small_tx, mut small_rx, _) = connection.websocket("/ws/echo").await.unwrap();
    big_tx.send(Message::binary(vec![1u8; 1025])).await.unwrap();
    let closed = loop {
        match big_rx.recv().await {
            Some(ferry::Incoming::Closed(info)) => break info,
            Some(ferry::Incoming::Message(_)) => continue,
            None => panic!("no close item"),
        }
    };
    assert_eq!(closed.code, CloseCode::MESSAGE_TOO_BIG);
    small_tx
        .send(Message::binary(vec![2u8; 1024]))
        .await
        .unwrap();
    assert_eq!(
        small_rx.recv_message().await,
        Some(Message::binary(vec![2u8; 1024]))
    );
    assert!(connection.is_open());
}

/// --max-connections-per-ip counts every WebSocket of an HTTP/2 connection, beside the
/// connection itself: with 3 allowed, the connection and two WebSockets fit, a third gets 503.
#[tokio::test]
async fn the_per_ip_limit_counts_each_websocket_of_a_connection() {
    let server = Server::serve(&["--max-connections-per-ip", "3"]);
    let connection = Http2Connection::connect(&format!("ws://{}", server.addr), &Config::default())
        .await
        .unwrap();
    let first = connection.websocket("/ws/echo").await.unwrap();
    let second = connection.websocket("/ws/echo").await.unwrap();
    match connection.websocket("/ws/echo").await {
        Err(Error::Handshake(ferry::proto::handshake::HandshakeError::Status { code, .. })) => {
            assert_eq!(code, 503);
        }
        other => panic!("expected 503, got {:?}", other.map(|(_, _, r)| r.status)),
    }
    // Closing one frees its place.
    first.0.close(CloseCode::NORMAL, "done").await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let third = connection.websocket("/ws/echo").await.unwrap();
    third.0.send(Message::text("in")).await.unwrap();
    let (_, mut third_rx, _) = third;
    assert_eq!(third_rx.recv_message().await, Some(Message::text("in")));
    drop(second);
}
