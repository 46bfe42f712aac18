//! `ferry demo`: why WebSocket has messages, shown on loopback. The same writes over raw TCP
//! arrive as reads that split and merge them; over WebSocket they arrive as the same messages.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use ferry::{Config, Incoming, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

use crate::size::parse_size;

/// Show, on loopback, what TCP does to message boundaries and what WebSocket keeps.
///
/// Sends the same N messages of random sizes over a raw TCP connection (small socket buffers,
/// so the effect is visible) and over a WebSocket, and prints what each receiver got. Then a
/// non-blocking TCP write that returns early (a partial write) against an atomic WebSocket
/// try_send.
///
/// Examples:
///   ferry demo
///   ferry demo --messages 50 --max-size 64KiB --seed 7
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct DemoArgs {
    /// How many messages to send each way.
    #[arg(long, value_name = "N", default_value_t = 12)]
    pub messages: usize,
    /// Largest message size; sizes are drawn from 1 to this.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "24KiB")]
    pub max_size: usize,
    /// Seed of the size generator: the same seed, the same sizes.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
}

pub fn run(args: DemoArgs) -> Result<()> {
    if args.messages == 0 || args.messages > 10_000 {
        bail!("--messages {}: use 1 to 10000", args.messages);
    }
    if args.max_size == 0 || args.max_size > 16 << 20 {
        bail!("--max-size {}: use 1 byte to 16MiB", args.max_size);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(demo(args))
}

/// xorshift64*: a small seeded generator, so a run can be repeated.
fn sizes(count: usize, max: usize, seed: u64) -> Vec<usize> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let value = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            1 + (value % max as u64) as usize
        })
        .collect()
}

fn list(sizes: &[usize]) -> String {
    sizes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn demo(args: DemoArgs) -> Result<()> {
    let sizes = sizes(args.messages, args.max_size, args.seed);
    let total: usize = sizes.iter().sum();
    println!(
        "sent: {} messages, {total} bytes, sizes: {}",
        sizes.len(),
        list(&sizes)
    );
    println!();
    let reads = over_tcp(&sizes).await.context("the TCP part")?;
    let whole = reads == sizes;
    println!(
        "tcp: {} writes -> {} reads, sizes: {}",
        sizes.len(),
        reads.len(),
        list(&reads)
    );
    println!(
        "tcp: {}",
        if whole {
            "this time every read matched a write, by luck: nothing in TCP promises it".to_owned()
        } else {
            "the reads split and merge the writes; the receiver cannot tell where a message ends"
                .to_owned()
        }
    );
    println!();
    let received = over_websocket(&sizes).await.context("the WebSocket part")?;
    println!(
        "websocket: {} sends -> {} messages, sizes: {}",
        sizes.len(),
        received.len(),
        list(&received)
    );
    println!(
        "websocket: {}",
        if received == sizes {
            "every message arrived whole, in order, however TCP cut the bytes"
        } else {
            "MISMATCH: the messages differ from what was sent"
        }
    );
    println!();
    partial_write().await.context("the partial-write part")?;
    if received != sizes {
        bail!("the WebSocket side did not get the messages that were sent");
    }
    Ok(())
}

/// Writes each message with its own write call; returns the size of each read on the other
/// side. Small socket buffers and a small read buffer make the splitting show.
async fn over_tcp(sizes: &[usize]) -> Result<Vec<usize>> {
    let listener = small_listener().await?;
    let addr = listener.local_addr()?;
    let total: usize = sizes.iter().sum();
    let reader = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut reads = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut seen = 0;
        while seen < total {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            reads.push(n);
            seen += n;
            // A reader that does some work between reads, as real ones do: writes pile up.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok::<_, std::io::Error>(reads)
    });
    let socket = TcpSocket::new_v4()?;
    socket.set_send_buffer_size(4096)?;
    let mut stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    for &size in sizes {
        stream.write_all(&vec![b'x'; size]).await?;
    }
    stream.shutdown().await?;
    Ok(reader.await??)
}

async fn small_listener() -> Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.bind("127.0.0.1:0".parse()?)?;
    Ok(socket.listen(16)?)
}

/// Sends each message over a WebSocket; returns the size of each message received.
async fn over_websocket(sizes: &[usize]) -> Result<Vec<usize>> {
    let listener = small_listener().await?;
    let addr = listener.local_addr()?;
    let count = sizes.len();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        let (_sender, mut receiver) = ferry::accept(stream).await?;
        let mut received = Vec::new();
        while received.len() < count {
            match receiver.recv().await {
                Some(Incoming::Message(message)) => received.push(message.len()),
                _ => break,
            }
        }
        Ok::<_, ferry::Error>(received)
    });
    let config = Config::default().without_deflate();
    let (sender, _receiver, _) = ferry::connect_with(&format!("ws://{addr}/"), &config).await?;
    for &size in sizes {
        sender
            .send(Message::binary(vec![b'x'; size]))
            .await
            .map_err(|_| anyhow::anyhow!("the demo connection closed"))?;
    }
    let received = server.await??;
    sender.close(ferry::CloseCode::NORMAL, "").await;
    Ok(received)
}

/// A non-blocking TCP write to a peer that is not reading returns early; a WebSocket try_send
/// takes the whole message or hands it back.
async fn partial_write() -> Result<()> {
    const BIG: usize = 1 << 20;
    let listener = small_listener().await?;
    let addr = listener.local_addr()?;
    let socket = TcpSocket::new_v4()?;
    socket.set_send_buffer_size(4096)?;
    let stream = socket.connect(addr).await?;
    // Accepted and never read from.
    let (_idle, _) = listener.accept().await?;
    stream.writable().await?;
    let data = vec![b'y'; BIG];
    let written = match stream.try_write(&data) {
        Ok(n) => n,
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(err) => return Err(err.into()),
    };
    println!(
        "tcp: a non-blocking write of {BIG} bytes returned after {written}: the other {} are the caller's to keep and retry",
        BIG - written
    );
    let listener = small_listener().await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        // The server holds the connection but reads slowly: it takes one message.
        let (_sender, mut receiver) = ferry::accept(stream).await?;
        let first = receiver.recv().await;
        Ok::<_, ferry::Error>((first, receiver))
    });
    let config = Config::default().without_deflate();
    let (sender, _receiver, _) = ferry::connect_with(&format!("ws://{addr}/"), &config).await?;
    let verdict = match sender.try_send(Message::binary(vec![b'y'; BIG])) {
        Ok(()) => format!(
            "took the whole {BIG}-byte message (buffered_amount {}); it goes out whole or not at all",
            sender.buffered_amount()
        ),
        Err(err) => {
            let reason = err.to_string();
            format!(
                "handed the whole {}-byte message back ({reason}); nothing was half-sent",
                err.into_message().len()
            )
        }
    };
    println!("websocket: try_send of {BIG} bytes {verdict}");
    let (first, _receiver) = server.await??;
    if let Some(Incoming::Message(message)) = first {
        println!(
            "websocket: the server received one message of {} bytes",
            message.len()
        );
    }
    sender.close(ferry::CloseCode::NORMAL, "").await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_seeded_and_in_range() {
        let a = sizes(100, 500, 3);
        assert_eq!(a, sizes(100, 500, 3));
        assert_ne!(a, sizes(100, 500, 4));
        assert!(a.iter().all(|&s| (1..=500).contains(&s)));
    }
}
