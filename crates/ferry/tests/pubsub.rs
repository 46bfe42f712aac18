//! The broker over real connections (in-memory pipes): encode-once fan-out, slow-subscriber
//! policies, counters that never go back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry::pubsub::{
    Broker, BrokerConfig, Envelope, LocalBroker, Position, SlowSubscriber, Subscriber,
};
use ferry::{
    CloseCode, Config, DeflateConfig, DeflateParams, Incoming, Limits, Message, Receiver, Role,
    Sender,
};

/// A server-side sender whose peer is a client we hold; `pipe` bytes of buffering between.
fn pair(config: &Config, deflate: Option<DeflateParams>, pipe: usize) -> (Sender, Receiver) {
    let (server_io, client_io) = tokio::io::duplex(pipe);
    let (server, _server_rx) =
        ferry::from_raw(server_io, Role::Server, config, deflate, Bytes::new());
    let (_client, client_rx) =
        ferry::from_raw(client_io, Role::Client, config, deflate, Bytes::new());
    // The server's receiver is dropped; its sender keeps the connection open.
    std::mem::forget(_client);
    (server, client_rx)
}

async fn next(receiver: &mut Receiver) -> Incoming {
    tokio::time::timeout(Duration::from_secs(10), receiver.recv())
        .await
        .expect("timed out")
        .expect("receiver ended")
}

