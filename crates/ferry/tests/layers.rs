//! One behaviour suite for every public way to hold a connection: the single-task
//! [`WebSocket`], the [`Sender`]/[`Receiver`] handles with the connection's own task, the same
//! handles with their [`Drive`] polled by the test's task, and a [`Handler`] under
//! `ferry::serve_with`. Each check runs against each layer as the server (each it applies to:
//! a receive budget means nothing to a `Handler`, clones nothing to a `WebSocket`), with a raw
//! client writing frames byte by byte, so a difference between the layers is a failing test.

mod common;

use std::future::Future;
use std::time::Duration;

use ferry::{
    CloseCode, CloseInfo, Config, Drive, Handler, Incoming, Initiator, Limits, Message,
    OriginPolicy, Receiver, Request, Sender, TrySendError, WebSocket,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone, Copy, Debug)]
enum Layer {
    WebSocket,
    Handles,
    /// The handles of `WebSocket::split_with_driver`: the test's task polls the `Drive` while
    /// it waits on the connection, and at no other time.
    Driven,
    Handler,
}

const LAYERS: [Layer; 4] = [
    Layer::WebSocket,
    Layer::Handles,
    Layer::Driven,
    Layer::Handler,
];

/// The server end, whichever layer holds it.
enum Server {
    WebSocket(Box<WebSocket<TcpStream>>),
    Handles(Sender, Receiver),
    Driven(Sender, Receiver, Box<Drive<TcpStream>>),
    /// The handler's sender, and its events in order.
    Handler(Sender, mpsc::UnboundedReceiver<Incoming>),
}

impl Server {
    async fn recv(&mut self) -> Option<Incoming> {
        match self {
            Server::WebSocket(ws) => ws.recv().await,
            Server::Handles(_, receiver) => receiver.recv().await,
            Server::Driven(_, receiver, drive) => driving(drive, receiver.recv()).await,
            Server::Handler(_, events) => events.recv().await,
        }
    }

    async fn send(&mut self, message: Message) {
        match self {
            Server::WebSocket(ws) => ws.send(message).await.unwrap(),
            Server::Driven(sender, _, drive) => driving(drive, sender.send(message)).await.unwrap(),
            Server::Handles(sender, _) | Server::Handler(sender, _) => {
                sender.send(message).await.unwrap()
            }
        }
    }

    fn try_send(&mut self, message: Message) -> Result<(), TrySendError> {
        match self {
            Server::WebSocket(ws) => ws.try_send(message),
            Server::Handles(sender, _)
            | Server::Driven(sender, _, _)
            | Server::Handler(sender, _) => sender.try_send(message),
        }
    }

    fn buffered_amount(&mut self) -> usize {
        match self {
            Server::WebSocket(ws) => ws.buffered_amount(),
            Server::Handles(sender, _)
            | Server::Driven(sender, _, _)
            | Server::Handler(sender, _) => sender.buffered_amount(),
        }
    }

    async fn close(&mut self, code: CloseCode, reason: &str) -> CloseInfo {
        match self {
            Server::WebSocket(ws) => ws.close(code, reason).await,
            Server::Driven(sender, _, drive) => driving(drive, sender.close(code, reason)).await,
            Server::Handles(sender, _) | Server::Handler(sender, _) => {
                sender.close(code, reason).await
            }
        }
    }

    /// Waits for `work` (the test's own) while the application takes no message: the
    /// connection's own task runs meanwhile, and so does a `Drive`, which the task holding it
    /// polls beside its other work. A `WebSocket` moves only in its own calls.
    async fn beside<F: Future>(&mut self, work: F) -> F::Output {
        match self {
            Server::Driven(_, _, drive) => driving(drive, work).await,
            Server::WebSocket(_) | Server::Handles(..) | Server::Handler(..) => work.await,
        }
    }
}

/// Runs `work` while polling `drive`, as a task that owns both does. A drive that completes
/// (the connection is over) leaves `work` to finish alone.
async fn driving<F: Future>(drive: &mut Drive<TcpStream>, work: F) -> F::Output {
    tokio::pin!(work);
    tokio::select! {
        biased;
        out = &mut work => out,
        () = drive => work.await,
    }
}

