//! A WebSocket echo server on TCP: every message comes back as it came.
//!
//!   cargo run -p ferry --example echo_server            # ws://127.0.0.1:9001
//!   cargo run -p ferry --example client ws://127.0.0.1:9001

use ferry::{Config, Limits};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("echo server on ws://{}", listener.local_addr()?);
    // The defaults are safe for the internet; here, messages up to 16 MiB.
    let config = Config {
        limits: Limits {
            max_message_size: 16 << 20,
            ..Limits::default()
        },
        ..Config::default()
    };
    loop {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let config = config.clone();
        tokio::spawn(async move {
            // A bad handshake is answered (400, 426, ...) by accept_with; nothing to do here.
            let Ok((sender, mut receiver)) = ferry::accept_with(stream, &config).await else {
                return;
            };
            while let Some(message) = receiver.recv_message().await {
                if sender.send(message).await.is_err() {
                    break;
                }
            }
            println!("{peer}: {:?}", receiver.close_info());
        });
    }
}
