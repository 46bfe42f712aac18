//! `ferry serve`: HTTP and WebSocket on one port: a web page, echo, pub/sub topics, metrics.

mod control;
mod http;
mod lesson;
mod metrics;
mod origin;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use ferry::Config;
use ferry::pubsub::{BrokerConfig, LocalBroker, SlowSubscriber};

use super::limits::DeflateArgs;
use crate::size::parse_duration;

/// Serve HTTP and WebSocket on one port: a web page, echo, pub/sub topics and metrics.
///
/// Routes (PREFIX is /ws unless --ws-prefix says otherwise):
///   /                      the web page
///   PREFIX/echo            WebSocket echo
///   PREFIX/topics/NAME     pub/sub: every message goes to every subscriber of NAME
///   PREFIX/control         JSON control protocol: many topics on one connection, with acks
///   /metrics               Prometheus metrics
///   /demo/tcp-chunks?n=N   the page's lesson: N TCP writes on loopback, and the reads seen
///   /healthz               "ok"
///
/// Examples:
///   ferry serve
///   ferry serve --listen 0.0.0.0:8080 --allow-origin https://app.example.com
///   ferry serve --max-connections 50000 --ping-interval 20s
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    /// Where to listen: HOST:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Path prefix of the WebSocket routes.
    #[arg(long, value_name = "PATH", default_value = "/ws")]
    pub ws_prefix: String,
    /// Also accept WebSocket connections from this Origin (repeatable; * for any). By default
    /// only pages from the server's own origin, and non-browser clients (no Origin), may connect.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
    /// Most WebSocket connections open at once; more get HTTP 503.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Ping every connection this often; close it if the pong is later than --ping-timeout.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub ping_interval: Duration,
    /// Time allowed for a pong.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub ping_timeout: Duration,
    /// On SIGINT or SIGTERM, how long to wait for connections to close after sending them 1001.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub grace: Duration,
    /// What to do with a topic subscriber whose send queue (--send-queue) is full: close it
    /// with 1013, or drop its oldest queued topic messages to make room.
    #[arg(long, value_name = "POLICY", value_enum, default_value = "close")]
    pub slow_subscriber: SlowSubscriberArg,
    /// Topics without subscribers whose counters are kept for /metrics; beyond this many the
    /// longest-empty is forgotten (its counts stay in the ferry_pubsub_* totals).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub retained_topics: usize,
    /// Most topics one PREFIX/control connection may subscribe to at once.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub control_max_topics: usize,
    #[command(flatten)]
    pub limits: ServeLimits,
    /// Keep each connection's compressor between messages (context takeover): smaller chatty
    /// messages, but about 150 KiB per connection, and topic messages are then compressed once
    /// per subscriber instead of once per message. Off by default in serve.
    #[arg(long, conflicts_with = "deflate_no_context_takeover")]
    pub deflate_context_takeover: bool,
    #[command(flatten)]
    pub deflate: DeflateArgs,
}

/// The limits, with `ferry serve`'s own defaults (those of the library: safe for the internet).
#[derive(Args, Debug)]
pub struct ServeLimits {
    /// Largest message accepted, after reassembly and decompression. Over it: close 1009.
    #[arg(long, value_name = "BYTES", value_parser = crate::size::parse_size, default_value = "1MiB")]
    pub max_message_size: usize,
    /// Outgoing bytes a connection may queue; a subscriber over it meets --slow-subscriber.
    #[arg(long, value_name = "BYTES", value_parser = crate::size::parse_size, default_value = "1MiB")]
    pub send_queue: usize,
    /// Time allowed for the HTTP request head and the WebSocket handshake.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub handshake_timeout: Duration,
}

/// `--slow-subscriber`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SlowSubscriberArg {
    /// Close the subscriber with 1013 (try again later).
    Close,
    /// Drop the oldest topic messages not yet being written.
    DropOldest,
}

/// Everything a connection handler needs, shared.
pub struct State {
    pub config: Config,
    pub prefix: String,
    pub origins: origin::Policy,
    pub max_connections: usize,
    pub control_max_topics: usize,
    pub broker: LocalBroker,
    pub metrics: metrics::Metrics,
    pub connections: http::Registry,
}

pub fn run(args: ServeArgs) -> Result<()> {
    if !args.ws_prefix.starts_with('/') || args.ws_prefix.ends_with('/') && args.ws_prefix.len() > 1
    {
        bail!(
            "--ws-prefix {}: must start with / and not end with one, e.g. /ws",
            args.ws_prefix
        );
    }
    if args.control_max_topics == 0 {
        bail!("--control-max-topics 0: a control connection must be able to subscribe; try 100");
    }
    if args.max_connections == 0 {
        bail!("--max-connections 0: at least one connection must be allowed; try 10000");
    }
    let origins = origin::Policy::new(&args.allow_origins)
        .map_err(|e| anyhow::anyhow!("--allow-origin {e}"))?;
    let defaults = ferry::Limits::default();
    let limits = ferry::Limits {
        max_message_size: args.limits.max_message_size,
        // A frame can be as big as a message; the message limit is the one users think in.
        max_frame_size: args.limits.max_message_size,
        send_queue_bytes: args.limits.send_queue,
        handshake_timeout: args.limits.handshake_timeout,
        ..defaults
    };
    let config = Config {
        limits,
        // No context takeover by default: the compressor is then shared per thread instead of
        // held by every connection, and a topic message is compressed once for all subscribers.
        deflate: args.deflate.config().map(|d| ferry::DeflateConfig {
            own_no_context_takeover: !args.deflate_context_takeover,
            ..d
        }),
        ..Config::default()
    }
    .with_keepalive(args.ping_interval, args.ping_timeout);
    let prefix = if args.ws_prefix == "/" {
        String::new()
    } else {
        args.ws_prefix.clone()
    };
    let state = Arc::new(State {
        config,
        prefix,
        origins,
        max_connections: args.max_connections,
        control_max_topics: args.control_max_topics,
        broker: LocalBroker::with_config(BrokerConfig {
            slow_subscriber: match args.slow_subscriber {
                SlowSubscriberArg::Close => SlowSubscriber::Close,
                SlowSubscriberArg::DropOldest => SlowSubscriber::DropOldest,
            },
            retained_topics: args.retained_topics,
        }),
        metrics: metrics::Metrics::default(),
        connections: http::Registry::default(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| {
                format!(
                    "--listen {}: cannot listen there; use a free HOST:PORT such as 127.0.0.1:8080",
                    args.listen
                )
            })?;
        tracing::info!("ferry serve listening on http://{}", listener.local_addr()?);
        http::serve(listener, state, args.grace).await
    })
}
