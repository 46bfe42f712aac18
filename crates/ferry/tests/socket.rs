//! The message contract over real loopback TCP and Unix sockets.

use std::time::Duration;

use bytes::Bytes;
use ferry::{
    CloseCode, Config, Incoming, Initiator, Limits, Message, Receiver, Sender, TrySendError,
};
use tokio::net::{TcpListener, TcpStream};

/// A server on loopback that hands each accepted connection to `serve`.
async fn server<F, Fut>(config: Config, serve: F) -> String
where
    F: Fn(Sender, Receiver) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let serve = std::sync::Arc::new(serve);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let serve = serve.clone();
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok((sender, receiver)) = ferry::accept_with(stream, &config).await {
                    serve(sender, receiver).await;
                }
            });
        }
    });
    url
}

async fn echo(sender: Sender, mut receiver: Receiver) {
    while let Some(Incoming::Message(message)) = receiver.recv().await {
        if sender.send(message).await.is_err() {
            break;
        }
    }
}

async fn next_message(receiver: &mut Receiver) -> Message {
    match tokio::time::timeout(Duration::from_secs(10), receiver.recv())
        .await
        .expect("timed out")
    {
        Some(Incoming::Message(message)) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn echo_roundtrip_text_and_binary() {
    let url = server(Config::default(), echo).await;
    let (sender, mut receiver, response) = ferry::connect(&url).await.unwrap();
    assert_eq!(response.status, 101);
    sender.send("hello").await.unwrap();
    sender.send(vec![0u8, 1, 2, 255]).await.unwrap();
    sender
        .send(Message::binary(vec![7u8; 200_000]))
        .await
        .unwrap();
    assert_eq!(next_message(&mut receiver).await, Message::text("hello"));
    assert_eq!(
        next_message(&mut receiver).await,
        Message::binary(vec![0u8, 1, 2, 255])
    );
    assert_eq!(next_message(&mut receiver).await.len(), 200_000);
    let close = sender.close(CloseCode::NORMAL, "bye").await;
    assert_eq!(close.code, CloseCode::NORMAL);
    assert_eq!(close.initiator, Initiator::Local);
    assert!(close.clean);
    match receiver.recv().await {
        Some(Incoming::Closed(info)) => assert_eq!(info, close),
        other => panic!("expected the close, got {other:?}"),
    }
    assert_eq!(receiver.recv().await, None);
}

#[tokio::test]
async fn split_halves_work_from_two_tasks() {
    let url = server(Config::default(), echo).await;
    let (sender, mut receiver, _) = ferry::connect(&url).await.unwrap();
    const N: usize = 500;
    let writer = tokio::spawn(async move {
        for i in 0..N {
            sender.send(format!("message {i}")).await.unwrap();
        }
        sender
    });
    let reader = tokio::spawn(async move {
        for i in 0..N {
            assert_eq!(
                next_message(&mut receiver).await,
                Message::text(format!("message {i}"))
            );
        }
        receiver
    });
    let sender = writer.await.unwrap();
    let _receiver = reader.await.unwrap();
    sender.close(CloseCode::NORMAL, "").await;
}

#[tokio::test]
async fn recv_cancelled_in_select_loses_nothing() {
    let url = server(Config::default(), echo).await;
    let (sender, mut receiver, _) = ferry::connect(&url).await.unwrap();
    const N: usize = 200;
    let feeder = sender.clone();
    tokio::spawn(async move {
        for i in 0..N {
            feeder
                .send(Message::binary(Bytes::from(
                    (i as u32).to_be_bytes().to_vec(),
                )))
                .await
                .unwrap();
            if i % 7 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let mut got = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_micros(200));
    let mut cancelled = 0;
    while got.len() < N {
        tokio::select! {
            item = receiver.recv() => match item {
                Some(Incoming::Message(m)) => got.push(u32::from_be_bytes(m.as_bytes().try_into().unwrap())),
                other => panic!("unexpected {other:?}"),
            },
            _ = ticks.tick() => cancelled += 1,
        }
    }
    assert_eq!(got, (0..N as u32).collect::<Vec<_>>());
    assert!(
        cancelled > 0,
        "the select never cancelled a recv; the test proves nothing"
    );
    sender.close(CloseCode::NORMAL, "").await;
}

#[tokio::test]
async fn close_delivers_every_queued_message_first() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let url = server(Config::default(), move |_sender, mut receiver: Receiver| {
        let tx = tx.clone();
        async move {
            while let Some(item) = receiver.recv().await {
                let _ = tx.send(item);
            }
        }
    })
    .await;
    let (sender, _receiver, _) = ferry::connect(&url).await.unwrap();
    const N: usize = 1000;
    for i in 0..N {
        sender
            .try_send(Message::binary(vec![(i % 251) as u8; 1000]))
            .unwrap();
    }
    let close = sender.close(CloseCode::GOING_AWAY, "done").await;
    assert!(close.clean, "{close:?}");
    for i in 0..N {
        match rx.recv().await.unwrap() {
            Incoming::Message(m) => {
                assert_eq!(m.as_bytes(), vec![(i % 251) as u8; 1000].as_slice())
            }
            other => panic!("message {i}: got {other:?}"),
        }
    }
    match rx.recv().await.unwrap() {
        Incoming::Closed(info) => {
            assert_eq!(info.code, CloseCode::GOING_AWAY);
            assert_eq!(info.reason.as_str(), "done");
            assert_eq!(info.initiator, Initiator::Remote);
        }
        other => panic!("expected the close, got {other:?}"),
    }
}

#[tokio::test]
async fn backpressure_against_a_peer_that_never_reads() {
    // A raw TCP peer that completes the handshake and then never reads again.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stalled = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (mut stream, _) = complete_server_handshake(stream).await;
        // Hold the connection open, unread.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
    });
    let budget = 256 * 1024;
    let config = Config {
        limits: Limits {
            send_queue_bytes: budget,
            ..Limits::default()
        },
        ..Config::default()
    };
    let (sender, _receiver, _) = ferry::connect_with(&format!("ws://{addr}/"), &config)
        .await
        .unwrap();
    let chunk = Message::binary(vec![1u8; 16 * 1024]);
    // Fill the socket buffers and the queue until try_send refuses.
    let mut accepted = 0usize;
    let refused = loop {
        match sender.try_send(chunk.clone()) {
            Ok(()) => accepted += 1,
            Err(TrySendError::Full(message)) => break message,
            Err(other) => panic!("{other:?}"),
        }
        if accepted.is_multiple_of(16) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(
            accepted < 100_000,
            "the queue never filled: no backpressure"
        );
    };
    assert_eq!(refused, chunk, "the refused message comes back whole");
    assert!(
        sender.buffered_amount() <= budget,
        "queue over budget: {}",
        sender.buffered_amount()
    );
    assert!(sender.buffered_amount() + chunk.len() > budget);
    // send() waits instead of queueing beyond the budget.
    let waited = tokio::time::timeout(Duration::from_millis(300), sender.send(chunk.clone())).await;
    assert!(waited.is_err(), "send should wait while the queue is full");
    assert!(sender.buffered_amount() <= budget);
    stalled.abort();
}

/// Reads a client handshake and answers 101, byte-exactly, with nothing but the proto crate.
async fn complete_server_handshake(mut stream: TcpStream) -> (TcpStream, ferry::Request) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut hs = ferry::proto::handshake::ServerHandshake::new(&Limits::default());
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if let Some(request) = hs.receive(&buf[..n]).unwrap() {
            stream.write_all(&request.accept(None)).await.unwrap();
            return (stream, request);
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn unix_socket_roundtrip() {
    use tokio::net::UnixListener;
    let dir = std::env::temp_dir().join(format!("ferry-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (sender, receiver) = ferry::accept(stream).await.unwrap();
        echo(sender, receiver).await;
    });
    let url = format!("ws+unix://{}:/chat", path.display());
    let (sender, mut receiver, _) = ferry::connect(&url).await.unwrap();
    sender.send("over unix").await.unwrap();
    assert_eq!(
        next_message(&mut receiver).await,
        Message::text("over unix")
    );
    assert!(sender.close(CloseCode::NORMAL, "").await.clean);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn peer_close_is_reported_as_remote() {
    let url = server(Config::default(), |sender: Sender, _receiver| async move {
        sender.close(CloseCode::from(4000), "go away").await;
    })
    .await;
    let (_sender, mut receiver, _) = ferry::connect(&url).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), receiver.recv())
        .await
        .unwrap()
    {
        Some(Incoming::Closed(info)) => {
            assert_eq!(info.code, CloseCode::from(4000));
            assert_eq!(info.reason.as_str(), "go away");
            assert_eq!(info.initiator, Initiator::Remote);
            assert!(info.clean);
        }
        other => panic!("{other:?}"),
    }
}

/// Large messages, pipelined, of varying sizes and distinct contents, some held by the
/// application while later ones arrive: the driver reuses a large read buffer's allocation once
/// the message in it is gone, and a wrong reuse would corrupt a message still held.
#[tokio::test]
async fn pipelined_large_messages_survive_read_buffer_reuse() {
    let limits = Limits {
        max_message_size: 4 << 20,
        max_frame_size: 4 << 20,
        send_queue_bytes: 16 << 20,
        recv_queue_bytes: 16 << 20,
        ..Limits::default()
    };
    let config = Config {
        limits,
        ..Config::default()
    };
    let url = server(config.clone(), echo).await;
    let (sender, mut receiver, _) = ferry::connect_with(&url, &config).await.unwrap();
    let payload = |i: usize| -> Vec<u8> {
        let size = [100_000, 1 << 20, 300_000, (2 << 20) + 7, 65_537, 1 << 20][i % 6];
        (0..size).map(|j| ((j * 31 + i * 7) % 251) as u8).collect()
    };
    const N: usize = 24;
    let send = async {
        for i in 0..N {
            sender.send(Message::binary(payload(i))).await.unwrap();
        }
    };
    let receive = async {
        // Hold every echo until the end, so reused buffers cannot be the held ones.
        let mut held = Vec::new();
        for _ in 0..N {
            held.push(next_message(&mut receiver).await);
        }
        held
    };
    let ((), held) = tokio::join!(send, receive);
    for (i, message) in held.iter().enumerate() {
        assert!(
            message.as_bytes() == payload(i).as_slice(),
            "message {i} corrupted"
        );
    }
}

/// `split_with_driver` hands back the connection's work instead of spawning it: nothing moves
/// until the caller polls the `Drive`, everything does once it polls it beside its own work on
/// one task, and the `Drive` completes once the connection is closed.
#[tokio::test]
async fn a_split_connection_moves_only_while_its_drive_is_polled() {
    let config = Config::default();
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let ws = ferry::WebSocket::from_raw(server_io, ferry::proto::Role::Server, &config, None, &[]);
    let (sender, mut receiver, mut drive) = ws.split_with_driver();
    let (peer_sender, mut peer_receiver) = ferry::from_raw(
        client_io,
        ferry::proto::Role::Client,
        &config,
        None,
        Bytes::new(),
    );

    // Queued, but not polled: the peer hears nothing.
    sender.send("held").await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(200), peer_receiver.recv()).await;
    assert!(
        early.is_err(),
        "nothing moves while the drive is not polled"
    );

    // Polled beside an echo of one message on this same task: the held message goes out, the
    // peer's message comes in and is echoed, and the peer's close ends both.
    let work = async {
        assert_eq!(
            peer_receiver.recv_message().await,
            Some(Message::text("held"))
        );
        peer_sender.send("ping").await.unwrap();
        let message = receiver.recv_message().await.unwrap();
        sender.send(message).await.unwrap();
        assert_eq!(
            peer_receiver.recv_message().await,
            Some(Message::text("ping"))
        );
        peer_sender.close(CloseCode::NORMAL, "done").await;
        assert!(matches!(receiver.recv().await, Some(Incoming::Closed(_))));
    };
    let both = async { tokio::join!(&mut drive, work) };
    tokio::time::timeout(Duration::from_secs(5), both)
        .await
        .expect("the drive completes once the connection is closed");
    // Fused: polled again, it is ready at once.
    tokio::time::timeout(Duration::from_millis(100), &mut drive)
        .await
        .expect("a finished drive is ready");
}
