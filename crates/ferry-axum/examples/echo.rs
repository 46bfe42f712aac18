//! An axum app whose `/ws` route is a ferry WebSocket echo, compressed when the client agrees,
//! over HTTP/1.1 and HTTP/2 alike.
//!
//!   cargo run -p ferry-axum --example echo            # listens on 127.0.0.1:3000
//!   ferry connect ws://127.0.0.1:3000/ws

use axum::{Router, response::Response, routing::any};
use ferry_axum::WebSocketUpgrade;

async fn echo(ws: WebSocketUpgrade) -> Response {
    ws.protocols(["echo"])
        .on_upgrade(|sender, mut receiver| async move {
            while let Some(message) = receiver.recv_message().await {
                if sender.send(message).await.is_err() {
                    break;
                }
            }
        })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let app = Router::new().route("/ws", any(echo));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on ws://{}/ws", listener.local_addr()?);
    axum::serve(listener, app).await
}
