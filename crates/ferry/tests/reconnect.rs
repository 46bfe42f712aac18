//! The reconnecting client against a server that is killed mid-stream and brought back on the
//! same port.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::reconnect::{Backoff, Client, Event, Policy, QueueFull, Update, Updates};
use ferry::{CloseCode, Config, Incoming, Message};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// An echo server that records every text message it receives. Dropping it kills it: the
/// listener goes and every connection is shut down at the TCP level, without a close frame.
struct Server {
    port: u16,
    received: Arc<Mutex<Vec<String>>>,
    sockets: Arc<Mutex<Vec<std::net::TcpStream>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(port: u16) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let kill_list = sockets.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                // A second handle on the same socket, to shut it down when the server dies.
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                let Ok(handle) = stream.try_clone() else {
                    continue;
                };
                kill_list.lock().expect("sockets").push(handle);
                let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                    continue;
                };
                let log = log.clone();
                connections.spawn(async move {
                    let Ok((sender, mut receiver)) = ferry::accept(stream).await else {
                        return;
                    };
                    while let Some(Incoming::Message(message)) = receiver.recv().await {
                        if let Some(text) = message.as_text() {
                            log.lock().expect("log").push(text.to_owned());
                        }
                        if sender.send(message).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Server {
            port,
            received,
            sockets,
            task,
        }
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().expect("log").clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<String> {
        for _ in 0..1000 {
            if self.received().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.received()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        for socket in self.sockets.lock().expect("sockets").drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The next event, skipping messages; panics if the stream ends.
async fn next_event(updates: &mut Updates) -> Event {
    loop {
        match updates.recv().await.expect("update stream ended") {
            Update::Event(event) => return event,
            Update::Message(_) => {}
        }
    }
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(160),
        multiplier: 2.0,
        jitter: 0.5,
    }
}

#[tokio::test]
async fn server_killed_mid_stream_and_back_queued_messages_arrive_once_in_order() {
    let server = Server::start(0).await;
    let port = server.port;
    let connections = Arc::new(Mutex::new(0u32));
    let counter = connections.clone();
    let policy = Policy {
        backoff: fast_backoff(),
        // Re-subscribe on every connection: this message goes ahead of the queue.
        on_connect: Some(Arc::new(move |sender: ferry::Sender| {
            let counter = counter.clone();
            Box::pin(async move {
                *counter.lock().expect("counter") += 1;
                let _ = sender.send("subscribe").await;
            })
        })),
        ..Policy::default()
    };
    let (client, mut updates) = Client::start(
        format!("ws://127.0.0.1:{port}/"),
        Config::default(),
        policy.clone(),
    )
    .expect("start");
    assert!(matches!(
        next_event(&mut updates).await,
        Event::Connected { failures: 0, .. }
    ));

    // Mid-stream: 100 messages, all seen by the server (and echoed back).
    for i in 0..100 {
        client.send(format!("a{i}")).expect("queue");
    }
    assert_eq!(server.wait_for(101).await.len(), 101);

    drop(server);
    let disconnected = loop {
        if let Event::Disconnected(info) = next_event(&mut updates).await {
            break info;
        }
    };
    assert_eq!(disconnected.code, CloseCode::ABNORMAL);

    // Sent while disconnected: queued.
    let expected: Vec<String> = (0..100).map(|i| format!("b{i}")).collect();
    for text in &expected {
        client.send(text.as_str()).expect("queue while down");
    }
    assert!(client.queued_bytes() > 0);

    // At least three failed attempts, each delay within the backoff bounds.
    let mut failed = 0;
    while failed < 3 {
        match next_event(&mut updates).await {
            Event::ConnectFailed { failures, .. } => {
                failed += 1;
                assert_eq!(failures, failed);
            }
            Event::Retrying { failures, delay } => {
                let (low, high) = policy.backoff.bounds(failures);
                assert!(
                    delay >= low && delay <= high,
                    "{delay:?} not in {low:?}..={high:?}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    let server = Server::start(port).await;
    loop {
        match next_event(&mut updates).await {
            Event::Connected { failures, .. } => {
                assert!(failures >= 3);
                break;
            }
            Event::Retrying { failures, delay } => {
                let (low, high) = policy.backoff.bounds(failures);
                assert!(delay >= low && delay <= high);
            }
            Event::ConnectFailed { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut want = vec!["subscribe".to_owned()];
    want.extend(expected);
    let got = server.wait_for(want.len()).await;
    assert_eq!(got, want, "no loss, no duplicates, in order");
    assert_eq!(client.queued_bytes(), 0);
    assert_eq!(*connections.lock().expect("counter"), 2);

    client.close(CloseCode::NORMAL, "done");
    loop {
        match updates.recv().await {
            Some(Update::Event(Event::Stopped)) => break,
            Some(_) => {}
            None => panic!("ended without Stopped"),
        }
    }
    assert!(updates.recv().await.is_none());
    assert!(matches!(client.send("late"), Err(QueueFull(_))));
}

#[tokio::test]
async fn a_full_queue_hands_the_message_back() {
    // Nothing listens there: the client stays disconnected.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let policy = Policy {
        backoff: fast_backoff(),
        queue_bytes: 10,
        ..Policy::default()
    };
    let (client, _updates) =
        Client::start(format!("ws://127.0.0.1:{port}/"), Config::default(), policy).expect("start");
    client.send("12345678").expect("fits");
    assert_eq!(
        client.send("abc"),
        Err(QueueFull(Message::text("abc"))),
        "over budget: handed back"
    );
    assert_eq!(client.queued_bytes(), 8);
}

#[tokio::test]
async fn gives_up_after_max_attempts_with_bounded_delays() {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let policy = Policy {
        backoff: fast_backoff(),
        max_attempts: Some(4),
        ..Policy::default()
    };
    let (_client, mut updates) = Client::start(
        format!("ws://127.0.0.1:{port}/"),
        Config::default(),
        policy.clone(),
    )
    .expect("start");
    let mut failures_seen = Vec::new();
    loop {
        match next_event(&mut updates).await {
            Event::ConnectFailed { failures, .. } => failures_seen.push(failures),
            Event::Retrying { failures, delay } => {
                let (low, high) = policy.backoff.bounds(failures);
                assert!(delay >= low && delay <= high);
            }
            Event::Stopped => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(failures_seen, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn http_404_is_not_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0; 2048];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let (_client, mut updates) = Client::start(
        format!("ws://127.0.0.1:{port}/"),
        Config::default(),
        Policy::default(),
    )
    .expect("start");
    assert!(matches!(
        next_event(&mut updates).await,
        Event::ConnectFailed { failures: 1, .. }
    ));
    assert!(matches!(next_event(&mut updates).await, Event::Stopped));
}

#[test]
fn backoff_grows_is_capped_and_jitters_within_bounds() {
    let b = Backoff::default();
    let mut last = Duration::ZERO;
    for n in 0..40 {
        let (low, high) = b.bounds(n);
        assert!(high >= last, "monotone");
        assert!(high <= b.max, "capped");
        assert_eq!(low, high / 2, "jitter 0.5");
        assert_eq!(b.delay(n, 0.0), low);
        assert_eq!(b.delay(n, 1.0), high);
        let mid = b.delay(n, 0.5);
        assert!(mid >= low && mid <= high);
        last = high;
    }
    assert_eq!(b.bounds(30).1, b.max);
}

#[tokio::test]
async fn send_wait_waits_for_room_and_keeps_the_order() {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let policy = Policy {
        backoff: fast_backoff(),
        queue_bytes: 10,
        ..Policy::default()
    };
    let (client, mut updates) =
        Client::start(format!("ws://127.0.0.1:{port}/"), Config::default(), policy).expect("start");
    client.send("12345678").expect("fits");
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.send_wait("abcdef").await }
    });
    // Down, and the queue full: the second message waits.
    assert!(matches!(
        next_event(&mut updates).await,
        Event::ConnectFailed { .. }
    ));
    assert!(!waiting.is_finished());
    let server = Server::start(port).await;
    waiting
        .await
        .expect("task")
        .expect("queued once there was room");
    let got = server.wait_for(2).await;
    assert_eq!(got, vec!["12345678".to_owned(), "abcdef".to_owned()]);
    client.close(CloseCode::NORMAL, "");
    while let Some(update) = updates.recv().await {
        if matches!(update, Update::Event(Event::Stopped)) {
            break;
        }
    }
    assert!(matches!(client.send_wait("late").await, Err(QueueFull(_))));
}
