//! Runs the chat example's app (`examples/chat.rs`) in `axum::serve`: its page, and two users,
//! one over HTTP/1.1 and one over HTTP/2, who hear each other.

#[path = "../examples/chat.rs"]
mod chat;

use ferry::http2::Http2Connection;
use ferry::{CloseCode, Config, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, chat::app()).await });
    addr
}

/// The next text that is not a join or leave notice.
async fn next_said(receiver: &mut ferry::Receiver) -> Message {
    loop {
        let message = receiver.recv_message().await.expect("a message");
        if !matches!(&message, Message::Text(text) if text.starts_with("* ")) {
            return message;
        }
    }
}

#[tokio::test]
async fn two_users_over_http1_and_http2_hear_each_other() {
    let addr = start().await;

    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).await.unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("new WebSocket("),
        "the page opens a WebSocket"
    );

    let (ann, mut ann_rx, response) = ferry::connect(&format!("ws://{addr}/ws?name=ann"))
        .await
        .unwrap();
    assert_eq!(response.status, 101);
    assert!(response.deflate.is_some(), "compressed by default");
    let connection = Http2Connection::connect(&format!("ws://{addr}"), &Config::default())
        .await
        .unwrap();
    let (bob, mut bob_rx, response) = connection.websocket("/ws?name=bob").await.unwrap();
    assert_eq!(response.status, 200, "an HTTP/2 stream");
    // Ann hears Bob join before anything Bob says.
    assert_eq!(
        ann_rx.recv_message().await,
        Some(Message::text("* ann joined"))
    );
    assert_eq!(
        ann_rx.recv_message().await,
        Some(Message::text("* bob joined"))
    );

    ann.send(Message::text("hi bob")).await.unwrap();
    assert_eq!(next_said(&mut bob_rx).await, Message::text("ann: hi bob"));
    bob.send(Message::text("hi ann")).await.unwrap();
    assert_eq!(next_said(&mut ann_rx).await, Message::text("ann: hi bob"));
    assert_eq!(next_said(&mut ann_rx).await, Message::text("bob: hi ann"));

    // Over the example's 4 KiB limit: that user is closed with 1009, the room goes on.
    bob.send(Message::text("x".repeat(5000))).await.unwrap();
    let closed = bob.closed().await;
    assert_eq!(closed.code, CloseCode::MESSAGE_TOO_BIG);
    ann.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        next_said(&mut ann_rx).await,
        Message::text("ann: still here")
    );
}
