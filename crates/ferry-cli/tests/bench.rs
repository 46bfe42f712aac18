//! `ferry bench` against real `ferry serve` and `ferry echo` processes: correctness of the load
//! generator's new modes (every message arrives, checked, and is counted once), not speed. The
//! fan-out over two nodes needs redis-server, and is skipped (saying so) where it is missing.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Server;
use common::control::http;
use common::redis::Redis;
use serde_json::Value;

/// Runs `ferry bench ARGS --json --quiet` and returns its exit status, parsed output and stderr.
fn bench(args: &[&str]) -> (Output, Option<Value>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command.arg("bench").args(args).args(["--json", "--quiet"]);
    if !args.contains(&"--timeout") {
        // Generous: a loaded CI machine is slow, and this is not a timing test.
        command.args(["--timeout", "20s"]);
    }
    let output = command.output().expect("run ferry bench");
    let json = serde_json::from_slice(&output.stdout).ok();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, json, stderr)
}

#[test]
fn fanout_delivers_every_message_to_every_subscriber() {
    let server = Server::serve(&[]);
    let url = format!("ws://{}/ws/topics/bench", server.addr);
    let pid = server.pid().to_string();
    let (output, json, stderr) = bench(&[
        "fanout",
        "--url",
        &url,
        "--connections",
        "8",
        "--messages",
        "200",
        "--server-pid",
        &pid,
    ]);
    assert!(output.status.success(), "ferry bench failed: {stderr}");
    let json = json.expect("one JSON object on stdout");
    assert_eq!(json["mode"], "fanout");
    assert_eq!(json["messages"], 8 * 200, "{json}");
    assert_eq!(json["fanout"]["published"], 200, "{json}");
    // ferry serve sends a topic message to its publisher too.
    assert_eq!(json["fanout"]["publisher_copies"], 200, "{json}");
    assert_eq!(json["fanout"]["deliveries_total"], 9 * 200, "{json}");
    assert_eq!(json["warnings"], serde_json::json!([]), "{json}");
}

#[test]
fn fanout_with_deflate_and_text_checks_every_inflated_byte() {
    let server = Server::serve(&[]);
    let url = format!("ws://{}/ws/topics/compressed", server.addr);
    let (output, json, stderr) = bench(&[
        "fanout",
        "--url",
        &url,
        "--connections",
        "3",
        "--messages",
        "100",
        "--size",
        "4KiB",
        "--kind",
        "text",
        "--deflate",
        "--threads",
        "2",
    ]);
    assert!(output.status.success(), "ferry bench failed: {stderr}");
    let json = json.expect("one JSON object on stdout");
    assert_eq!(json["messages"], 3 * 100, "{json}");
    assert_eq!(json["payload"], "json");
    let deflate = &json["deflate"];
    let response = deflate["response"].as_str().expect("negotiated");
    assert!(response.starts_with("permessage-deflate"), "{json}");
    // The JSON-like payload really went compressed.
    assert!(
        deflate["sent_payload_bytes"].as_u64().unwrap() < 4096 / 2,
        "{json}"
    );
}

#[test]
fn echo_with_deflate_verifies_what_the_server_compresses() {
    // ferry echo keeps its compressor between messages by default (context takeover), so the
    // generator's inflater must keep its window across messages too.
    let server = Server::echo(&[]);
    let (output, json, stderr) = bench(&[
        "--url",
        &server.url(),
        "--connections",
        "4",
        "--pipeline",
        "3",
        "--messages",
        "300",
        "--size",
        "16KiB",
        "--deflate",
    ]);
    assert!(output.status.success(), "ferry bench failed: {stderr}");
    let json = json.expect("one JSON object on stdout");
    assert_eq!(json["messages"], 300, "{json}");
    let response = json["deflate"]["response"].as_str().expect("negotiated");
    assert!(
        !response.contains("server_no_context_takeover"),
        "{response}"
    );
}

/// --http2: the WebSockets are streams of HTTP/2 connections (3 of them for 10 WebSockets at 4
/// each), every echo still checked, compressed ones included; the server counts HTTP/2
/// WebSockets only.
#[test]
fn echo_over_http2_streams() {
    let server = Server::serve(&[]);
    let url = format!("ws://{}/ws/echo", server.addr);
    let (output, json, stderr) = bench(&[
        "--url",
        &url,
        "--http2",
        "--http2-streams",
        "4",
        "--connections",
        "10",
        "--pipeline",
        "2",
        "--messages",
        "500",
        "--size",
        "4KiB",
        "--deflate",
    ]);
    assert!(output.status.success(), "ferry bench failed: {stderr}");
    let json = json.expect("one JSON object on stdout");
    assert_eq!(json["messages"], 500, "{json}");
    assert_eq!(json["http2_streams_per_connection"], 4, "{json}");
    let metrics = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(http(&server.addr, "GET", "/metrics", &[], b""))
        .1;
    assert!(
        metrics.contains("ferry_connections_total{http=\"2\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_connections_total{http=\"1.1\"} 0"),
        "{metrics}"
    );
}

#[test]
fn deflate_refused_by_the_server_fails_the_run_and_says_why() {
    let server = Server::echo(&["--no-deflate"]);
    let (output, _, stderr) = bench(&["--url", &server.url(), "--messages", "10", "--deflate"]);
    assert!(!output.status.success());
    assert!(stderr.contains("declined permessage-deflate"), "{stderr}");
}

