//! The JSON control protocol of `ferry serve` (docs/control-protocol.md), against the real
//! binary: many topics on one connection, acks with ids, precise error codes, envelopes.

mod common;

use std::time::Duration;

use common::Server;
use ferry::{Message, Receiver, Sender};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn control(server: &Server) -> (Sender, Receiver) {
    let url = format!("ws://{}/ws/control", server.addr);
    let (sender, receiver, _) = ferry::connect(&url).await.unwrap();
    (sender, receiver)
}

async fn next_json(receiver: &mut Receiver) -> Value {
    let message = tokio::time::timeout(Duration::from_secs(10), receiver.recv_message())
        .await
        .expect("timed out")
        .expect("connection ended");
    let text = message.as_text().expect("a text message");
    serde_json::from_str(text).expect("JSON")
}

/// Sends a request and returns the next message, which must be its reply.
async fn request(sender: &Sender, receiver: &mut Receiver, body: Value) -> Value {
    sender.send(body.to_string()).await.unwrap();
    next_json(receiver).await
}

#[tokio::test]
async fn subscribe_publish_unsubscribe_across_topics() {
    let server = Server::serve(&[]);
    let (alice, mut alice_rx) = control(&server).await;
    let (bob, mut bob_rx) = control(&server).await;
    let ack = request(
        &bob,
        &mut bob_rx,
        json!({"op": "subscribe", "topics": ["news", "sport", "news"], "id": 1}),
    )
    .await;
    let epoch = ack["positions"]["news"]["epoch"].clone();
    assert!(epoch.as_str().is_some_and(|e| !e.is_empty()), "{ack}");
    assert_eq!(
        ack,
        json!({"type": "ack", "id": 1, "op": "subscribe", "topics": ["news", "sport"],
               "subscribed": ["news", "sport"],
               "positions": {"news": {"offset": 0, "epoch": epoch},
                             "sport": ack["positions"]["sport"].clone()}})
    );
    assert_eq!(ack["positions"]["sport"]["offset"], 0);
    // The ack means the subscriptions exist: no waiting needed before publishing.
    let ack = request(
        &alice,
        &mut alice_rx,
        json!({"op": "publish", "topic": "news", "data": "extra! \"quoted\"", "id": "p1"}),
    )
    .await;
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "p1", "op": "publish", "topic": "news", "delivered": 1,
               "offset": 1, "epoch": epoch})
    );
    assert_eq!(
        next_json(&mut bob_rx).await,
        json!({"type": "message", "topic": "news", "offset": 1, "epoch": epoch,
               "data": "extra! \"quoted\""})
    );
    let ack = request(
        &alice,
        &mut alice_rx,
        json!({"op": "publish", "topic": "sport", "binary": "AAEC/w==", "id": 2}),
    )
    .await;
    assert_eq!(ack["delivered"], 1);
    assert_eq!(ack["offset"], 1, "offsets are per topic");
    let message = next_json(&mut bob_rx).await;
    assert_eq!(message["binary"], "AAEC/w==");
    assert_eq!(message["topic"], "sport");
    let ack = request(
        &bob,
        &mut bob_rx,
        json!({"op": "unsubscribe", "topics": ["news"], "id": 3}),
    )
    .await;
    assert_eq!(ack["subscribed"], json!(["sport"]));
    let ack = request(
        &alice,
        &mut alice_rx,
        json!({"op": "publish", "topic": "news", "data": "nobody", "id": 4}),
    )
    .await;
    assert_eq!(ack["delivered"], 0);
}