async fn next_message(receiver: &mut Receiver) -> Message {
    match next(receiver).await {
        Incoming::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn deflate_config(own_no_context_takeover: bool) -> Config {
    Config {
        deflate: Some(DeflateConfig {
            own_no_context_takeover,
            ..DeflateConfig::default()
        }),
        ..Config::default()
    }
}

#[tokio::test]
async fn one_compression_serves_every_subscriber_of_a_group() {
    let broker = LocalBroker::default();
    let shared = DeflateParams {
        server_no_context_takeover: true,
        ..DeflateParams::default()
    };
    let takeover = DeflateParams::default();
    let mut receivers = Vec::new();
    for _ in 0..3 {
        let (sender, rx) = pair(&deflate_config(true), Some(shared), 1 << 16);
        broker.subscribe("t", sender.into());
        receivers.push(rx);
    }
    let (sender, rx) = pair(&deflate_config(false), Some(takeover), 1 << 16);
    broker.subscribe("t", sender.into());
    receivers.push(rx);
    let (sender, rx) = pair(&Config::default(), None, 1 << 16);
    broker.subscribe("t", sender.into());
    receivers.push(rx);

    let stats = &broker.stats()[0];
    assert_eq!(
        (stats.encoding_groups, stats.self_encoding),
        (2, 1),
        "{stats:?}"
    );
    let text = "a line of chat, repeated; ".repeat(100);
    assert_eq!(broker.publish("t", Message::text(text.clone())), 5);
    for rx in &mut receivers {
        assert_eq!(next_message(rx).await.as_text(), Some(&text[..]));
    }
    let totals = broker.totals();
    // One frame for the three deflate subscribers (compressed once), one for the plain one;
    // the context-takeover subscriber compressed for itself.
    assert_eq!(totals.shared_encodings, 2);
    assert_eq!(totals.shared_compressions, 1);
    assert_eq!(totals.per_socket_compressions, 1);
    assert_eq!(totals.delivered, 5);
}

#[tokio::test]
async fn drop_oldest_keeps_the_subscriber_bounded_and_counts_drops() {
    let config = Config {
        limits: Limits {
            send_queue_bytes: 8 * 1024,
            ..Limits::default()
        },
        ..Config::default()
    };
    let broker = LocalBroker::new(SlowSubscriber::DropOldest);
    // A tiny pipe and a client that does not read yet: the subscriber falls behind.
    let (slow, mut slow_rx) = pair(&config, None, 1024);
    broker.subscribe("t", slow.clone().into());
    let count = 400u32;
    for i in 0..count {
        let mut payload = vec![0u8; 1000];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        broker.publish("t", Message::binary(payload));
        // The queue never holds more than its budget.
        assert!(
            slow.buffered_amount() <= 8 * 1024,
            "{}",
            slow.buffered_amount()
        );
        if i % 50 == 0 {
            // Let the connection write what the pipe takes.
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        }
    }
    let stats = broker.stats();
    let topic = &stats[0];
    assert!(topic.dropped > 0, "{topic:?}");
    assert!(!slow.is_closed(), "drop-oldest keeps the subscriber");
    // The slow client now reads: whole messages, in increasing order, ending with the last.
    let mut last = None;
    let mut received = 0u64;
    while let Ok(Some(Incoming::Message(m))) =
        tokio::time::timeout(Duration::from_millis(500), slow_rx.recv()).await
    {
        assert_eq!(m.len(), 1000);
        let n = u32::from_be_bytes(m.as_bytes()[..4].try_into().unwrap());
        assert!(last.is_none_or(|l| n > l), "{last:?} then {n}");
        last = Some(n);
        received += 1;
    }
    assert_eq!(last, Some(count - 1), "the newest message arrives");
    assert!(received < u64::from(count));
    // Every message the slow subscriber missed is counted, no more and no less.
    assert_eq!(received + topic.dropped, u64::from(count), "{topic:?}");
}

#[tokio::test]
async fn close_policy_closes_with_1013() {
    let config = Config {
        limits: Limits {
            send_queue_bytes: 4 * 1024,
            ..Limits::default()
        },
        ..Config::default()
    };
    let broker = LocalBroker::new(SlowSubscriber::Close);
    let (slow, mut rx) = pair(&config, None, 1024);
    broker.subscribe("t", slow.clone().into());
    let mut published = 0;
    while !slow.is_closed() && published < 10_000 {
        broker.publish("t", Message::binary(vec![7u8; 1000]));
        published += 1;
    }
    assert!(slow.is_closed());
    assert!(broker.stats()[0].dropped >= 1);
    loop {
        match next(&mut rx).await {
            Incoming::Message(m) => assert_eq!(m.len(), 1000),
            Incoming::Closed(info) => {
                assert_eq!(info.code, CloseCode::TRY_AGAIN_LATER);
                break;
            }
        }
    }
}

#[tokio::test]
async fn topic_counters_survive_the_last_unsubscribe() {
    let broker = LocalBroker::with_config(BrokerConfig {
        retained_topics: 1,
        ..BrokerConfig::default()
    });
    let (sender, _rx) = pair(&Config::default(), None, 1 << 16);
    let id = broker.subscribe("a", sender.clone().into());
    broker.publish("a", Message::text("one"));
    broker.unsubscribe("a", id);
    let stats = broker.stats();
    assert_eq!(
        (
            stats[0].name.as_str(),
            stats[0].subscribers,
            stats[0].published
        ),
        ("a", 0, 1)
    );
    let id = broker.subscribe("a", sender.clone().into());
    broker.publish("a", Message::text("two"));
    assert_eq!(
        broker.stats()[0].published,
        2,
        "not reset by the empty spell"
    );
    broker.unsubscribe("a", id);
    // A second empty topic pushes the first out (retained_topics = 1); the totals keep it.
    let id = broker.subscribe("b", sender.into());
    broker.unsubscribe("b", id);
    let names: Vec<_> = broker.stats().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["b"]);
    assert_eq!(broker.totals().published, 2);
    assert_eq!(broker.totals().topics_forgotten, 1);
}

struct Tagged;

impl Envelope for Tagged {
    fn wrap(&self, topic: &str, position: Option<&Position>, message: &Message) -> Message {
        let offset = position.map_or(0, |p| p.offset);
        Message::text(format!(
            "{topic}@{offset}:{}",
            message.as_text().unwrap_or("?")
        ))
    }
}

#[tokio::test]
async fn enveloped_subscribers_get_the_wrapped_message() {
    let broker = LocalBroker::default();
    let envelope: Arc<dyn Envelope> = Arc::new(Tagged);
    let (a, mut a_rx) = pair(&Config::default(), None, 1 << 16);
    let (b, mut b_rx) = pair(&Config::default(), None, 1 << 16);
    broker.subscribe("news", Subscriber::with_envelope(a, envelope.clone()));
    broker.subscribe("news", b.into());
    assert_eq!(broker.publish("news", Message::text("hi")), 2);
    assert_eq!(next_message(&mut a_rx).await.as_text(), Some("news@0:hi"));
    assert_eq!(next_message(&mut b_rx).await.as_text(), Some("hi"));
}

#[tokio::test]
async fn a_held_subscriber_gets_only_what_follows_its_history_in_order() {
    let broker = LocalBroker::default();
    let envelope: Arc<dyn Envelope> = Arc::new(Tagged);
    let (a, mut a_rx) = pair(&Config::default(), None, 1 << 16);
    let at = |offset| Position::new(offset, "e");
    broker.publish_at("t", Message::text("1"), Some(&at(1)));
    let id = broker.subscribe_held("t", Subscriber::with_envelope(a.clone(), envelope), 1 << 10);
    // Published while the subscriber is held: 2 was also in the history it was given, 3 not.
    // Both count as delivered: each reaches it, by history or after it.
    assert_eq!(broker.publish_at("t", Message::text("2"), Some(&at(2))), 1);
    assert_eq!(broker.publish_at("t", Message::text("3"), Some(&at(3))), 1);
    // What the caller sends from history goes first.
    a.send(Message::text("history 2")).await.unwrap();
    assert_eq!(broker.release_held("t", id, Some(2)), Ok(1));
    assert_eq!(broker.publish_at("t", Message::text("4"), Some(&at(4))), 1);
    for expected in ["history 2", "t@3:3", "t@4:4"] {
        assert_eq!(next_message(&mut a_rx).await.as_text(), Some(expected));
    }
    // Released once: a second release sends nothing.
    assert_eq!(broker.release_held("t", id, Some(2)), Ok(0));
}

#[tokio::test]
async fn a_held_subscriber_whose_buffer_overflows_is_never_released() {
    let broker = LocalBroker::default();
    let (a, _a_rx) = pair(&Config::default(), None, 1 << 16);
    let id = broker.subscribe_held("t", a.into(), 10);
    assert_eq!(broker.publish_at("t", Message::text("123456"), None), 1);
    // Over the buffer: not delivered, and the subscriber will never be released.
    assert_eq!(broker.publish_at("t", Message::text("789012"), None), 0);
    assert!(broker.release_held("t", id, None).is_err());
    assert!(broker.release_held("t", id, None).is_err(), "still held");
    assert_eq!(broker.publish_at("t", Message::text("x"), None), 0);
}

#[tokio::test]
async fn closing_a_topics_subscribers() {
    let broker = LocalBroker::default();
    let (a, mut a_rx) = pair(&Config::default(), None, 1 << 16);
    broker.subscribe("t", a.into());
    assert_eq!(
        broker.close_subscribers("t", CloseCode::from(4010), "lost"),
        1
    );
    assert_eq!(broker.subscribed_topics(), ["t"]);
    loop {
        match a_rx.recv().await {
            Some(ferry::Incoming::Closed(info)) => {
                assert_eq!(info.code.as_u16(), 4010);
                break;
            }
            Some(_) => {}
            None => panic!("ended without a close"),
        }
    }
}
