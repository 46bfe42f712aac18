//! History and recovery on one node with the memory broker (the default), and the HTTP API,
//! against the real binary: a subscribe with `since` gets every missed message in order and
//! then the live ones, or `recovered: false` and nothing.

mod common;

use std::time::Duration;

use common::Server;
use common::control::{Ctl, assert_contiguous, http};
use serde_json::{Value, json};

fn since(topic: &str, offset: u64, epoch: &str) -> Value {
    json!({topic: {"offset": offset, "epoch": epoch}})
}

#[tokio::test]
async fn a_subscriber_that_left_recovers_what_it_missed_then_goes_live() {
    let server = Server::serve(&[]);
    let mut publisher = Ctl::connect(&server.addr).await;
    let mut reader = Ctl::connect(&server.addr).await;
    reader.subscribe(&["news"]).await;
    for i in 1..=3 {
        let ack = publisher.publish("news", &format!("m{i}")).await;
        assert_eq!(ack["offset"], i);
    }
    let seen = reader.take(3).await;
    assert_contiguous(&seen, 1);
    let epoch = seen[0].epoch.clone();
    drop(reader);
    for i in 4..=8 {
        publisher.publish("news", &format!("m{i}")).await;
    }
    let mut back = Ctl::connect(&server.addr).await;
    let ack = back
        .request(json!({"op": "subscribe", "topics": ["news", "other"],
                        "since": since("news", 3, &epoch)}))
        .await;
    assert_eq!(ack["recovered"], json!({"news": true}), "{ack}");
    assert_eq!(
        ack["positions"]["news"],
        json!({"offset": 8, "epoch": epoch})
    );
    assert_eq!(ack["positions"]["other"]["offset"], 0);
    // A message published now comes after the recovered ones, never between or twice.
    publisher.publish("news", "m9").await;
    let got = back.take(6).await;
    assert_contiguous(&got, 4);
    let data: Vec<&str> = got.iter().map(|g| g.data.as_str()).collect();
    assert_eq!(data, ["m4", "m5", "m6", "m7", "m8", "m9"]);
}

/// Publishes m1..=m6 to `topic`; returns the epoch.
async fn six(publisher: &mut Ctl, topic: &str) -> String {
    let mut epoch = String::new();
    for i in 1..=6 {
        let ack = publisher.publish(topic, &format!("m{i}")).await;
        epoch = ack["epoch"].as_str().unwrap().to_owned();
    }
    epoch
}

#[tokio::test]
async fn recovery_is_refused_whole_when_it_cannot_be_given_whole() {
    let server = Server::serve(&["--history-size", "3", "--recovery-max", "4"]);
    let mut publisher = Ctl::connect(&server.addr).await;
    // (since offset, same epoch, recovered, why); each case on a topic of its own holding
    // m1..m6 with only m4..m6 kept.
    let cases = [
        (2, true, false, "offset 3 was trimmed (history 4..6)"),
        (3, true, true, "4..6 are all kept"),
        (5, false, false, "another epoch"),
        (7, true, false, "from the future"),
        (6, true, true, "nothing missed"),
    ];
    for (i, (offset, same_epoch, recovered, why)) in cases.into_iter().enumerate() {
        let topic = format!("t{i}");
        let epoch = six(&mut publisher, &topic).await;
        let epoch = if same_epoch { epoch } else { "another".into() };
        let mut c = Ctl::connect(&server.addr).await;
        let ack = c
            .request(json!({"op": "subscribe", "topics": [&topic],
                            "since": since(&topic, offset, &epoch)}))
            .await;
        assert_eq!(ack["recovered"][&topic], recovered, "{why}: {ack}");
        assert_eq!(ack["positions"][&topic]["offset"], 6, "{why}");
        // Either way the subscription is live: the next publish arrives, and nothing else (no
        // partial replay) comes before what was recovered.
        publisher.publish(&topic, "live").await;
        let first = c.next(Duration::from_secs(10)).await.unwrap();
        if recovered && offset == 3 {
            assert_eq!(first.offset, 4, "{why}");
            let rest = c.take(3).await;
            assert_eq!(rest.last().unwrap().offset, 7);
        } else {
            assert_eq!(first.offset, 7, "{why}: {first:?}");
        }
    }
    // Over --recovery-max: 5 missed with a limit of 4 (the history would have them).
    let server = Server::serve(&["--history-size", "10", "--recovery-max", "4"]);
    let mut publisher = Ctl::connect(&server.addr).await;
    let epoch = six(&mut publisher, "t").await;
    let mut c = Ctl::connect(&server.addr).await;
    let ack = c
        .request(json!({"op": "subscribe", "topics": ["t"], "since": since("t", 1, &epoch)}))
        .await;
    assert_eq!(ack["recovered"]["t"], false, "{ack}");
}