#[tokio::test]
async fn topic_route_and_control_see_each_other() {
    let server = Server::serve(&[]);
    let (ctl, mut ctl_rx) = control(&server).await;
    let ack = request(
        &ctl,
        &mut ctl_rx,
        json!({"op": "subscribe", "topics": ["lobby"]}),
    )
    .await;
    assert_eq!(ack["type"], "ack");
    assert!(ack.get("id").is_none(), "no id asked, none echoed");
    let url = format!("ws://{}/ws/topics/lobby", server.addr);
    let (plain, mut plain_rx, _) = ferry::connect(&url).await.unwrap();
    // The raw subscriber's own message comes back to it, so it is subscribed after this.
    plain.send("from the topic route").await.unwrap();
    assert_eq!(
        plain_rx.recv_message().await,
        Some(Message::text("from the topic route"))
    );
    let message = next_json(&mut ctl_rx).await;
    assert_eq!(message["data"], "from the topic route");
    assert_eq!(message["offset"], 1);
    assert_eq!(message["epoch"], ack["positions"]["lobby"]["epoch"]);
    // Publishing to a topic it is subscribed to, a connection gets the message first, then
    // the ack: the message is queued during the publish, the ack after it.
    let own = request(
        &ctl,
        &mut ctl_rx,
        json!({"op": "publish", "topic": "lobby", "data": "from control", "id": 9}),
    )
    .await;
    assert_eq!(own["data"], "from control");
    let ack = next_json(&mut ctl_rx).await;
    assert_eq!(ack["id"], 9);
    assert_eq!(
        ack["delivered"], 2,
        "the raw subscriber and the control one"
    );
    assert_eq!(
        plain_rx.recv_message().await,
        Some(Message::text("from control")),
        "raw subscribers get the message itself"
    );
}