/// Forwards a handler's events to the test.
struct Forward {
    opened: Option<oneshot::Sender<Sender>>,
    events: mpsc::UnboundedSender<Incoming>,
}

impl Handler for Forward {
    async fn on_open(&mut self, sender: &Sender, _request: &Request) {
        if let Some(opened) = self.opened.take() {
            let _ = opened.send(sender.clone());
        }
    }

    async fn on_message(&mut self, message: Message, _sender: &Sender) {
        let _ = self.events.send(Incoming::Message(message));
    }

    async fn on_close(&mut self, close: CloseInfo) {
        let _ = self.events.send(Incoming::Closed(close));
    }
}

/// A server on `layer` with `config`, and a raw client connected to it.
async fn pair(layer: Layer, config: Config) -> (Server, RawClient) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    match layer {
        Layer::WebSocket | Layer::Handles | Layer::Driven => {
            let accepting = tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                match layer {
                    Layer::WebSocket => Server::WebSocket(Box::new(
                        WebSocket::accept(stream, &config).await.unwrap(),
                    )),
                    Layer::Driven => {
                        let ws = WebSocket::accept(stream, &config).await.unwrap();
                        let (sender, receiver, drive) = ws.split_with_driver();
                        Server::Driven(sender, receiver, Box::new(drive))
                    }
                    _ => {
                        let (sender, receiver) = ferry::accept_with(stream, &config).await.unwrap();
                        Server::Handles(sender, receiver)
                    }
                }
            });
            let client = RawClient::connect(addr).await;
            (accepting.await.unwrap(), client)
        }
        Layer::Handler => {
            let (opened_tx, opened_rx) = oneshot::channel();
            let (events_tx, events_rx) = mpsc::unbounded_channel();
            let slot = std::sync::Mutex::new(Some((opened_tx, events_tx)));
            tokio::spawn(ferry::serve_with(
                listener,
                config,
                OriginPolicy::any(),
                move || {
                    let (opened, events) = slot.lock().unwrap().take().expect("one connection");
                    Forward {
                        opened: Some(opened),
                        events,
                    }
                },
            ));
            let client = RawClient::connect(addr).await;
            let sender = opened_rx.await.unwrap();
            (Server::Handler(sender, events_rx), client)
        }
    }
}

/// A client that writes and reads frames as bytes: masked with a zero key, so payloads are
/// written as they are.
struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    async fn connect(addr: std::net::SocketAddr) -> RawClient {
        let stream = common::upgraded_tcp(&addr.to_string(), "/").await;
        RawClient { stream }
    }

    async fn frame(&mut self, first_byte: u8, payload: &[u8]) {
        let frame = common::masked_frame(first_byte, payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn text(&mut self, text: &str) {
        self.frame(0x81, text.as_bytes()).await;
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.frame(0x88, &payload).await;
    }

    /// The next frame from the server: its first byte and payload.
    async fn read(&mut self) -> (u8, Vec<u8>) {
        let first = self.stream.read_u8().await.unwrap();
        let len = match self.stream.read_u8().await.unwrap() {
            126 => u64::from(self.stream.read_u16().await.unwrap()),
            127 => self.stream.read_u64().await.unwrap(),
            len => u64::from(len),
        };
        let mut payload = vec![0; len as usize];
        self.stream.read_exact(&mut payload).await.unwrap();
        (first, payload)
    }

    /// The next frame, or `None` once the transport ends (or fails: a reset).
    async fn try_read(&mut self) -> Option<(u8, Vec<u8>)> {
        let first = self.stream.read_u8().await.ok()?;
        let len = match self.stream.read_u8().await.ok()? {
            126 => u64::from(self.stream.read_u16().await.ok()?),
            127 => self.stream.read_u64().await.ok()?,
            len => u64::from(len),
        };
        let mut payload = vec![0; len as usize];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some((first, payload))
    }

    /// Reads until the server's close frame, skipping pings; returns its code and reason.
    async fn read_close(&mut self) -> (u16, String) {
        loop {
            let (first, payload) = self.read().await;
            if first == 0x88 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8(payload[2..].to_vec()).unwrap());
            }
        }
    }
}