#[tokio::test]
async fn bad_since_fields_are_refused_and_change_nothing() {
    let server = Server::serve(&[]);
    let mut c = Ctl::connect(&server.addr).await;
    c.subscribe(&["a"]).await;
    for body in [
        json!({"op": "subscribe", "topics": ["b"], "since": {"c": {"offset": 1, "epoch": "e"}}}),
        json!({"op": "subscribe", "topics": ["b"], "since": {"b": {"offset": -1, "epoch": "e"}}}),
        json!({"op": "subscribe", "topics": ["b"], "since": {"b": {"offset": 1}}}),
        json!({"op": "subscribe", "topics": ["b"], "since": [1]}),
        json!({"op": "subscribe", "topics": ["a"], "since": {"a": {"offset": 0, "epoch": "e"}}}),
    ] {
        let reply = c.request(body.clone()).await;
        assert_eq!(reply["code"], "bad_field", "{body}: {reply}");
    }
    let ack = c
        .request(json!({"op": "unsubscribe", "topics": ["x"]}))
        .await;
    assert_eq!(ack["subscribed"], json!(["a"]), "nothing was subscribed");
}

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn api_server(extra: &[&str]) -> (Server, tempfile_path::Path) {
    let file = tempfile_path::Path::new("ferry-api-keys");
    std::fs::write(&file.0, format!("# keys\n\n{KEY}\n")).unwrap();
    let mut flags = vec!["--api-key-file", file.0.to_str().unwrap()];
    flags.extend_from_slice(extra);
    (Server::serve(&flags), file)
}