#[test]
fn fanout_on_a_route_that_is_not_a_topic_fails_and_says_why() {
    let server = Server::serve(&[]);
    let url = format!("ws://{}/ws/echo", server.addr);
    let (output, _, stderr) = bench(&[
        "fanout",
        "--url",
        &url,
        "--connections",
        "2",
        "--messages",
        "10",
        "--timeout",
        "2s",
    ]);
    assert!(!output.status.success());
    assert!(stderr.contains("pub/sub topic"), "{stderr}");
}

#[test]
fn idle_holds_one_topic_per_connection_with_path_per_connection() {
    let metrics = idle_on_topics("--path-per-connection");
    // The server saw twenty topics, idle-0 to idle-19, not one shared `idle`.
    for topic in ["idle-0", "idle-19"] {
        let series = format!("ferry_topic_subscribers{{topic=\"{topic}\"}}");
        assert!(metrics.contains(&series), "no {series} in {metrics}");
    }
    assert!(
        !metrics.contains("ferry_topic_subscribers{topic=\"idle\"}"),
        "{metrics}"
    );
}

#[test]
fn idle_silent_connections_share_a_topic_without_publishing() {
    let metrics = idle_on_topics("--silent");
    // All twenty subscribed to one topic, and none of them published: the topic is known (it
    // had subscribers) and its count of published messages is still zero.
    assert!(
        metrics.contains("ferry_topic_published_total{topic=\"idle\"} 0"),
        "{metrics}"
    );
}

/// Holds twenty idle connections on `/ws/topics/idle` with the idle-only `flag`, and returns
/// the server's metrics after; checks on the way that the flag is refused outside idle mode.
fn idle_on_topics(flag: &str) -> String {
    let server = Server::serve(&[]);
    let url = format!("ws://{}/ws/topics/idle", server.addr);
    let (output, json, stderr) = bench(&[
        "idle",
        "--url",
        &url,
        "--connections",
        "20",
        "--hold",
        "0s",
        flag,
    ]);
    assert!(output.status.success(), "ferry bench failed: {stderr}");
    assert_eq!(json.expect("a JSON report")["connections"], 20);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_, metrics) = runtime.block_on(http(&server.addr, "GET", "/metrics", &[], b""));
    let (output, _, stderr) = bench(&["--url", &url, "--messages", "1", flag]);
    assert!(!output.status.success());
    let refusal = format!("{flag} applies to idle mode only");
    assert!(stderr.contains(&refusal), "{stderr}");
    metrics
}

/// Waits until `GET /readyz` answers 200 (a node with a broker is ready once it reaches it).
fn wait_ready(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    loop {
        let (status, body) = runtime.block_on(http(&server.addr, "GET", "/readyz", &[], b""));
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz of {} stayed {status}: {body}",
            server.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fanout_spreads_subscribers_over_nodes_sharing_a_topic_through_redis() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let broker = redis.url();
    let nodes = [
        Server::serve(&["--broker", &broker]),
        Server::serve(&["--broker", &broker]),
    ];
    for node in &nodes {
        wait_ready(node);
    }
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("ws://{}/ws/topics/spread", n.addr))
        .collect();
    let (output, json, stderr) = bench(&[
        "fanout",
        "--url",
        &urls[0],
        "--url",
        &urls[1],
        "--connections",
        "10",
        "--messages",
        "200",
        "--threads",
        "2",
    ]);
    assert!(output.status.success(), "ferry bench failed: {stderr}");
    let json = json.expect("one JSON object on stdout");
    assert_eq!(json["mode"], "fanout");
    assert_eq!(json["urls"], serde_json::json!(urls), "{json}");
    assert_eq!(json["url"], urls.join(", "), "{json}");
    let fanout = &json["fanout"];
    // Subscriber i on URL i mod 2; the publisher on the first.
    assert_eq!(
        fanout["subscribers_per_url"],
        serde_json::json!([5, 5]),
        "{json}"
    );
    // Every subscriber, on either node, got every message, checked and in order.
    assert_eq!(json["messages"], 10 * 200, "{json}");
    assert_eq!(fanout["published"], 200, "{json}");
    assert_eq!(fanout["publisher_copies"], 200, "{json}");
    assert_eq!(fanout["deliveries_total"], 11 * 200, "{json}");
    assert_eq!(json["warnings"], serde_json::json!([]), "{json}");
    // Node 0's messages reached node 1's subscribers through Redis.
    let scripts = redis.calls("evalsha") + redis.calls("eval");
    assert!(scripts >= 200, "{scripts} publish scripts in Redis: {json}");
}

#[test]
fn fanout_urls_must_share_one_path_and_only_fanout_takes_several() {
    let (output, _, stderr) = bench(&[
        "fanout",
        "--url",
        "ws://127.0.0.1:1/ws/topics/a",
        "--url",
        "ws://127.0.0.1:2/ws/topics/b",
        "--messages",
        "10",
    ]);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--url") && stderr.contains("path"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let (output, _, stderr) = bench(&[
        "--url",
        "ws://127.0.0.1:1/",
        "--url",
        "ws://127.0.0.1:2/",
        "--messages",
        "10",
    ]);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--url") && stderr.contains("fanout"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}
