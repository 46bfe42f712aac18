//! The single-task `WebSocket`: the same message contract as the split handles, driven by the
//! task that owns it. Peers are ferry's split client over loopback TCP or in-memory pipes, and
//! a raw TCP peer where the bytes on the wire are the point.

use std::time::Duration;

use bytes::Bytes;
use ferry::{
    CloseCode, Config, Incoming, Initiator, Limits, Message, Receiver, Role, Sender, TrySendError,
    WebSocket,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// A loopback server whose every connection is a `WebSocket` handed to `serve`.
async fn server<F, Fut>(config: Config, serve: F) -> String
where
    F: Fn(WebSocket<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let serve = std::sync::Arc::new(serve);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let serve = serve.clone();
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(ws) = WebSocket::accept(stream, &config).await {
                    serve(ws).await;
                }
            });
        }
    });
    url
}

async fn echo<S>(mut ws: WebSocket<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    while let Some(Incoming::Message(message)) = ws.recv().await {
        if ws.send(message).await.is_err() {
            break;
        }
    }
}

async fn next(receiver: &mut Receiver) -> Incoming {
    tokio::time::timeout(WAIT, receiver.recv())
        .await
        .expect("timed out")
        .expect("the receiver ended without a close")
}

async fn next_message(receiver: &mut Receiver) -> Message {
    match next(receiver).await {
        Incoming::Message(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// A message of `len` bytes that says which one it is.
fn numbered(i: usize, len: usize) -> Message {
    let mut data = vec![(i % 251) as u8; len.max(8)];
    data[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Message::binary(data)
}

/// A server `WebSocket` on one end of an in-memory pipe of `pipe` bytes, a split client on the
/// other.
fn pipe_pair(config: &Config, pipe: usize) -> (WebSocket<DuplexStream>, Sender, Receiver) {
    let (server_io, client_io) = tokio::io::duplex(pipe);
    let ws = WebSocket::from_raw(server_io, Role::Server, config, None, &[]);
    let (sender, receiver) = ferry::from_raw(client_io, Role::Client, config, None, Bytes::new());
    (ws, sender, receiver)
}

#[tokio::test]
async fn echoes_text_and_binary_of_every_size_whole_and_in_order() {
    let url = server(Config::default(), echo).await;
    let (sender, mut receiver, _) = ferry::connect(&url).await.unwrap();
    let sizes = [0, 1, 125, 126, 65_535, 65_536, 200_000];
    for (i, &len) in sizes.iter().enumerate() {
        sender.send(numbered(i, len)).await.unwrap();
        sender
            .send(Message::text("é".repeat(len / 2)))
            .await
            .unwrap();
    }
    for (i, &len) in sizes.iter().enumerate() {
        assert_eq!(next_message(&mut receiver).await, numbered(i, len));
        assert_eq!(
            next_message(&mut receiver).await,
            Message::text("é".repeat(len / 2))
        );
    }
    let info = sender.close(CloseCode::NORMAL, "done").await;
    assert!(info.clean, "{info:?}");
}

/// Many messages in flight at once: the answers to one read's batch leave together, and none is
/// lost or reordered whatever the pipe's size cuts them into.
#[tokio::test]
async fn a_thousand_pipelined_messages_come_back_in_order() {
    for pipe in [64, 1000, 1 << 16] {
        let (ws, sender, mut receiver) = pipe_pair(&Config::default(), pipe);
        let server = tokio::spawn(echo(ws));
        let writer = tokio::spawn(async move {
            for i in 0..1000 {
                sender.send(numbered(i, 8 + i % 300)).await.unwrap();
            }
            sender
        });
        for i in 0..1000 {
            assert_eq!(
                next_message(&mut receiver).await,
                numbered(i, 8 + i % 300),
                "pipe {pipe}"
            );
        }
        let sender = writer.await.unwrap();
        assert!(sender.close(CloseCode::NORMAL, "").await.clean);
        tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn try_send_hands_the_message_back_when_the_buffer_is_full() {
    let budget = 64 * 1024;
    let config = Config {
        limits: Limits {
            send_queue_bytes: budget,
            ..Limits::default()
        },
        ..Config::default()
    };
    // The client end is held and never read: only the pipe's 4 KiB and the budget take bytes.
    let (server_io, _client_io) = tokio::io::duplex(4096);
    let mut ws = WebSocket::from_raw(server_io, Role::Server, &config, None, &[]);
    let chunk = Message::binary(vec![7u8; 8 * 1024]);
    let mut accepted = 0;
    let refused = loop {
        match ws.try_send(chunk.clone()) {
            Ok(()) => accepted += 1,
            Err(TrySendError::Full(message)) => break message,
            Err(other) => panic!("{other:?}"),
        }
        assert!(accepted < 1000, "the buffer never filled: no backpressure");
    };
    assert_eq!(refused, chunk, "the refused message comes back whole");
    assert!(ws.buffered_amount() <= budget, "{}", ws.buffered_amount());
    assert!(ws.buffered_amount() + chunk.len() > budget);
    // send() waits rather than going over the budget.
    let waited = tokio::time::timeout(Duration::from_millis(200), ws.send(chunk.clone())).await;
    assert!(waited.is_err(), "send should wait while the buffer is full");
    assert!(ws.buffered_amount() <= budget);
}

#[tokio::test]
async fn a_peer_close_is_the_last_item_and_is_answered() {
    let (mut ws, sender, mut receiver) = pipe_pair(&Config::default(), 1 << 16);
    sender.send("last words").await.unwrap();
    let client = tokio::spawn(async move {
        let info = sender.close(CloseCode::from(4001), "bye").await;
        (info, receiver.recv().await)
    });
    assert_eq!(
        tokio::time::timeout(WAIT, ws.recv()).await.unwrap(),
        Some(Incoming::Message(Message::text("last words")))
    );
    match tokio::time::timeout(WAIT, ws.recv()).await.unwrap() {
        Some(Incoming::Closed(info)) => {
            assert_eq!(info.code, CloseCode::from(4001));
            assert_eq!(info.reason.as_str(), "bye");
            assert_eq!(info.initiator, Initiator::Remote);
            assert!(info.clean);
        }
        other => panic!("expected the close, got {other:?}"),
    }
    assert_eq!(ws.recv().await, None, "nothing after the close");
    assert!(ws.is_closed());
    assert!(matches!(
        ws.send("too late").await,
        Err(ferry::SendError(m)) if m == Message::text("too late")
    ));
    let (info, _) = tokio::time::timeout(WAIT, client).await.unwrap().unwrap();
    assert!(info.clean, "the server answered the close: {info:?}");
}

#[tokio::test]
async fn close_sends_what_is_queued_first_then_the_code() {
    let (mut ws, _sender, mut receiver) = pipe_pair(&Config::default(), 1 << 16);
    for i in 0..50 {
        ws.try_send(numbered(i, 10_000)).unwrap();
    }
    let closing = tokio::spawn(async move { ws.close(CloseCode::from(4002), "enough").await });
    for i in 0..50 {
        assert_eq!(next_message(&mut receiver).await, numbered(i, 10_000));
    }
    match next(&mut receiver).await {
        Incoming::Closed(info) => {
            assert_eq!(info.code, CloseCode::from(4002));
            assert_eq!(info.reason.as_str(), "enough");
            assert_eq!(info.initiator, Initiator::Remote);
        }
        other => panic!("{other:?}"),
    }
    let info = tokio::time::timeout(WAIT, closing).await.unwrap().unwrap();
    assert_eq!(info.code, CloseCode::from(4002));
    assert_eq!(info.initiator, Initiator::Local);
    assert!(info.clean, "{info:?}");
}

#[tokio::test]
async fn dropping_an_open_websocket_closes_it_with_1000() {
    let (mut ws, sender, mut receiver) = pipe_pair(&Config::default(), 1 << 16);
    sender.send("hi").await.unwrap();
    assert!(matches!(ws.recv().await, Some(Incoming::Message(_))));
    ws.try_send("queued before the drop").unwrap();
    drop(ws);
    assert_eq!(
        next_message(&mut receiver).await,
        Message::text("queued before the drop")
    );
    match next(&mut receiver).await {
        Incoming::Closed(info) => {
            assert_eq!(info.code, CloseCode::NORMAL);
            assert_eq!(info.initiator, Initiator::Remote);
        }
        other => panic!("{other:?}"),
    }
}

/// RFC 6455 §5.1: a server MUST close the connection on an unmasked client frame, with 1002.
/// The raw peer sees the close frame on the wire.
#[tokio::test]
async fn an_unmasked_client_frame_closes_with_1002() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
    let url = server(Config::default(), move |mut ws| {
        let tx = tx.clone();
        async move {
            let item = ws.recv().await;
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(item);
            }
        }
    })
    .await;
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (mut client, request) = ferry::proto::handshake::ClientHandshake::new(
        &ferry::proto::handshake::ClientRequest::new(addr, "/"),
        &Limits::default(),
    )
    .unwrap();
    stream.write_all(&request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if client.receive(&buf[..n]).unwrap().is_some() {
            break;
        }
    }
    // An unmasked text frame "hi".
    stream.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let mut wire = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut wire))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wire.first(), Some(&0x88), "a close frame: {wire:?}");
    assert_eq!(
        wire.get(2..4),
        Some(&1002u16.to_be_bytes()[..]),
        "code 1002: {wire:?}"
    );
    match tokio::time::timeout(WAIT, rx).await.unwrap().unwrap() {
        Some(Incoming::Closed(info)) => {
            assert_eq!(info.code, CloseCode::PROTOCOL_ERROR);
            assert_eq!(info.initiator, Initiator::Local);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn split_keeps_messages_already_received() {
    let (mut ws, sender, mut receiver) = pipe_pair(&Config::default(), 1 << 16);
    for i in 0..20 {
        sender.send(numbered(i, 100)).await.unwrap();
    }
    // One read brings in several; take the first, then split.
    assert_eq!(ws.recv().await, Some(Incoming::Message(numbered(0, 100))));
    let (ws_sender, mut ws_receiver) = ws.split();
    for i in 1..20 {
        assert_eq!(next_message(&mut ws_receiver).await, numbered(i, 100));
    }
    ws_sender.send("from the split sender").await.unwrap();
    assert_eq!(
        next_message(&mut receiver).await,
        Message::text("from the split sender")
    );
}

/// Keepalive runs while the owner waits in `recv`: a peer that never answers pings is closed
/// with 1011.
#[tokio::test]
async fn keepalive_closes_a_peer_that_never_answers_pings() {
    let config =
        Config::default().with_keepalive(Duration::from_millis(50), Duration::from_millis(100));
    let (server_io, mut client_io) = tokio::io::duplex(1 << 16);
    let mut ws = WebSocket::from_raw(server_io, Role::Server, &config, None, &[]);
    // The raw peer reads (so writes never block) but never answers.
    let reader = tokio::spawn(async move {
        let mut wire = Vec::new();
        let _ = client_io.read_to_end(&mut wire).await;
        wire
    });
    match tokio::time::timeout(WAIT, ws.recv()).await.unwrap() {
        Some(Incoming::Closed(info)) => {
            assert_eq!(info.code, CloseCode::INTERNAL_ERROR);
            assert_eq!(info.reason.as_str(), "keepalive ping timeout");
        }
        other => panic!("{other:?}"),
    }
    let wire = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!(wire.first(), Some(&0x89), "a ping went out first: {wire:?}");
}

/// A TCP peer that keepalive found dead is reset, not closed with a FIN behind whatever is
/// still queued: bytes the kernel held could otherwise reach the peer when the path comes back,
/// after the messages of a newer connection (tests/faults.rs in ferry-cli shows the reconnecting
/// client's case).
#[tokio::test]
async fn keepalive_resets_a_tcp_peer_that_never_answers() {
    let config =
        Config::default().with_keepalive(Duration::from_millis(50), Duration::from_millis(100));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = WebSocket::from_raw(stream, Role::Server, &config, None, &[]);
        let closed = tokio::time::timeout(WAIT, ws.recv()).await.unwrap();
        drop(ws);
        closed
    });
    let mut peer = TcpStream::connect(addr).await.unwrap();
    let closed = server.await.unwrap();
    assert!(
        matches!(&closed, Some(Incoming::Closed(info)) if info.code == CloseCode::INTERNAL_ERROR),
        "{closed:?}"
    );
    // The peer read nothing while the server pinged; now it finds a reset, not an EOF.
    let mut wire = Vec::new();
    let end = tokio::time::timeout(WAIT, peer.read_to_end(&mut wire))
        .await
        .unwrap();
    let err = end.expect_err("a reset, not an orderly close");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

/// The client side of a single-task `WebSocket`: its handshake (deflate offered and agreed),
/// pipelined messages of every size back whole and in order, then a clean close it starts.
#[tokio::test]
async fn a_client_websocket_opens_exchanges_and_closes() {
    let url = server(Config::default(), echo).await;
    let stream = TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches('/'))
        .await
        .unwrap();
    let (mut ws, response) = tokio::time::timeout(
        WAIT,
        WebSocket::connect_stream(stream, &url, &Config::default()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status, 101);
    assert!(response.deflate.is_some(), "permessage-deflate was agreed");
    let sizes = [0, 1, 125, 126, 65_535, 65_536, 300_000];
    for (i, &len) in sizes.iter().enumerate() {
        ws.send(numbered(i, len)).await.unwrap();
    }
    for (i, &len) in sizes.iter().enumerate() {
        match tokio::time::timeout(WAIT, ws.recv()).await.unwrap() {
            Some(Incoming::Message(message)) => assert_eq!(message, numbered(i, len)),
            other => panic!("message {i}: {other:?}"),
        }
    }
    let info = tokio::time::timeout(WAIT, ws.close(CloseCode::NORMAL, "done"))
        .await
        .unwrap();
    assert_eq!(info.code, CloseCode::NORMAL);
    assert_eq!(info.initiator, Initiator::Local);
    assert!(info.clean, "{info:?}");
}

/// A server that answers the upgrade with anything but 101 fails the client's handshake with
/// that status.
#[tokio::test]
async fn a_client_websocket_reports_a_refused_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0; 2048];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await;
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    let result = tokio::time::timeout(
        WAIT,
        WebSocket::connect_stream(stream, &format!("ws://{addr}/nowhere"), &Config::default()),
    )
    .await
    .unwrap();
    match result {
        Err(ferry::Error::Handshake(ferry::proto::handshake::HandshakeError::Status {
            code,
            ..
        })) => assert_eq!(code, 404),
        Err(other) => panic!("expected HTTP 404, got {other}"),
        Ok(_) => panic!("a 404 opened a connection"),
    }
}