/// A file path removed when dropped.
mod tempfile_path {
    pub struct Path(pub std::path::PathBuf);
    impl Path {
        pub fn new(name: &str) -> Path {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Path(std::env::temp_dir().join(format!("{name}-{}-{n}", std::process::id())))
        }
    }
    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[tokio::test]
async fn the_http_api_publishes_and_reads_history() {
    let (server, _keys) = api_server(&["--max-message-size", "1KiB"]);
    let auth = format!("Bearer {KEY}");
    let mut reader = Ctl::connect(&server.addr).await;
    reader.subscribe(&["orders"]).await;
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, body) = http(
        &server.addr,
        "POST",
        "/api/publish/orders",
        &headers,
        br#"{"n":1}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let published: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(published["topic"], "orders");
    assert_eq!(published["offset"], 1);
    let epoch = published["epoch"].as_str().unwrap().to_owned();
    let got = reader.take(1).await;
    assert_eq!((got[0].offset, got[0].data.as_str()), (1, r#"{"n":1}"#));
    // Binary for any other content type.
    let binary = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/octet-stream"),
    ];
    let (status, _) = http(
        &server.addr,
        "POST",
        "/api/publish/orders",
        &binary,
        &[0, 255],
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = http(
        &server.addr,
        "GET",
        &format!("/api/history/orders?since=0&epoch={epoch}&limit=10"),
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let history: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        history,
        json!({"topic": "orders", "epoch": epoch, "offset": 2, "recovered": true,
               "messages": [{"offset": 1, "data": "{\"n\":1}"}, {"offset": 2, "binary": "AP8="}]})
    );
    let (_, body) = http(
        &server.addr,
        "GET",
        "/api/history/orders?since=1&epoch=old",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    let history: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(history["recovered"], false);
    assert_eq!(history["messages"], json!([]));
}

#[tokio::test]
async fn the_http_api_refuses_precisely_and_echoes_nothing() {
    let (server, _keys) = api_server(&["--max-message-size", "16"]);
    let auth = format!("Bearer {KEY}");
    let secret_path = "/api/publish/t%3Cscript%3E";
    // (method, path, headers, body, status, error code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/publish/t",
            vec![],
            b"x".to_vec(),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/api/publish/t",
            vec![("Authorization", "Bearer wrong-key-0123456789")],
            b"x".to_vec(),
            401,
            "unauthorized",
        ),
        (
            "POST",
            secret_path,
            vec![("Authorization", &auth)],
            b"x".to_vec(),
            400,
            "bad_topic",
        ),
        (
            "POST",
            "/api/publish/t",
            vec![("Authorization", &auth)],
            vec![b'x'; 17],
            413,
            "too_large",
        ),
        (
            "POST",
            "/api/publish/t",
            vec![("Authorization", &auth), ("Content-Type", "text/plain")],
            vec![0xff],
            400,
            "bad_utf8",
        ),
        (
            "GET",
            "/api/publish/t",
            vec![("Authorization", &auth)],
            vec![],
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            "/api/history/t?since=x",
            vec![("Authorization", &auth)],
            vec![],
            400,
            "bad_query",
        ),
        (
            "GET",
            "/api/history/t?since=1",
            vec![("Authorization", &auth)],
            vec![],
            400,
            "bad_query",
        ),
        (
            "GET",
            "/api/nothing",
            vec![("Authorization", &auth)],
            vec![],
            404,
            "not_found",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        let (got, text) = http(&server.addr, method, path, &headers, &body).await;
        assert_eq!(got, status, "{method} {path}: {text}");
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reply["error"], code, "{method} {path}");
        assert!(
            !text.contains("script") && !text.contains("wrong-key"),
            "{text}"
        );
    }
    // Without --api-key-file the API is not there at all.
    let plain = Server::serve(&[]);
    let (status, _) = http(
        &plain.addr,
        "POST",
        "/api/publish/t",
        &[("Authorization", &auth)],
        b"x",
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn readyz_is_ready_with_the_memory_broker() {
    let server = Server::serve(&[]);
    let (status, body) = http(&server.addr, "GET", "/readyz", &[], b"").await;
    assert_eq!((status, body.trim()), (200, "ready"));
}

#[tokio::test]
async fn a_topic_rule_sets_its_topics_history() {
    let config =
        std::env::temp_dir().join(format!("ferry-history-rule-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[[topics.rule]]\npattern = \"ticks.*\"\nhistory_size = 2\n",
    )
    .unwrap();
    let server = Server::serve(&["--config", config.to_str().unwrap()]);
    let mut publisher = Ctl::connect(&server.addr).await;
    let short = six(&mut publisher, "ticks.a").await;
    let long = six(&mut publisher, "orders.a").await;
    let mut c = Ctl::connect(&server.addr).await;
    let ack = c
        .request(json!({"op": "subscribe", "topics": ["ticks.a", "orders.a"],
                        "since": {"ticks.a": {"offset": 3, "epoch": short},
                                  "orders.a": {"offset": 3, "epoch": long}}}))
        .await;
    assert_eq!(
        ack["recovered"],
        json!({"ticks.a": false, "orders.a": true}),
        "ticks.* keep 2 messages, others the default 1000: {ack}"
    );
    let _ = std::fs::remove_file(config);
}
