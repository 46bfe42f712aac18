//! Three WebSockets as streams of one HTTP/2 connection (RFC 8441), against `ferry serve`
//! (which speaks HTTP/2 by default): two topics and the echo route.
//!
//!   cargo run --release -- serve &
//!   cargo run -p ferry --features hyper --example http2_client ws://127.0.0.1:8080

use ferry::http2::Http2Connection;
use ferry::{CloseCode, Config, Message};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8080".into());
    // Fails with Error::Http2Unavailable when the server does not allow WebSockets over
    // HTTP/2; ferry::http2::connect would fall back to HTTP/1.1 instead.
    let connection = Http2Connection::connect(&base, &Config::default()).await?;
    let (news, mut news_rx, _) = connection.websocket("/ws/topics/news").await?;
    let (sport, _sport_rx, _) = connection.websocket("/ws/topics/sport").await?;
    let (echo, mut echo_rx, response) = connection.websocket("/ws/echo").await?;
    println!(
        "three WebSockets on one connection (HTTP status {})",
        response.status
    );

    echo.send(Message::text("hello over a stream")).await?;
    println!("echo: {:?}", echo_rx.recv_message().await);
    news.send(Message::text("extra!")).await?;
    // ferry serve sends a topic's messages to its publisher too.
    println!("news: {:?}", news_rx.recv_message().await);
    echo.close(CloseCode::NORMAL, "done").await;
    news.close(CloseCode::NORMAL, "done").await;
    sport.close(CloseCode::NORMAL, "done").await;
    Ok(())
}
