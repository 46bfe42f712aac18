//! `ferry listen`: a debugging server. It prints what clients send and sends stdin lines to
//! them, like `websocat -s`.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::Args;
use ferry::{CloseCode, Config, Incoming, Message, Sender};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::limits::{DeflateArgs, LimitArgs};

/// A server for debugging: prints every message clients send, one per line, and sends each
/// stdin line as a text message to the first connected client (or, with --every, to all).
///
/// Connections and closes are reported on stderr. Stdin's end closes every client with 1000
/// and exits; with --once, the first client's leaving ends the server too.
///
/// Examples:
///   ferry listen --listen 127.0.0.1:9002
///   ferry listen --listen 0.0.0.0:9002 --every      # type to broadcast to every client
///   ferry listen --once > got.txt                   # one client, then exit
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ListenArgs {
    /// Where to listen: HOST:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9002")]
    pub listen: String,
    /// Send stdin lines to every connected client, not only the first.
    #[arg(long)]
    pub every: bool,
    /// Exit when the first client disconnects.
    #[arg(long)]
    pub once: bool,
    /// Print nothing on stderr but errors.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub deflate: DeflateArgs,
}

pub fn run(args: ListenArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(listen(args));
    // A read of stdin may still be blocked on its thread: do not wait for it.
    runtime.shutdown_background();
    result
}

/// Connected clients, oldest first.
type Clients = Arc<Mutex<Vec<(u64, Sender)>>>;

async fn listen(args: ListenArgs) -> Result<()> {
    let listener = TcpListener::bind(&args.listen).await.with_context(|| {
        format!(
            "--listen {}: cannot listen there; use a free HOST:PORT such as 127.0.0.1:9002",
            args.listen
        )
    })?;
    let config = Config {
        limits: args.limits.limits(),
        deflate: args.deflate.config(),
        ..Config::default()
    };
    if !args.quiet {
        eprintln!("ferry listen: listening on ws://{}", listener.local_addr()?);
    }
    let clients: Clients = Arc::default();
    // Every received message goes through one writer, so lines never interleave.
    let (lines_tx, mut lines_rx) = mpsc::channel::<Message>(64);
    let (done_tx, mut done_rx) = watch::channel(false);
    let printer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(message) = lines_rx.recv().await {
            let written = async {
                stdout.write_all(message.as_bytes()).await?;
                stdout.write_all(b"\n").await?;
                stdout.flush().await
            };
            if written.await.is_err() {
                break;
            }
        }
    });
    let mut input = tokio::spawn(send_stdin(clients.clone(), args.every, args.quiet));
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        eprintln!("ferry listen: accept failed: {err}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                next_id += 1;
                let id = next_id;
                let (clients, lines, done, config, quiet, once) = (
                    clients.clone(), lines_tx.clone(), done_tx.clone(), config.clone(), args.quiet, args.once,
                );
                tokio::spawn(async move {
                    let (sender, mut receiver) = match ferry::accept_with(stream, &config).await {
                        Ok(handles) => handles,
                        Err(err) => {
                            eprintln!("ferry listen: #{id} from {peer}: handshake failed: {err}");
                            return;
                        }
                    };
                    if !quiet {
                        eprintln!("ferry listen: #{id} connected from {peer}");
                    }
                    lock(&clients).push((id, sender));
                    let close = loop {
                        match receiver.recv().await {
                            Some(Incoming::Message(message)) => {
                                let _ = lines.send(message).await;
                            }
                            Some(Incoming::Closed(info)) => break format!("{} {}", info.code, info.reason),
                            None => break "1006".to_owned(),
                        }
                    };
                    lock(&clients).retain(|(other, _)| *other != id);
                    if !quiet {
                        eprintln!("ferry listen: #{id} closed: {}", close.trim_end());
                    }
                    if once {
                        let _ = done.send(true);
                    }
                });
            }
            _ = done_rx.changed() => break,
            // Stdin ended: polled here once, then the loop ends.
            _ = &mut input => break,
        }
    }
    let senders: Vec<Sender> = lock(&clients).iter().map(|(_, s)| s.clone()).collect();
    for sender in senders {
        sender.close(CloseCode::NORMAL, "").await;
    }
    input.abort();
    drop(lines_tx);
    // Give the printer what was already received.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), printer).await;
    Ok(())
}

fn lock(clients: &Clients) -> std::sync::MutexGuard<'_, Vec<(u64, Sender)>> {
    // Only pushes and removals happen under the lock: a poisoned list is still consistent.
    clients
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn send_stdin(clients: Clients, every: bool, quiet: bool) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(err) => {
                eprintln!("ferry listen: stdin: {err} (lines must be UTF-8)");
                return;
            }
        };
        let targets: Vec<Sender> = {
            let clients = lock(&clients);
            if every {
                clients.iter().map(|(_, s)| s.clone()).collect()
            } else {
                clients
                    .first()
                    .map(|(_, s)| s.clone())
                    .into_iter()
                    .collect()
            }
        };
        if targets.is_empty() && !quiet {
            eprintln!("ferry listen: no client connected; line dropped");
        }
        for sender in targets {
            let _ = sender.send(Message::text(line.clone())).await;
        }
    }
}
