//! `ferry echo`: the conformance and benchmark target. Every message comes back unchanged.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use ferry::{Config, Incoming};
use tokio::io::{AsyncRead, AsyncWrite};

use super::limits::{DeflateArgs, LimitArgs};
use crate::size::parse_duration;
use crate::task_pool::TaskPool;

/// Echo every text and binary message back unchanged, on any path.
///
/// Examples:
///   ferry echo
///   ferry echo --listen 0.0.0.0:9001 --threads 2
///   ferry echo --listen unix:/tmp/echo.sock --max-message-size 64MiB
///   ferry echo --pool-connections
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct EchoArgs {
    /// Where to listen: HOST:PORT, or unix:/path/to/socket.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    pub listen: String,
    /// Worker threads; 1 runs every connection on one thread.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Send a ping this often on every connection (off by default).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ping_interval: Option<Duration>,
    /// Close a connection whose pong is this late (with --ping-interval).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "20s")]
    pub ping_timeout: Duration,
    /// Poll the connections from one long-lived task per thread instead of a task each: about
    /// 0.2 KiB less memory per idle connection (docs/memory.md). A panic still ends only its
    /// own connection; load is balanced between threads by pool, not by connection.
    #[arg(long)]
    pub pool_connections: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub deflate: DeflateArgs,
}

pub fn run(args: EchoArgs) -> Result<()> {
    if args.threads == 0 {
        bail!("--threads 0: at least one thread is needed; use --threads 1");
    }
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let mut config = Config {
        limits: args.limits.limits(),
        deflate: args.deflate.config(),
        ..Config::default()
    };
    if let Some(interval) = args.ping_interval {
        config = config.with_keepalive(interval, args.ping_timeout);
    }
    let pools = args.pool_connections.then_some(args.threads);
    runtime.block_on(serve(args.listen, config, pools))
}

/// How a connection's future is run: a task each, or in the pool tasks.
enum Spawner<F> {
    TaskEach,
    Pooled(TaskPool<F>),
}

impl<F: Future<Output = ()> + Send + 'static> Spawner<F> {
    /// `pools`: how many pool tasks, or `None` for a task per connection.
    fn new(pools: Option<usize>) -> Self {
        match pools {
            Some(tasks) => Spawner::Pooled(TaskPool::start(tasks)),
            None => Spawner::TaskEach,
        }
    }

    fn spawn(&self, future: F) {
        match self {
            Spawner::TaskEach => drop(tokio::spawn(future)),
            Spawner::Pooled(pool) => pool.spawn(future),
        }
    }
}

async fn serve(listen: String, config: Config, pools: Option<usize>) -> Result<()> {
    // Shared: each connection's task would otherwise hold a copy of it (over 300 bytes) for
    // its whole life.
    let config = std::sync::Arc::new(config);
    #[cfg(not(unix))]
    if listen.starts_with("unix:") {
        anyhow::bail!(
            "--listen {listen}: Unix sockets do not exist on this platform; use HOST:PORT"
        );
    }
    #[cfg(unix)]
    if let Some(path) = listen.strip_prefix("unix:") {
        // A stale socket file from an earlier run would make bind fail.
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("--listen {listen}: cannot bind the Unix socket; check the directory exists and is writable"))?;
        tracing::info!("ferry echo listening on ws+unix://{path}");
        let spawner = Spawner::new(pools);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => spawner.spawn(echo(stream, config.clone())),
                Err(err) => accept_failed(err).await,
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| {
        format!("--listen {listen}: cannot listen there; use a free HOST:PORT such as 127.0.0.1:9001")
    })?;
    tracing::info!("ferry echo listening on ws://{}", listener.local_addr()?);
    let spawner = Spawner::new(pools);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                spawner.spawn(echo(stream, config.clone()));
            }
            Err(err) => accept_failed(err).await,
        }
    }
}

async fn accept_failed(err: std::io::Error) {
    // Typically out of file descriptors: back off rather than spin.
    tracing::warn!(error = %err, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn echo<S>(stream: S, config: std::sync::Arc<Config>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed: the handshake's state is freed once it is done, instead of sizing this task (alive
    // as long as the connection) for it. Measured with `ferry bench idle` (docs/memory.md).
    // One task per connection: it reads, answers and writes (`ferry::WebSocket`).
    let mut ws = match Box::pin(ferry::WebSocket::accept(stream, &config)).await {
        Ok(ws) => ws,
        Err(err) => {
            tracing::debug!(error = %err, "handshake failed");
            return;
        }
    };
    drop(config);
    while let Some(Incoming::Message(message)) = ws.recv().await {
        if ws.send(message).await.is_err() {
            break;
        }
    }
}
