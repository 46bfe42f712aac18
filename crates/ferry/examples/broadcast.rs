//! A broadcast server: every message any client sends goes to every client, framed (and
//! compressed) once for all of them.
//!
//!   cargo run -p ferry --example broadcast              # ws://127.0.0.1:9002
//!   cargo run -p ferry --example client ws://127.0.0.1:9002   (in two terminals)

use std::sync::Arc;

use ferry::pubsub::{Broker, LocalBroker, SlowSubscriber};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("broadcast server on ws://{}", listener.local_addr()?);
    // A subscriber too slow for its send queue is closed with 1013 (SlowSubscriber::Close).
    let broker = Arc::new(LocalBroker::new(SlowSubscriber::Close));
    loop {
        let (stream, _) = listener.accept().await?;
        let broker = broker.clone();
        tokio::spawn(async move {
            let Ok((sender, mut receiver)) = ferry::accept(stream).await else {
                return;
            };
            let id = broker.subscribe("all", sender.into());
            while let Some(message) = receiver.recv_message().await {
                // Never waits: each subscriber's message goes into its own send queue.
                broker.publish("all", message);
            }
            broker.unsubscribe("all", id);
        });
    }
}
