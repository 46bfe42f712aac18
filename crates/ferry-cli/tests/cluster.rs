//! Several `ferry serve` nodes on a real `redis-server` (docs/cluster.md): every subscriber on
//! every node gets every message once, in offset order; a client of a killed node recovers on
//! another; a Redis that restarts empty refuses publishes meanwhile and changes the epoch;
//! shards; a pub/sub connection that goes silent is found and rebuilt. Skipped (with a line
//! saying so) where redis-server is not installed; .ci/run installs it.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use common::control::{Ctl, Got, assert_contiguous, http};
use common::redis::{Redis, free_port};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

fn node(brokers: &[String], extra: &[&str]) -> Server {
    let mut flags: Vec<&str> = Vec::new();
    for url in brokers {
        flags.extend(["--broker", url.as_str()]);
    }
    flags.extend_from_slice(extra);
    Server::serve(&flags)
}

/// Waits until `/readyz` answers `status`.
async fn readyz(server: &Server, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (got, body) = http(&server.addr, "GET", "/readyz", &[], b"").await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {got} ({body}), not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const KEY: &str = "cluster-test-key-0123456789abcdef";

fn key_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("ferry-cluster-keys-{}", std::process::id()));
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    path
}

/// Three nodes, subscribers on each, publishers on two nodes and on the HTTP API: everyone
/// gets every message exactly once, in offset order, offsets contiguous. With two shards too.
async fn exactly_once_everywhere(redis: &[&Redis]) {
    let brokers: Vec<String> = redis.iter().map(|r| r.url()).collect();
    let keys = key_file();
    let api = ["--api-key-file", keys.to_str().unwrap()];
    let nodes: Vec<Server> = (0..3).map(|_| node(&brokers, &api)).collect();
    for n in &nodes {
        readyz(n, 200).await;
    }
    let topics = ["room.a", "room.b"];
    let mut subscribers = Vec::new();
    for n in &nodes {
        for _ in 0..2 {
            let mut c = Ctl::connect(&n.addr).await;
            let ack = c.subscribe(&topics).await;
            for t in topics {
                assert_eq!(ack["positions"][t]["offset"], 0, "{ack}");
            }
            subscribers.push(c);
        }
    }
    const EACH: usize = 60;
    let mut publishers = Vec::new();
    for (i, n) in nodes[..2].iter().enumerate() {
        let addr = n.addr.clone();
        publishers.push(tokio::spawn(async move {
            let mut p = Ctl::connect(&addr).await;
            for j in 0..EACH {
                let topic = ["room.a", "room.b"][j % 2];
                let ack = p.publish(topic, &format!("p{i}-{j}")).await;
                assert_eq!(ack["type"], "ack", "{ack}");
                assert!(ack["offset"].as_u64().unwrap() >= 1);
            }
        }));
    }
    let api_addr = nodes[2].addr.clone();
    publishers.push(tokio::spawn(async move {
        let auth = format!("Bearer {KEY}");
        for j in 0..EACH {
            let topic = ["room.a", "room.b"][j % 2];
            let (status, body) = http(
                &api_addr,
                "POST",
                &format!("/api/publish/{topic}"),
                &[("Authorization", &auth), ("Content-Type", "text/plain")],
                format!("api-{j}").as_bytes(),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    }));
    for p in publishers {
        p.await.unwrap();
    }
    let total = 3 * EACH;
    for (s, c) in subscribers.iter_mut().enumerate() {
        let got = c.take(total).await;
        for t in topics {
            let mine: Vec<Got> = got.iter().filter(|g| g.topic == t).cloned().collect();
            assert_eq!(mine.len(), total / 2, "subscriber {s}, {t}");
            assert_contiguous(&mine, 1);
        }
        let distinct: HashSet<&str> = got.iter().map(|g| g.data.as_str()).collect();
        assert_eq!(
            distinct.len(),
            total,
            "subscriber {s}: a duplicate or a loss"
        );
        // Each publisher's own messages keep their order.
        for prefix in ["p0-", "p1-", "api-"] {
            let order: Vec<usize> = got
                .iter()
                .filter_map(|g| g.data.strip_prefix(prefix)?.parse().ok())
                .collect();
            assert!(order.is_sorted(), "subscriber {s}: {prefix} out of order");
        }
    }
    // Redis work per publish does not depend on the subscriber count: one script call each,
    // and each node subscribed to each topic once.
    let scripts: u64 = redis
        .iter()
        .map(|r| r.calls("evalsha") + r.calls("eval"))
        .sum();
    let histories = 6 * 2 + 3 * 2; // subscribes (6 clients x 2 topics) and node subscriptions
    assert!(
        scripts >= total as u64 && scripts <= (total + histories) as u64 + 10,
        "{scripts} script calls for {total} publishes"
    );
    let subscribes: u64 = redis.iter().map(|r| r.calls("subscribe")).sum();
    // Per node: its probe channel on each shard, and each topic once.
    let most = 3 * (redis.len() + topics.len()) as u64;
    assert!(
        subscribes <= most,
        "{subscribes} SUBSCRIBE calls for 3 nodes"
    );
    let _ = std::fs::remove_file(keys);
}

#[tokio::test]
async fn three_nodes_one_redis_exactly_once_in_order() {
    let Some(redis) = Redis::start() else { return };
    exactly_once_everywhere(&[&redis]).await;
}

#[tokio::test]
async fn two_redis_shards_spread_topics_and_keep_every_promise() {
    let (Some(a), Some(b)) = (Redis::start(), Redis::start()) else {
        return;
    };
    exactly_once_everywhere(&[&a, &b]).await;
    // Spread: 40 topics land on both shards.
    let brokers = vec![a.url(), b.url()];
    let n = node(&brokers, &[]);
    readyz(&n, 200).await;
    let mut p = Ctl::connect(&n.addr).await;
    for i in 0..40 {
        let ack = p.publish(&format!("spread.{i}"), "x").await;
        assert_eq!(ack["offset"], 1, "{ack}");
    }
    let count = |r: &Redis| {
        r.command(&["KEYS", "ferry:{spread.*}:meta"])
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    };
    let (on_a, on_b) = (count(&a), count(&b));
    assert_eq!(on_a + on_b, 40);
    assert!(on_a >= 8 && on_b >= 8, "uneven: {on_a} and {on_b}");
}

#[tokio::test]
async fn a_client_of_a_killed_node_recovers_everything_on_another() {
    let Some(redis) = Redis::start() else { return };
    let brokers = vec![redis.url()];
    let mut doomed = node(&brokers, &[]);
    let survivor = node(&brokers, &[]);
    readyz(&doomed, 200).await;
    readyz(&survivor, 200).await;
    let mut client = Ctl::connect(&doomed.addr).await;
    client.subscribe(&["feed"]).await;
    const TOTAL: u64 = 300;
    let addr = survivor.addr.clone();
    let publisher = tokio::spawn(async move {
        let mut p = Ctl::connect(&addr).await;
        for i in 1..=TOTAL {
            let ack = p.publish("feed", &format!("m{i}")).await;
            assert_eq!(ack["offset"], i);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut got = client.take(50).await;
    // kill -9 mid-stream.
    let _ = doomed.child.kill();
    let _ = doomed.child.wait();
    while let Ok(g) = client.next(Duration::from_secs(10)).await {
        got.push(g);
    }
    let last = got.last().unwrap().clone();
    let mut again = Ctl::connect(&survivor.addr).await;
    let ack = again
        .request(json!({"op": "subscribe", "topics": ["feed"],
                        "since": {"feed": {"offset": last.offset, "epoch": last.epoch}}}))
        .await;
    assert_eq!(ack["recovered"]["feed"], true, "{ack}");
    publisher.await.unwrap();
    let rest = again.take((TOTAL - last.offset) as usize).await;
    got.extend(rest);
    assert_contiguous(&got, 1);
    assert_eq!(got.len() as u64, TOTAL);
}

#[tokio::test]
async fn redis_restarting_empty_refuses_publishes_and_changes_the_epoch() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let keys = key_file();
    let n = node(&[redis.url()], &["--api-key-file", keys.to_str().unwrap()]);
    readyz(&n, 200).await;
    let mut subscriber = Ctl::connect(&n.addr).await;
    subscriber.subscribe(&["t"]).await;
    let mut publisher = Ctl::connect(&n.addr).await;
    for i in 1..=5 {
        assert_eq!(publisher.publish("t", &format!("m{i}")).await["offset"], i);
    }
    let before = subscriber.take(5).await;
    let old_epoch = before[0].epoch.clone();
    redis.kill();
    let why = readyz(&n, 503).await;
    assert!(why.contains("unavailable"), "{why}");
    // During the outage: refused, never acknowledged.
    let reply = publisher.publish("t", "lost?").await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "broker_unavailable", "{reply}");
    let auth = format!("Bearer {KEY}");
    let (status, body) = http(
        &n.addr,
        "POST",
        "/api/publish/t",
        &[("Authorization", &auth)],
        b"x",
    )
    .await;
    assert_eq!(status, 503);
    assert!(body.contains("broker_unavailable"), "{body}");
    let reply = publisher
        .request(json!({"op": "subscribe", "topics": ["other"]}))
        .await;
    assert_eq!(reply["code"], "broker_unavailable");
    // The WebSocket connections stay open through the outage.
    assert!(!publisher.sender.is_closed());
    redis.restart_empty();
    readyz(&n, 200).await;
    // The node finds the history gone: its subscriber cannot be told what it missed, so it
    // is closed with 4010 and recovers by subscribing again.
    let close = subscriber.closed().await.expect("a close frame");
    assert_eq!(close.code.as_u16(), 4010, "{close:?}");
    let mut back = Ctl::connect(&n.addr).await;
    let ack = back
        .request(json!({"op": "subscribe", "topics": ["t"],
                        "since": {"t": {"offset": 5, "epoch": old_epoch}}}))
        .await;
    assert_eq!(ack["recovered"]["t"], false, "{ack}");
    let new_epoch = ack["positions"]["t"]["epoch"].as_str().unwrap().to_owned();
    assert_ne!(new_epoch, old_epoch);
    let ack = publisher.publish("t", "after").await;
    assert_eq!(
        (ack["offset"].as_u64(), ack["epoch"].as_str()),
        (Some(1), Some(new_epoch.as_str()))
    );
    let got = back.take(1).await;
    assert_eq!((got[0].offset, got[0].data.as_str()), (1, "after"));
    let metrics = http(&n.addr, "GET", "/metrics", &[], b"").await.1;
    assert!(
        metrics.contains("ferry_broker_positions_lost_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ferry_broker_shards_up 1"));
    let _ = std::fs::remove_file(keys);
}

#[tokio::test]
async fn a_node_started_before_its_redis_serves_and_becomes_ready() {
    let Some(probe) = Redis::start() else { return };
    drop(probe);
    let port = free_port();
    let n = node(&[format!("redis://127.0.0.1:{port}")], &[]);
    let why = readyz(&n, 503).await;
    assert!(why.contains(&port.to_string()), "{why}");
    let (status, _) = http(&n.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200, "alive while not ready");
    let mut c = Ctl::connect(&n.addr).await;
    assert_eq!(c.publish("t", "x").await["code"], "broker_unavailable");
    let _redis = Redis::start_on(port);
    readyz(&n, 200).await;
    assert_eq!(c.publish("t", "x").await["offset"], 1);
}

/// A TCP relay to Redis whose connections can be frozen: bytes stop flowing both ways while
/// the sockets stay open, as through a failover that leaves connections half dead.
struct Relay {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    async fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                // Connections made while frozen are not frozen: the node can rebuild.
                let frozen = Arc::new(AtomicBool::new(false));
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                if !flag.load(Ordering::Relaxed) {
                    let watch = flag.clone();
                    let mine = frozen.clone();
                    tokio::spawn(async move {
                        // Freeze this connection for good once the relay is frozen.
                        while !watch.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        mine.store(true, Ordering::Relaxed);
                    });
                }
                tokio::spawn(pump(ri, wo, frozen.clone()));
                tokio::spawn(pump(ro, wi, frozen));
            }
        });
        Relay { port, frozen }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::Relaxed) {
            // Swallow everything from now on, keeping both sockets open.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_silent_pubsub_connection_is_rebuilt_and_what_it_missed_is_delivered() {
    let Some(redis) = Redis::start() else { return };
    let relay = Relay::start(redis.port).await;
    let behind = node(&[format!("redis://127.0.0.1:{}", relay.port)], &[]);
    let direct = node(&[redis.url()], &[]);
    readyz(&behind, 200).await;
    readyz(&direct, 200).await;
    let mut subscriber = Ctl::connect(&behind.addr).await;
    subscriber.subscribe(&["live"]).await;
    let mut publisher = Ctl::connect(&direct.addr).await;
    publisher.publish("live", "before").await;
    assert_eq!(subscriber.take(1).await[0].data, "before");
    // Every connection of `behind` to Redis goes silent; publishes go on through `direct`.
    relay.frozen.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..10 {
        let ack = publisher.publish("live", &format!("during-{i}")).await;
        assert_eq!(ack["type"], "ack");
    }
    // Found within seconds (probe timeout), rebuilt, and the gap filled from history.
    let started = Instant::now();
    let got = subscriber.take(10).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_contiguous(&got, 2);
    assert_eq!(got[0].data, "during-0");
    publisher.publish("live", "after").await;
    assert_eq!(subscriber.take(1).await[0].offset, 12);
    let metrics = http(&behind.addr, "GET", "/metrics", &[], b"").await.1;
    assert!(
        !metrics.contains("ferry_broker_reconnects_total 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("ferry_broker_repaired_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn rediss_connects_over_tls_and_checks_the_certificate() {
    let dir = std::env::temp_dir().join(format!("ferry-rediss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let Some(redis) = Redis::start_tls(&cert_path, &key_path) else {
        return;
    };
    let url = format!("rediss://localhost:{}", redis.tls_port.unwrap());
    // The node trusts the test certificate through the system roots' override.
    let trusted = Server::start_with_env(
        "serve",
        "127.0.0.1:0",
        "http://",
        &["--broker", &url],
        &[("SSL_CERT_FILE", cert_path.to_str().unwrap())],
    );
    readyz(&trusted, 200).await;
    let mut c = Ctl::connect(&trusted.addr).await;
    c.subscribe(&["secure"]).await;
    assert_eq!(c.publish("secure", "over TLS").await["offset"], 1);
    assert_eq!(c.take(1).await[0].data, "over TLS");
    // A node that does not trust the certificate never becomes ready, and says why.
    let empty = dir.join("no-roots.pem");
    std::fs::write(&empty, "").unwrap();
    let untrusting = Server::start_with_env(
        "serve",
        "127.0.0.1:0",
        "http://",
        &["--broker", &url],
        &[("SSL_CERT_FILE", empty.to_str().unwrap())],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let why = readyz(&untrusting, 503).await;
    assert!(why.contains("rediss://localhost"), "{why}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_topic_route_publishes_in_order_without_waiting_and_closes_when_refused() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = node(&[redis.url()], &[]);
    let b = node(&[redis.url()], &[]);
    readyz(&a, 200).await;
    readyz(&b, 200).await;
    let mut reader = Ctl::connect(&b.addr).await;
    reader.subscribe(&["burst"]).await;
    let url = format!("ws://{}/ws/topics/burst", a.addr);
    let (writer, mut writer_rx, _) = ferry::connect(&url).await.unwrap();
    // Sent back to back: many are under way to Redis at once, yet they keep their order.
    for i in 0..1000 {
        writer.send(format!("m{i}")).await.unwrap();
    }
    let got = reader.take(1000).await;
    assert_contiguous(&got, 1);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.data, format!("m{i}"));
    }
    redis.kill();
    readyz(&a, 503).await;
    writer.send("not stored").await.unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), writer_rx.recv())
            .await
            .expect("closed in time")
        {
            Some(ferry::Incoming::Closed(info)) => break info,
            Some(_) => {}
            None => panic!("ended without a close frame"),
        }
    };
    assert_eq!(close.code.as_u16(), 1013, "{close:?}");
    assert!(close.reason.contains("not published"), "{close:?}");
    // A new topic connection is refused before the upgrade while the broker is down.
    let (status, body) = http(
        &a.addr,
        "GET",
        "/ws/topics/burst",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 503, "{body}");
}
