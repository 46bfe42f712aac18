//! Graceful shutdown loses nothing already accepted for sending.

mod common;

use std::time::Duration;

use common::Server;
use ferry::{CloseCode, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn metrics(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn sigterm_delivers_every_queued_message_before_1001() {
    const COUNT: usize = 200;
    let server = Server::serve(&["--grace", "10s"]);
    let url = format!("ws://{}/ws/topics/shutdown", server.addr);
    // The subscriber does not read yet: what is published piles up in its queue on the server.
    let (_sub_sender, mut subscriber, _) = ferry::connect(&url).await.unwrap();
    let (publisher, _publisher_rx, _) = ferry::connect(&url).await.unwrap();
    for i in 0..COUNT {
        let mut payload = vec![b'x'; 4096];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        publisher.send(payload).await.unwrap();
    }
    // Wait until the server has published all of them (two subscribers each).
    let want = format!(
        "ferry_messages_sent_total{{route=\"topics\"}} {}",
        2 * COUNT
    );
    let mut published = false;
    for _ in 0..200 {
        if metrics(&server.addr).await.contains(&want) {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(published, "the server published every message");

    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Only now does the subscriber read: every message, in order, then the close.
    for i in 0..COUNT {
        let item = tokio::time::timeout(Duration::from_secs(10), subscriber.recv())
            .await
            .unwrap();
        let Some(Incoming::Message(message)) = item else {
            panic!("message {i} missing: got {item:?}");
        };
        assert_eq!(message.len(), 4096);
        assert_eq!(&message.as_bytes()[..8], &(i as u64).to_be_bytes());
    }
    match subscriber.recv().await {
        Some(Incoming::Closed(info)) => {
            assert_eq!(info.code, CloseCode::GOING_AWAY);
            assert!(info.clean, "a clean closing handshake");
        }
        other => panic!("expected close 1001, got {other:?}"),
    }
    let exit = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.child.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(exit.success(), "{exit:?}");
}
