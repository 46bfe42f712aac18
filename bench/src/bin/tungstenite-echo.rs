//! tokio-tungstenite's own echo server (its examples/echo-server.rs: split, filter data messages,
//! forward), on a current_thread runtime, with 64 MiB message and frame limits so the bulk
//! benchmark's 16 MiB messages pass. Everything else is tungstenite's default configuration.

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn main() {
    let listen = ferry_bench_peers::listen_arg(
        "tungstenite-echo",
        "a tokio-tungstenite WebSocket echo server",
    );
    ferry_bench_peers::runtime().block_on(async move {
        let listener = ferry_bench_peers::bind("tungstenite-echo", &listen).await;
        ferry_bench_peers::serve(listener, echo).await
    })
}

async fn echo(stream: TcpStream) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (write, read) = ws.split();
    let _ = read
        .try_filter(|message| future::ready(message.is_text() || message.is_binary()))
        .forward(write)
        .await;
}