#[tokio::test]
async fn every_bad_request_gets_its_error_code() {
    let server = Server::serve(&["--control-max-topics", "2"]);
    let (ctl, mut rx) = control(&server).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"op": "dance", "id": 1}), "unknown_op"),
        (json!({"id": 2}), "missing_field"),
        (json!({"op": "subscribe", "id": 3}), "missing_field"),
        (
            json!({"op": "subscribe", "topics": [], "id": 4}),
            "bad_field",
        ),
        (
            json!({"op": "subscribe", "topics": "news", "id": 5}),
            "bad_field",
        ),
        (
            json!({"op": "subscribe", "topics": ["ok", "no spaces"], "id": 6}),
            "bad_topic",
        ),
        (
            json!({"op": "subscribe", "topics": ["a", "b", "c"], "id": 7}),
            "too_many_topics",
        ),
        (
            json!({"op": "publish", "topic": "a", "id": 8}),
            "missing_field",
        ),
        (
            json!({"op": "publish", "data": "x", "id": 9}),
            "missing_field",
        ),
        (
            json!({"op": "publish", "topic": "a/b", "data": "x", "id": 10}),
            "bad_topic",
        ),
        (
            json!({"op": "publish", "topic": "a", "data": "x", "binary": "", "id": 11}),
            "bad_field",
        ),
        (
            json!({"op": "publish", "topic": "a", "data": 5, "id": 12}),
            "bad_field",
        ),
        (
            json!({"op": "publish", "topic": "a", "binary": "%%%", "id": 13}),
            "bad_base64",
        ),
    ];
    for (body, code) in cases {
        let reply = request(&ctl, &mut rx, body.clone()).await;
        assert_eq!(reply["type"], "error", "{body}: {reply}");
        assert_eq!(reply["code"], code, "{body}: {reply}");
        assert_eq!(reply["id"], body["id"], "{body}: {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Requests whose id cannot be read get errors without one.
    for (raw, code) in [
        ("{not json<script>", "bad_json"),
        ("[1, 2]", "not_object"),
        (r#"{"op": "publish", "id": {"x": 1}}"#, "bad_id"),
    ] {
        ctl.send(raw).await.unwrap();
        let reply = next_json(&mut rx).await;
        assert_eq!(reply["code"], code, "{raw}: {reply}");
        assert!(reply.get("id").is_none());
        assert!(
            !reply.to_string().contains("script"),
            "no input echoed: {reply}"
        );
    }
    ctl.send(vec![1u8, 2, 3]).await.unwrap();
    assert_eq!(next_json(&mut rx).await["code"], "text_only");
    // A refused subscribe changed nothing; a valid one still works.
    let ack = request(
        &ctl,
        &mut rx,
        json!({"op": "subscribe", "topics": ["a", "b"], "id": 14}),
    )
    .await;
    assert_eq!(ack["subscribed"], json!(["a", "b"]));
}

#[tokio::test]
async fn drop_oldest_subscriber_stays_connected_and_drops_are_counted() {
    let server = Server::serve(&["--slow-subscriber", "drop-oldest", "--send-queue", "64KiB"]);
    // The slow subscriber: a raw socket that completes the handshake and never reads.
    let mut slow = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let head = format!(
        "GET /ws/topics/firehose HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut status = [0u8; 12];
    slow.read_exact(&mut status).await.unwrap();
    assert_eq!(&status, b"HTTP/1.1 101");
    let (ctl, mut rx) = control(&server).await;
    let payload = "x".repeat(16 * 1024);
    let mut last = Value::Null;
    // Far more than the slow socket's kernel buffers, the driver's 64 KiB and the queue hold.
    for i in 0..2000 {
        last = request(
            &ctl,
            &mut rx,
            json!({"op": "publish", "topic": "firehose", "data": payload, "id": i}),
        )
        .await;
    }
    assert_eq!(
        last["delivered"], 1,
        "still subscribed after 2000 messages: {last}"
    );
    let metrics = reqwest_like_get(&server.addr, "/metrics").await;
    let dropped = metric(&metrics, "ferry_topic_dropped_total{topic=\"firehose\"}");
    assert!(dropped > 1000.0, "drops counted: {dropped}");
    assert_eq!(metric(&metrics, "ferry_pubsub_published_total"), 2000.0);
    // Memory stays bounded: 2000 x 16 KiB = 31 MiB published into a socket that reads nothing.
    assert!(server.rss_kib() < 64 * 1024, "rss {} KiB", server.rss_kib());
    drop(slow);
}

async fn reqwest_like_get(addr: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Subscribes `n` control connections (compression negotiated) to `topic`, publishes one
/// compressible message, and returns the metrics text once every subscriber has it.
async fn fan_out_metrics(server: &Server, n: usize) -> String {
    let mut subscribers = Vec::new();
    for _ in 0..n {
        let (sender, mut rx) = control(server).await;
        let ack = request(
            &sender,
            &mut rx,
            json!({"op": "subscribe", "topics": ["fan"]}),
        )
        .await;
        assert_eq!(ack["type"], "ack");
        subscribers.push((sender, rx));
    }
    let (publisher, mut publisher_rx) = control(server).await;
    let text = "the same words again and again; ".repeat(64);
    let ack = request(
        &publisher,
        &mut publisher_rx,
        json!({"op": "publish", "topic": "fan", "data": text}),
    )
    .await;
    assert_eq!(ack["delivered"], n);
    for (_, rx) in &mut subscribers {
        assert_eq!(next_json(rx).await["data"], text);
    }
    reqwest_like_get(&server.addr, "/metrics").await
}

#[tokio::test]
async fn a_topic_message_is_compressed_once_for_every_subscriber() {
    let server = Server::serve(&[]);
    let metrics = fan_out_metrics(&server, 3).await;
    assert_eq!(
        metric(&metrics, "ferry_pubsub_shared_compressions_total"),
        1.0
    );
    assert_eq!(metric(&metrics, "ferry_pubsub_shared_encodings_total"), 1.0);
    assert_eq!(
        metric(&metrics, "ferry_pubsub_per_socket_compressions_total"),
        0.0
    );
}

#[tokio::test]
async fn with_context_takeover_each_subscriber_compresses_itself() {
    let server = Server::serve(&["--deflate-context-takeover"]);
    let metrics = fan_out_metrics(&server, 3).await;
    assert_eq!(
        metric(&metrics, "ferry_pubsub_shared_compressions_total"),
        0.0
    );
    assert_eq!(
        metric(&metrics, "ferry_pubsub_per_socket_compressions_total"),
        3.0
    );
}
