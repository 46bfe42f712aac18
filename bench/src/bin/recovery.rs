//! How long `ferry serve` takes to recover missed messages: publishes N messages to a fresh
//! topic through PREFIX/control, then, R times, opens a new control connection that subscribes
//! with `since` the position before the first of them, and times from the subscribe request to
//! the last recovered message. The client is tokio-tungstenite, not ferry.
//!
//!   recovery ws://127.0.0.1:8080/ws/control [MESSAGES=1000] [REPEATS=20] [SIZE=100]
//!
//! Prints one line per repeat and the median; the server's --history-size and --recovery-max
//! must be at least MESSAGES.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("an answer within 30 s")
            .expect("the connection stays open")
            .expect("a WebSocket message");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(url) = args.first().cloned() else {
        eprintln!("usage: recovery ws://HOST:PORT/ws/control [MESSAGES] [REPEATS] [SIZE]");
        std::process::exit(2);
    };
    let arg = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (messages, repeats, size) = (arg(1, 1000), arg(2, 20), arg(3, 100));
    ferry_bench_peers::runtime().block_on(async move {
        let (mut publisher, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("connect");
        let topic = format!("recovery-{}", std::process::id());
        let data = "x".repeat(size);
        let mut first: Option<(u64, String)> = None;
        for i in 0..messages {
            let request = json!({"op": "publish", "topic": topic, "data": data, "id": i});
            publisher.send(Message::text(request.to_string())).await.expect("send");
            let ack = next_json(&mut publisher).await;
            assert_eq!(ack["type"], "ack", "{ack}");
            if first.is_none() {
                let offset = ack["offset"].as_u64().expect("offset");
                first = Some((offset, ack["epoch"].as_str().expect("epoch").to_owned()));
            }
        }
        let (offset, epoch) = first.expect("at least one message");
        let mut times = Vec::new();
        for repeat in 0..repeats {
            let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("connect");
            let request = json!({"op": "subscribe", "topics": [topic], "id": 1,
                                 "since": {&topic: {"offset": offset - 1, "epoch": epoch}}});
            let started = Instant::now();
            socket.send(Message::text(request.to_string())).await.expect("send");
            let ack = next_json(&mut socket).await;
            assert_eq!(ack["recovered"][&topic], true, "{ack}");
            let mut last = 0;
            for _ in 0..messages {
                last = next_json(&mut socket).await["offset"].as_u64().expect("offset");
            }
            let took = started.elapsed();
            assert_eq!(last, offset + messages as u64 - 1);
            println!("repeat {repeat}: {messages} messages recovered in {:.2} ms", took.as_secs_f64() * 1e3);
            times.push(took);
            let _ = socket.close(None).await;
        }
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "median: {messages} messages of {size} B recovered in {:.2} ms ({:.2} us per message), min {:.2} ms, max {:.2} ms",
            median.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e6 / messages as f64,
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    });
}
