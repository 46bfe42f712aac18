//! Keepalive, close timeouts and the handler API, over loopback TCP.

use std::time::Duration;

use ferry::{
    CloseCode, CloseInfo, Config, Handler, Incoming, Initiator, Limits, Message, Request, Sender,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw peer: completes the server handshake, then hands back the stream for byte-level play.
async fn raw_server() -> (String, tokio::task::JoinHandle<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hs = ferry::proto::handshake::ServerHandshake::new(&Limits::default());
        let mut buf = [0u8; 2048];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if let Some(request) = hs.receive(&buf[..n]).unwrap() {
                stream.write_all(&request.accept(None)).await.unwrap();
                return stream;
            }
        }
    });
    (url, task)
}

#[tokio::test]
async fn keepalive_pings_and_fails_with_1011_without_pong() {
    let (url, peer) = raw_server().await;
    let config =
        Config::default().with_keepalive(Duration::from_millis(100), Duration::from_millis(200));
    let (_sender, mut receiver, _) = ferry::connect_with(&url, &config).await.unwrap();
    let mut peer = peer.await.unwrap();
    // The first frame the peer sees is a masked ping with an 8-byte payload.
    let mut header = [0u8; 2];
    peer.read_exact(&mut header).await.unwrap();
    assert_eq!(header, [0x89, 0x80 | 8]);
    // Never answer: the client fails the connection with 1011.
    match tokio::time::timeout(Duration::from_secs(10), receiver.recv())
        .await
        .unwrap()
    {
        Some(Incoming::Closed(info)) => {
            assert_eq!(info.code, CloseCode::INTERNAL_ERROR);
            assert_eq!(info.reason.as_str(), "keepalive ping timeout");
            assert_eq!(info.initiator, Initiator::Local);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn keepalive_survives_when_pongs_come_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (_sender, mut receiver) = ferry::accept(stream).await.unwrap();
        while receiver.recv().await.is_some() {}
    });
    let config =
        Config::default().with_keepalive(Duration::from_millis(50), Duration::from_millis(500));
    let (sender, mut receiver, _) = ferry::connect_with(&url, &config).await.unwrap();
    // Ten ping intervals pass with the connection still open.
    let quiet = tokio::time::timeout(Duration::from_millis(600), receiver.recv()).await;
    assert!(quiet.is_err(), "connection ended: {quiet:?}");
    assert!(!sender.is_closed());
    assert!(sender.close(CloseCode::NORMAL, "").await.clean);
}

#[tokio::test]
async fn close_times_out_when_the_peer_never_answers() {
    let (url, peer) = raw_server().await;
    let config = Config {
        limits: Limits {
            close_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        ..Config::default()
    };
    let (sender, _receiver, _) = ferry::connect_with(&url, &config).await.unwrap();
    let _peer = peer.await.unwrap(); // holds the connection open and silent
    let info = sender.close(CloseCode::NORMAL, "").await;
    assert_eq!(info.code, CloseCode::ABNORMAL);
    assert!(!info.clean);
    assert_eq!(info.reason.as_str(), "close timeout");
}

#[tokio::test]
async fn send_after_close_hands_the_message_back() {
    let (url, peer) = raw_server().await;
    let config = Config {
        limits: Limits {
            close_timeout: Duration::from_millis(100),
            ..Limits::default()
        },
        ..Config::default()
    };
    let (sender, _receiver, _) = ferry::connect_with(&url, &config).await.unwrap();
    let _peer = peer.await.unwrap();
    sender.close(CloseCode::NORMAL, "").await;
    let err = sender.send("late").await.unwrap_err();
    assert_eq!(err.0, Message::text("late"));
    assert!(matches!(
        sender.try_send("late"),
        Err(ferry::TrySendError::Closed(_))
    ));
}

struct Chat {
    events: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Handler for Chat {
    async fn on_open(&mut self, sender: &Sender, request: &Request) {
        let _ = self.events.send(format!("open {}", request.path()));
        let _ = sender.send("welcome").await;
    }

    async fn on_message(&mut self, message: Message, sender: &Sender) {
        let _ = self
            .events
            .send(format!("message {}", message.as_text().unwrap_or("?")));
        let _ = sender.send(message).await;
    }

    async fn on_close(&mut self, close: CloseInfo) {
        let _ = self.events.send(format!("close {}", close.code));
    }
}

#[tokio::test]
async fn handler_sees_open_message_and_close_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(ferry::serve(listener, Config::default(), move || Chat {
        events: tx.clone(),
    }));
    let (sender, mut receiver, _) = ferry::connect(&format!("ws://{addr}/room/1"))
        .await
        .unwrap();
    assert_eq!(
        receiver.recv_message().await,
        Some(Message::text("welcome"))
    );
    sender.send("hi").await.unwrap();
    assert_eq!(receiver.recv_message().await, Some(Message::text("hi")));
    sender.close(CloseCode::GOING_AWAY, "").await;
    assert_eq!(rx.recv().await.unwrap(), "open /room/1");
    assert_eq!(rx.recv().await.unwrap(), "message hi");
    assert_eq!(rx.recv().await.unwrap(), "close 1001");
}

/// Regression: `ferry::serve` never looked at the request, so a library user got no Origin
/// policy: any web page could open a connection with its visitors' cookies. Now a page from
/// another origin gets 403; the server's own origin and non-browser clients get in.
#[tokio::test]
async fn the_handler_server_refuses_pages_from_other_origins() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(ferry::serve(listener, Config::default(), move || Chat {
        events: tx.clone(),
    }));
    assert_eq!(
        status(addr, "Origin: https://evil.example\r\n").await,
        "403"
    );
    assert_eq!(status(addr, "").await, "101", "no Origin: not a browser");
    let own = format!("Origin: http://{addr}\r\n");
    assert_eq!(status(addr, &own).await, "101", "the server's own origin");
    // serve_with takes a policy of its own.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let origins = ferry::OriginPolicy::allow(["https://evil.example:443"]).unwrap();
    tokio::spawn(ferry::serve_with(
        listener,
        Config::default(),
        origins,
        move || Chat { events: tx.clone() },
    ));
    assert_eq!(
        status(open, "Origin: https://evil.example\r\n").await,
        "101"
    );
}

/// The status a handshake to `addr` gets, with `extra` header lines.
async fn status(addr: std::net::SocketAddr, extra: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 256];
    let n = stream.read(&mut head).await.unwrap();
    String::from_utf8_lossy(&head[..n])
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_owned()
}
