//! The futures traits a library user expects: the sending half as a `Sink<Message>` with the
//! send queue's backpressure, and the receiving half as a `FusedStream`.

use ferry::{Config, Incoming, Message};
use futures_util::stream::FusedStream;
use futures_util::{SinkExt, StreamExt};

/// A client and an echo server over an in-memory pipe.
async fn echo_pair() -> (ferry::Sender, ferry::Receiver) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (sender, mut receiver) = ferry::accept(server_io).await.unwrap();
        while let Some(message) = receiver.recv_message().await {
            if sender.send(message).await.is_err() {
                break;
            }
        }
    });
    let (sender, receiver, _) = ferry::connect_stream(client_io, "ws://test/", &Config::default())
        .await
        .unwrap();
    (sender, receiver)
}

#[tokio::test]
async fn a_sink_feeds_the_send_queue_and_closes_with_1000() {
    let (sender, mut receiver) = echo_pair().await;
    let mut sink = sender.clone().into_sink();
    // More than the 1 MiB send queue at once: send_all waits for room instead of failing.
    let big = vec![7u8; 64 * 1024];
    let len = big.len();
    let mut messages = futures_util::stream::iter(
        (0..40).map(move |i| Ok(Message::binary([&[i as u8][..], &big].concat()))),
    );
    let sent = tokio::spawn(async move {
        sink.send_all(&mut messages).await.unwrap();
        sink
    });
    for i in 0..40u8 {
        let echo = receiver.recv_message().await.expect("an echo");
        assert_eq!(echo.as_bytes()[0], i, "in order");
        assert_eq!(echo.len(), len + 1);
    }
    let mut sink = sent.await.unwrap();
    sink.close().await.unwrap();
    let Some(Incoming::Closed(info)) = receiver.next().await else {
        panic!("the close item")
    };
    assert_eq!(info.code, ferry::CloseCode::NORMAL);
    // The close item is the last: the stream is over, and says so.
    assert!(receiver.is_terminated());
    assert!(receiver.next().await.is_none());
    // A closed sink hands the message back.
    let late = sink.send(Message::text("late")).await.unwrap_err();
    assert_eq!(late.0, Message::text("late"));
    assert!(sender.is_closed());
}

#[tokio::test]
async fn a_receiver_is_not_terminated_while_open() {
    let (sender, mut receiver) = echo_pair().await;
    assert!(!receiver.is_terminated());
    sender.send(Message::text("hi")).await.unwrap();
    assert_eq!(
        receiver.next().await,
        Some(Incoming::Message(Message::text("hi")))
    );
    assert!(!receiver.is_terminated());
}
