//! A WebSocket client: sends each line of stdin as a text message and prints what comes back,
//! then closes with 1000 when stdin ends.
//!
//!   cargo run -p ferry --example client ws://127.0.0.1:9001

use ferry::{CloseCode, Incoming, Message};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let (sender, mut receiver, response) = ferry::connect(&url).await?;
    eprintln!(
        "connected (compression: {})",
        if response.deflate.is_some() {
            "on"
        } else {
            "off"
        }
    );
    let printer = tokio::spawn(async move {
        while let Some(item) = receiver.recv().await {
            match item {
                Incoming::Message(Message::Text(text)) => println!("{text}"),
                Incoming::Message(Message::Binary(data)) => println!("({} bytes)", data.len()),
                Incoming::Closed(info) => eprintln!("closed: {} {}", info.code, info.reason),
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        // Waits only while the send queue is over its byte budget.
        sender.send(Message::text(line)).await?;
    }
    sender.close(CloseCode::NORMAL, "bye").await;
    printer.await?;
    Ok(())
}
