//! `ferry forward`: the client end of a TCP-over-WebSocket bridge, like `ssh -L` over port
//! 443. Each accepted TCP connection becomes one WebSocket connection; bytes travel as binary
//! messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use bytes::BytesMut;
use clap::Args;
use ferry::{CloseCode, Config, Incoming, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::connect::ClientArgs;
use crate::size::parse_size;

/// Forward local TCP connections over WebSocket: each accepted connection opens one WebSocket
/// to --to and its bytes travel as binary messages, both ways.
///
/// The subprotocol `binary` is offered (websockify's name for raw binary frames) unless
/// --protocol says otherwise. When the local side stops sending (half-close), ferry sends the
/// close frame after the last bytes and keeps delivering what still arrives until the server's
/// close; when the server closes, the local connection gets end-of-file and ends.
///
/// Examples:
///   ferry forward --listen 127.0.0.1:2222 --to wss://bastion.example/ws/bridge/ssh
///   ssh -p 2222 user@127.0.0.1
///   ferry forward --listen 127.0.0.1:5433 --to ws://10.0.0.5:9000/ws/bridge/db --ca ca.pem
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ForwardArgs {
    /// Local address to accept TCP connections on, HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The bridge's WebSocket URL (ws://, wss:// or ws+unix://).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// The largest read from a TCP connection, so the largest message sent.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "64KiB")]
    pub chunk_size: usize,
    /// Print nothing on stderr but errors.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(args: ForwardArgs) -> Result<()> {
    if args.chunk_size == 0 {
        anyhow::bail!("--chunk-size 0: use at least 1 byte, e.g. --chunk-size 64KiB");
    }
    ferry::Address::parse(&args.to).map_err(|err| anyhow::anyhow!("--to: {err}"))?;
    let mut config = args.client.config().map_err(|f| anyhow::anyhow!("{f}"))?;
    if args.client.insecure && !args.quiet {
        eprintln!("ferry forward: warning: --insecure: the server's certificate is not checked");
    }
    if config.protocols.is_empty() {
        config.protocols = vec!["binary".into()];
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(forward(args, config))
}

async fn forward(args: ForwardArgs, config: Config) -> Result<()> {
    let listener = TcpListener::bind(&args.listen).await.with_context(|| {
        format!(
            "--listen {}: cannot listen there; use a free HOST:PORT such as 127.0.0.1:2222",
            args.listen
        )
    })?;
    let local = listener.local_addr()?;
    if !args.quiet {
        eprintln!(
            "ferry forward: listening on {local}, forwarding to {}",
            args.to
        );
    }
    let config = Arc::new(config);
    let url: Arc<str> = args.to.into();
    let ids = AtomicU64::new(0);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Typically out of file descriptors: back off rather than spin.
                eprintln!("ferry forward: accept failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = ids.fetch_add(1, Ordering::Relaxed) + 1;
        let (config, url, quiet, chunk) =
            (config.clone(), url.clone(), args.quiet, args.chunk_size);
        tokio::spawn(async move {
            match carry(stream, &url, &config, chunk).await {
                Ok((up, down, close)) if !quiet => eprintln!(
                    "ferry forward: #{id} from {peer} done: {up} bytes up, {down} bytes down, closed {close}"
                ),
                Ok(_) => {}
                Err(err) => eprintln!("ferry forward: #{id} from {peer}: {err}"),
            }
        });
    }
}

/// Carries one TCP connection over one WebSocket; returns the bytes each way and the close.
async fn carry(
    stream: TcpStream,
    url: &str,
    config: &Config,
    chunk: usize,
) -> Result<(u64, u64, String)> {
    let _ = stream.set_nodelay(true);
    let (sender, mut receiver, _response) = ferry::connect_with(url, config)
        .await
        .map_err(|err| anyhow::anyhow!(super::connect::connect_failure(url, &err).message))?;
    let (mut tcp_read, mut tcp_write) = stream.into_split();
    let upstream_sender = sender.clone();
    let up = Arc::new(AtomicU64::new(0));
    let total = up.clone();
    let upstream = tokio::spawn(async move {
        loop {
            let mut buf = BytesMut::with_capacity(chunk);
            match tcp_read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total.fetch_add(n as u64, Ordering::Relaxed);
                    if upstream_sender
                        .send(Message::Binary(buf.freeze()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        // The local side is done sending: the close goes out after the last bytes, and what
        // the server still sends keeps arriving until its close.
        upstream_sender.start_close(CloseCode::NORMAL, "");
    });
    let mut down = 0u64;
    let close = loop {
        match receiver.recv().await {
            Some(Incoming::Message(message)) => {
                down += message.len() as u64;
                if tcp_write.write_all(message.as_bytes()).await.is_err() {
                    // The local side is gone: nothing more can be delivered.
                    sender.start_close(CloseCode::GOING_AWAY, "local connection closed");
                }
            }
            Some(Incoming::Closed(info)) => break format!("{} {}", info.code, info.reason),
            None => break "1006".to_owned(),
        }
    };
    // Half-close towards the local side: it reads end-of-file.
    let _ = tcp_write.shutdown().await;
    upstream.abort();
    Ok((
        up.load(Ordering::Relaxed),
        down,
        close.trim_end().to_owned(),
    ))
}