fn text_of(item: Option<Incoming>) -> String {
    match item {
        Some(Incoming::Message(message)) => message.as_text().unwrap().to_owned(),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn close_of(item: Option<Incoming>) -> CloseInfo {
    match item {
        Some(Incoming::Closed(info)) => info,
        other => panic!("expected the close, got {other:?}"),
    }
}

#[tokio::test]
async fn messages_arrive_whole_and_in_order_and_echo_back() {
    for layer in LAYERS {
        let (mut server, mut client) = pair(layer, Config::default()).await;
        for text in ["one", "two", "three"] {
            client.text(text).await;
        }
        for text in ["one", "two", "three"] {
            let got = text_of(server.recv().await);
            assert_eq!(got, text, "{layer:?}");
            server.send(Message::text(got)).await;
        }
        for text in ["one", "two", "three"] {
            assert_eq!(
                server.beside(client.read()).await,
                (0x81, text.as_bytes().to_vec()),
                "{layer:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_peers_close_comes_after_its_messages_with_its_code() {
    for layer in LAYERS {
        let (mut server, mut client) = pair(layer, Config::default()).await;
        client.text("last words").await;
        client.close(4001, "gone").await;
        assert_eq!(text_of(server.recv().await), "last words", "{layer:?}");
        let info = close_of(server.recv().await);
        assert_eq!(u16::from(info.code), 4001, "{layer:?}");
        assert_eq!(&*info.reason, "gone", "{layer:?}");
        assert_eq!(info.initiator, Initiator::Remote, "{layer:?}");
        // The reply carries the code (RFC 6455 §5.5.1); the reason is not echoed.
        assert_eq!(
            server.beside(client.read_close()).await.0,
            4001,
            "{layer:?}"
        );
        assert!(
            server.recv().await.is_none(),
            "{layer:?}: nothing after the close"
        );
        // The server closes TCP first (RFC 6455 §7.1.1), while `server` is still alive.
        let end = server
            .beside(tokio::time::timeout(
                Duration::from_secs(5),
                client.try_read(),
            ))
            .await;
        assert!(matches!(end, Ok(None)), "{layer:?}: the transport ended");
        drop(server);
    }
}

/// Closing does not throw away what the peer sent before its close reply: `recv` still
/// yields it, then the close.
#[tokio::test]
async fn messages_that_arrive_while_closing_are_still_received() {
    for layer in LAYERS {
        let (mut server, mut client) = pair(layer, Config::default()).await;
        let closing = async {
            let info = server.close(CloseCode::NORMAL, "bye").await;
            (info, server)
        };
        let peer = async {
            assert_eq!(client.read_close().await, (1000, "bye".into()), "{layer:?}");
            client.text("in flight 1").await;
            client.text("in flight 2").await;
            client.close(1000, "").await;
        };
        let ((info, mut server), ()) = tokio::join!(closing, peer);
        assert_eq!(info.code, CloseCode::NORMAL, "{layer:?}");
        assert!(info.clean, "{layer:?}");
        assert_eq!(info.initiator, Initiator::Local, "{layer:?}");
        assert_eq!(text_of(server.recv().await), "in flight 1", "{layer:?}");
        assert_eq!(text_of(server.recv().await), "in flight 2", "{layer:?}");
        let again = close_of(server.recv().await);
        assert_eq!(again.code, CloseCode::NORMAL, "{layer:?}");
        assert!(server.recv().await.is_none(), "{layer:?}");
    }
}

#[tokio::test]
async fn a_code_that_cannot_be_sent_closes_with_1000() {
    for layer in LAYERS {
        let (mut server, mut client) = pair(layer, Config::default()).await;
        let closing = server.close(CloseCode::from(1005), "why");
        let peer = async {
            let got = client.read_close().await;
            client.close(1000, "").await;
            got
        };
        let (info, got) = tokio::join!(closing, peer);
        assert_eq!(got, (1000, "why".into()), "{layer:?}");
        assert_eq!(info.code, CloseCode::NORMAL, "{layer:?}");
    }
}

/// A violation after good messages: the messages are received first, then the close with
/// the violation's code (RFC 6455 §8.1: 1007 for invalid UTF-8).
#[tokio::test]
async fn a_violation_is_reported_after_the_messages_before_it() {
    for layer in LAYERS {
        let (mut server, mut client) = pair(layer, Config::default()).await;
        client.text("fine").await;
        client.frame(0x81, &[0xc3, 0x28]).await;
        assert_eq!(text_of(server.recv().await), "fine", "{layer:?}");
        let info = close_of(server.recv().await);
        assert_eq!(info.code, CloseCode::INVALID_PAYLOAD, "{layer:?}");
        assert_eq!(
            server.beside(client.read_close()).await.0,
            1007,
            "{layer:?}"
        );
    }
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009() {
    let config = Config {
        limits: Limits {
            max_message_size: 1000,
            ..Limits::default()
        },
        ..Config::default()
    };
    for layer in LAYERS {
        let (mut server, mut client) = pair(layer, config.clone()).await;
        client.frame(0x82, &[7; 2000]).await;
        let info = close_of(server.recv().await);
        assert_eq!(info.code, CloseCode::MESSAGE_TOO_BIG, "{layer:?}");
        assert_eq!(
            server.beside(client.read_close()).await.0,
            1009,
            "{layer:?}"
        );
    }
}

/// A peer that never answers pings is closed by the keepalive, with the same code on every
/// layer. (A `WebSocket` runs its timers while it is polled, so the server is in `recv`
/// throughout, as an application waiting for messages is.)
#[tokio::test]
async fn a_silent_peer_is_closed_by_the_keepalive() {
    let config =
        Config::default().with_keepalive(Duration::from_millis(100), Duration::from_millis(100));
    for layer in LAYERS {
        let (mut server, mut client) = pair(layer, config.clone()).await;
        // The client reads what comes and answers nothing, until the transport ends.
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some((first, _)) = client.try_read().await {
                seen.push(first);
            }
            seen
        });
        let info = tokio::time::timeout(Duration::from_secs(5), server.recv())
            .await
            .expect("the keepalive closes within its timeout");
        let info = close_of(info);
        assert_eq!(info.code, CloseCode::from(1011), "{layer:?}: {info:?}");
        assert_eq!(info.initiator, Initiator::Local, "{layer:?}");
        let seen = server
            .beside(tokio::time::timeout(Duration::from_secs(5), reader))
            .await
            .unwrap_or_else(|_| panic!("{layer:?}: the server ends the transport"))
            .unwrap();
        assert_eq!(
            seen.first(),
            Some(&0x89),
            "{layer:?}: a ping first, got {seen:x?}"
        );
    }
}

/// `recv` abandoned by `select!` loses nothing: the next call returns the message.
#[tokio::test]
async fn an_abandoned_recv_loses_nothing() {
    for layer in LAYERS {
        let (mut server, mut client) = pair(layer, Config::default()).await;
        let writer = tokio::spawn(async move {
            for i in 0..50 {
                client.text(&format!("m{i}")).await;
                if i % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
            client
        });
        let mut got = Vec::new();
        while got.len() < 50 {
            tokio::select! {
                item = server.recv() => got.push(text_of(item)),
                () = tokio::time::sleep(Duration::from_micros(500)) => {}
            }
        }
        let expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        assert_eq!(got, expected, "{layer:?}");
        drop(writer.await.unwrap());
    }
}

/// A peer that stops reading fills the send queue: `try_send` then hands the message back
/// (`Full`) on every layer, and what is queued stays within the budget plus one message.
#[tokio::test]
async fn a_full_send_queue_hands_the_message_back() {
    const BUDGET: usize = 256 * 1024;
    const MESSAGE: usize = 64 * 1024;
    let config = Config {
        limits: Limits {
            send_queue_bytes: BUDGET,
            ..Limits::default()
        },
        ..Config::default()
    };
    for layer in LAYERS {
        let (mut server, client) = pair(layer, config.clone()).await;
        // The client reads nothing: once the kernel's buffers are full, the queue fills.
        let mut accepted = 0;
        let refused = loop {
            match server.try_send(Message::binary(vec![1u8; MESSAGE])) {
                Ok(()) => accepted += 1,
                Err(TrySendError::Full(message)) => break message,
                Err(TrySendError::Closed(_)) => panic!("{layer:?}: closed"),
            }
            assert!(accepted < 10_000, "{layer:?}: the queue never filled");
            // Let a connection task write what it can.
            server
                .beside(tokio::time::sleep(Duration::from_millis(1)))
                .await;
        };
        assert_eq!(
            refused.len(),
            MESSAGE,
            "{layer:?}: the message comes back whole"
        );
        let queued = server.buffered_amount();
        assert!(
            queued <= BUDGET + MESSAGE + 64,
            "{layer:?}: {queued} bytes queued over a {BUDGET}-byte budget"
        );
        drop(client);
    }
}

/// A server that does not take its messages stops reading: the peer's writes stall once the
/// receive budget and the kernel's buffers are full, and nothing is lost when it reads again.
/// (A `Handler` takes each message as it arrives; what it keeps is its own budget, so it is
/// not part of this check.)
#[tokio::test]
async fn a_server_that_does_not_read_pauses_the_peer() {
    const BUDGET: usize = 256 * 1024;
    const MESSAGE: usize = 64 * 1024;
    // 64 MiB: far beyond the budget plus what loopback's socket buffers hold.
    const COUNT: usize = 1024;
    let config = Config {
        limits: Limits {
            recv_queue_bytes: BUDGET,
            ..Limits::default()
        },
        ..Config::default()
    };
    for layer in [Layer::WebSocket, Layer::Handles, Layer::Driven] {
        let (mut server, mut client) = pair(layer, config.clone()).await;
        let writer = tokio::spawn(async move {
            for i in 0..COUNT {
                let mut payload = vec![0u8; MESSAGE];
                payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
                client.frame(0x82, &payload).await;
            }
            client
        });
        server
            .beside(tokio::time::sleep(Duration::from_secs(2)))
            .await;
        assert!(
            !writer.is_finished(),
            "{layer:?}: 64 MiB went in while the server read nothing"
        );
        for i in 0..COUNT {
            match server.recv().await {
                Some(Incoming::Message(message)) => {
                    assert_eq!(message.len(), MESSAGE, "{layer:?}");
                    assert_eq!(
                        message.as_bytes()[..8],
                        (i as u64).to_be_bytes(),
                        "{layer:?}: message {i} in order"
                    );
                }
                other => panic!("{layer:?}: expected message {i}, got {other:?}"),
            }
        }
        drop(writer.await.unwrap());
    }
}

/// Clones of a `Sender` on several tasks: every message goes out whole, each task's in the
/// order it sent them. (The single-task `WebSocket` has no clones; it is not part of this.)
#[tokio::test]
async fn sender_clones_on_many_tasks_keep_each_tasks_order() {
    for layer in [Layer::Handles, Layer::Driven, Layer::Handler] {
        let (mut server, mut client) = pair(layer, Config::default()).await;
        let sender = match &server {
            Server::Handles(sender, _)
            | Server::Driven(sender, _, _)
            | Server::Handler(sender, _) => sender.clone(),
            Server::WebSocket(_) => unreachable!("not in this check"),
        };
        let tasks: Vec<_> = (0..4)
            .map(|task| {
                let sender = sender.clone();
                tokio::spawn(async move {
                    for i in 0..100 {
                        sender.send(format!("{task}:{i}")).await.unwrap();
                    }
                })
            })
            .collect();
        let mut next = [0usize; 4];
        let read_all = async {
            for task in tasks {
                task.await.unwrap();
            }
            for _ in 0..400 {
                let (first, payload) = client.read().await;
                assert_eq!(first, 0x81, "{layer:?}: a whole text frame");
                let text = String::from_utf8(payload).unwrap();
                let (task, i) = text.split_once(':').unwrap();
                let (task, i): (usize, usize) = (task.parse().unwrap(), i.parse().unwrap());
                assert_eq!(i, next[task], "{layer:?}: task {task}'s messages in order");
                next[task] += 1;
            }
        };
        server.beside(read_all).await;
        assert_eq!(next, [100; 4], "{layer:?}");
        drop(server);
    }
}
