//! `ferry serve` as a user meets it: one port for the page, the WebSocket routes and metrics.

mod common;

use std::time::Duration;

use common::Server;
use ferry::{CloseCode, Config, Incoming, Limits, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain HTTP/1.1 request; returns the whole response as text.
async fn http(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn get(addr: &str, path: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

fn upgrade_request(addr: &str, path: &str, origin: Option<&str>) -> String {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
}

#[tokio::test]
async fn http_routes_answer() {
    let server = Server::serve(&[]);
    let page = get(&server.addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("text/html"));
    assert!(page.contains("<html"), "the page is embedded");
    assert!(
        get(&server.addr, "/app.js")
            .await
            .starts_with("HTTP/1.1 200 OK")
    );
    assert!(get(&server.addr, "/healthz").await.ends_with("ok\n"));
    let metrics = get(&server.addr, "/metrics").await;
    assert!(metrics.contains("ferry_connections_open 0"), "{metrics}");
    assert!(get(&server.addr, "/nope").await.starts_with("HTTP/1.1 404"));
    // A plain GET on a WebSocket route: 426 with a short body.
    let plain = get(&server.addr, "/ws/echo").await;
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
    assert!(
        plain.contains("Upgrade: websocket") || plain.contains("upgrade: websocket"),
        "{plain}"
    );
}

#[tokio::test]
async fn echo_route_round_trips_and_counts() {
    let server = Server::serve(&[]);
    let (sender, mut receiver, response) = ferry::connect(&format!("ws://{}/ws/echo", server.addr))
        .await
        .unwrap();
    assert!(response.deflate.is_some(), "compression is on by default");
    for text in ["hello", "κόσμε"] {
        sender.send(text).await.unwrap();
        assert_eq!(receiver.recv_message().await, Some(Message::text(text)));
    }
    sender.send(vec![0u8; 100_000]).await.unwrap();
    assert_eq!(
        receiver.recv_message().await.map(|m| m.len()),
        Some(100_000)
    );
    let metrics = get(&server.addr, "/metrics").await;
    assert!(metrics.contains("ferry_connections_open 1"), "{metrics}");
    assert!(
        metrics.contains("ferry_messages_received_total{route=\"echo\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_messages_sent_total{route=\"echo\"} 3"),
        "{metrics}"
    );
    assert!(sender.close(CloseCode::NORMAL, "").await.clean);
}

#[tokio::test]
async fn topic_delivers_to_every_subscriber() {
    let server = Server::serve(&[]);
    let url = format!("ws://{}/ws/topics/lobby", server.addr);
    let (alice, mut alice_rx, _) = ferry::connect(&url).await.unwrap();
    let (_bob, mut bob_rx, _) = ferry::connect(&url).await.unwrap();
    // Both subscriptions exist once the second handshake completes; give the server a moment
    // to register the second one before publishing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    alice.send("hi all").await.unwrap();
    assert_eq!(bob_rx.recv_message().await, Some(Message::text("hi all")));
    assert_eq!(alice_rx.recv_message().await, Some(Message::text("hi all")));
    let other = format!("ws://{}/ws/topics/other", server.addr);
    let (carol, _carol_rx, _) = ferry::connect(&other).await.unwrap();
    carol.send("elsewhere").await.unwrap();
    alice.send("second").await.unwrap();
    assert_eq!(
        bob_rx.recv_message().await,
        Some(Message::text("second")),
        "other topics stay apart"
    );
}

fn sigterm(server: &Server) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn closed_with_1001(receiver: &mut ferry::Receiver) {
    match tokio::time::timeout(Duration::from_secs(10), receiver.recv())
        .await
        .unwrap()
    {
        Some(Incoming::Closed(info)) => assert_eq!(info.code, CloseCode::GOING_AWAY),
        other => panic!("expected close 1001, got {other:?}"),
    }
}

/// The process's thread count, from /proc.
#[cfg(target_os = "linux")]
fn threads_of(server: &Server) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads: line")
}

#[cfg(target_os = "linux")]
#[test]
fn threads_sets_the_workers() {
    // The main thread waits in the runtime; the workers are N more.
    let server = Server::serve(&["--threads", "3"]);
    assert_eq!(threads_of(&server), 4);
}

#[tokio::test]
async fn one_thread_serves_echo_topics_and_shutdown() {
    // --threads 1: the single-threaded scheduler. Every route runs on it, including the
    // connection tasks of topic subscribers, and SIGTERM still closes each with 1001.
    let server = Server::serve(&["--threads", "1", "--grace", "5s"]);
    // One thread in all: the flag reached the runtime (a multi-threaded one adds its workers).
    #[cfg(target_os = "linux")]
    assert_eq!(threads_of(&server), 1);
    let echo = format!("ws://{}/ws/echo", server.addr);
    let (sender, mut receiver, _) = ferry::connect(&echo).await.unwrap();
    sender.send("one thread").await.unwrap();
    assert_eq!(
        receiver.recv_message().await,
        Some(Message::text("one thread"))
    );
    let topic = format!("ws://{}/ws/topics/solo", server.addr);
    let (publisher, mut own, _) = ferry::connect(&topic).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    publisher.send("to all").await.unwrap();
    assert_eq!(own.recv_message().await, Some(Message::text("to all")));
    sigterm(&server);
    closed_with_1001(&mut receiver).await;
    closed_with_1001(&mut own).await;
}

#[tokio::test]
async fn foreign_origin_is_refused_with_403() {
    let server = Server::serve(&[]);
    let refused = http(
        &server.addr,
        &upgrade_request(&server.addr, "/ws/echo", Some("https://evil.example")),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        !refused.contains("evil.example"),
        "the refusal does not echo client input"
    );
    let same = upgrade_request(
        &server.addr,
        "/ws/echo",
        Some(&format!("http://{}", server.addr)),
    );
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    stream.write_all(same.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    let allowed = Server::serve(&["--allow-origin", "https://app.example.com"]);
    let mut stream = TcpStream::connect(&allowed.addr).await.unwrap();
    stream
        .write_all(
            upgrade_request(&allowed.addr, "/ws/echo", Some("https://app.example.com")).as_bytes(),
        )
        .await
        .unwrap();
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}

#[tokio::test]
async fn slow_subscriber_is_closed_with_1013_and_counted() {
    let server = Server::serve(&["--send-queue", "64KiB"]);
    let url = format!("ws://{}/ws/topics/firehose", server.addr);
    // The slow one never reads: a raw socket that completes the handshake and sits.
    let mut slow = TcpStream::connect(&server.addr).await.unwrap();
    slow.write_all(upgrade_request(&server.addr, "/ws/topics/firehose", None).as_bytes())
        .await
        .unwrap();
    let config = Config {
        limits: Limits {
            send_queue_bytes: 64 << 20,
            ..Limits::default()
        },
        ..Config::default()
    };
    let (publisher, mut publisher_rx, _) = ferry::connect_with(&url, &config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let chunk = Message::binary(vec![7u8; 32 * 1024]);
    let mut dropped = false;
    for _ in 0..2000 {
        publisher.send(chunk.clone()).await.unwrap();
        // The publisher is a subscriber too, and keeps up.
        let _ = publisher_rx.recv().await;
        let metrics = get(&server.addr, "/metrics").await;
        if metrics.contains("ferry_topic_dropped_total{topic=\"firehose\"} ")
            && !metrics.contains("ferry_topic_dropped_total{topic=\"firehose\"} 0")
        {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the slow subscriber was never dropped");
    // The slow subscriber's connection ends with a close frame carrying 1013.
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut bytes)).await;
    let close = bytes
        .windows(4)
        .any(|w| w[0] == 0x88 && w[2..4] == [0x03, 0xF5]);
    assert!(close, "no close 1013 among {} bytes", bytes.len());
}

#[tokio::test]
async fn sigterm_closes_every_connection_with_1001_and_exits_0() {
    let server = Server::serve(&["--grace", "5s"]);
    let (sender, mut receiver, _) = ferry::connect(&format!("ws://{}/ws/echo", server.addr))
        .await
        .unwrap();
    sender.send("before").await.unwrap();
    assert_eq!(receiver.recv_message().await, Some(Message::text("before")));
    sigterm(&server);
    closed_with_1001(&mut receiver).await;
    let exit = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.child.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(exit.success(), "{exit:?}");
}
