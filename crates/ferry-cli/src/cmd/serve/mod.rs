//! `ferry serve`: HTTP and WebSocket on one port: a web page, echo, pub/sub topics, bridges to
//! TCP services, metrics.

mod access;
mod admission;
mod api;
pub(crate) mod auth;
mod bridge;
mod broker;
pub mod config;
pub(crate) mod control;
mod echo;
mod forwarded;
mod http;
mod http2;
mod idle;
mod lesson;
mod metrics;
pub(crate) mod names;
mod origin;
mod per_ip;
mod rate;
mod registry;
mod reply;
mod timers;
mod tls;
mod topic;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use ferry::Config;
use ferry::pubsub::{BrokerConfig, LocalBroker, SlowSubscriber};

use self::config::{BridgeConfig, Dur, ServeConfig, Size, TlsConfig};
use super::limits::DeflateArgs;
use crate::size::parse_duration;

/// Serve HTTP and WebSocket on one port: a web page, echo, pub/sub topics, bridges to TCP
/// services, and metrics.
///
/// Routes (PREFIX is /ws unless --ws-prefix says otherwise):
///   /                      the web page
///   PREFIX/echo            WebSocket echo
///   PREFIX/topics/NAME     pub/sub: every message goes to every subscriber of NAME
///   PREFIX/bridge/NAME     a bridge to the TCP or Unix service configured as NAME
///   PREFIX/control         JSON control protocol: many topics on one connection, with acks
///   /metrics               Prometheus metrics
///   /demo/tcp-chunks?n=N   the page's lesson: N TCP writes on loopback, and the reads seen
///   /healthz               "ok" while the process runs (liveness)
///   /readyz                "ready", or 503 while the broker is unreachable (readiness)
///   /api/publish/TOPIC     POST: publish the body (with --api-key-file)
///   /api/history/TOPIC     GET ?since=N&epoch=E&limit=L: a topic's history (with --api-key-file)
///
/// Settings come from the built-in defaults, then --config FILE, then the flags given.
///
/// Examples:
///   ferry serve
///   ferry serve --listen 0.0.0.0:8080 --allow-origin https://app.example.com
///   ferry serve --bridge vnc=tcp://127.0.0.1:5900 --bridge db=unix:/run/db.sock
///   ferry serve --tls-cert cert.pem --tls-key key.pem --listen 0.0.0.0:443
///   ferry serve --broker redis://127.0.0.1:6379 --api-key-file keys.txt
///   ferry serve --config ferry.toml --print-config
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    /// Read settings from this TOML file (see docs/config.md); flags given override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective settings as TOML (tokens redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Where to listen: HOST:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Path prefix of the WebSocket routes.
    #[arg(long, value_name = "PATH", default_value = "/ws")]
    pub ws_prefix: String,
    /// Worker threads; 0: one per CPU. 1 runs every connection on one thread with the
    /// single-threaded scheduler, the least CPU per message (for one core, or one process per
    /// core behind a balancer).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Also accept WebSocket connections from this Origin (repeatable; * for any). By default
    /// only pages from the server's own origin, and non-browser clients (no Origin), may connect.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
    /// Believe Forwarded / X-Forwarded-For from connections out of this address range (a
    /// reverse proxy; repeatable, e.g. 10.0.0.0/8): their clients are counted, rate-limited and
    /// logged by the address the proxy names. Others' forwarding headers are ignored.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<String>,
    /// A bridge: PREFIX/bridge/NAME connects to TARGET, tcp://HOST:PORT or unix:/PATH
    /// (repeatable). Tokens are set in the --config file.
    #[arg(long = "bridge", value_name = "NAME=TARGET", value_parser = parse_bridge)]
    pub bridges: Vec<(String, String)>,
    /// PEM certificate chain: serve https and wss (with --tls-key). SIGHUP reloads it.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Most WebSocket connections open at once; more get HTTP 503.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Most connections open at once from one IP address (0: no limit; use 0 behind a proxy).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// IPv6 clients are counted per network of this many leading bits (for
    /// --max-connections-per-ip and --handshake-rate): one host usually has a whole /64.
    #[arg(long, value_name = "BITS", default_value_t = 64, value_parser = clap::value_parser!(u8).range(1..=128))]
    pub ipv6_prefix: u8,
    /// Ping every connection this often (0 turns pings off); close it (1011) if the pong is
    /// later than --ping-timeout. This is what finds dead peers.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub ping_interval: Duration,
    /// Time allowed for a pong.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub ping_timeout: Duration,
    /// Close (1001) a connection whose client has sent no message for this long (bridges: no
    /// byte either way); 0: never. Pongs do not count: this sheds live but silent clients.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    pub idle_timeout: Duration,
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
    /// Where topics live: memory (this process), or redis://[user:password@]host:port[/db]
    /// (rediss:// for TLS) shared by every node on it. Repeat with several Redis URLs to shard
    /// topics across them.
    #[arg(long = "broker", value_name = "URL")]
    pub brokers: Vec<String>,
    /// Messages of history kept per topic, for recovery (subscribe with since).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub history_size: usize,
    /// How long a topic's history outlives its last publish.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub history_ttl: Duration,
    /// Most messages one subscribe with since replays; more missed is "recovered": false.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub recovery_max: usize,
    /// Redis: time allowed to connect and for one command; past it the call fails with
    /// broker_unavailable and the connection is rebuilt.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2s")]
    pub broker_timeout: Duration,
    /// Redis: how often each node probes its pub/sub connection; one silent for three probes
    /// is rebuilt (and what it missed read back from history).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    pub broker_probe: Duration,
    /// Memory broker: bytes of history all topics may hold together (the longest-unpublished
    /// topic's history goes first).
    #[arg(long, value_name = "BYTES", value_parser = crate::size::parse_size, default_value = "64MiB")]
    pub history_memory: usize,
    /// Turn on the HTTP API (/api/publish, /api/history) for the keys in FILE, one a line;
    /// requests carry Authorization: Bearer KEY.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Require signed tokens (JWT, HS256/384/512) made with the secret in FILE (its bytes, a
    /// trailing newline trimmed; 32 at least). Repeat during a key rollover.
    #[arg(long = "jwt-hmac-secret-file", value_name = "FILE")]
    pub jwt_hmac_secret_files: Vec<PathBuf>,
    /// Require signed tokens (JWT, RS256/384/512, ES256/384, EdDSA) verified with the PEM public
    /// key in FILE. Repeatable.
    #[arg(long = "jwt-public-key", value_name = "FILE")]
    pub jwt_public_keys: Vec<PathBuf>,
    /// A token's aud must name this.
    #[arg(long, value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// A token's iss must be this.
    #[arg(long, value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Clock skew allowed on a token's exp, nbf and iat.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    pub jwt_leeway: Duration,
    /// Publishes per connection, e.g. 20/s (a second's worth may come at once); over it a
    /// control request gets rate_limited, a topic connection is closed (1008). 0: no limit.
    #[arg(long, value_name = "N/s", default_value = "0")]
    pub publish_rate: String,
    /// WebSocket handshakes per client address, e.g. 10/s; over it: HTTP 429 with Retry-After.
    /// 0: no limit.
    #[arg(long, value_name = "N/s", default_value = "0")]
    pub handshake_rate: String,
    /// Speak HTTP/2 beside HTTP/1.1 (ALPN h2 over TLS, prior knowledge in cleartext), with
    /// WebSockets as HTTP/2 streams (RFC 8441). off: HTTP/1.1 only.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off, default_value = "on", action = clap::ArgAction::Set)]
    pub http2: bool,
    /// Most streams open at once on one HTTP/2 connection (WebSockets and requests).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub http2_max_streams: u32,
    /// Bytes a client may send on one HTTP/2 stream before it is read: what one WebSocket
    /// that stops reading can hold of its connection's window.
    #[arg(long, value_name = "BYTES", value_parser = crate::size::parse_size, default_value = "256KiB")]
    pub http2_stream_window: usize,
    /// Bytes a client may send on one HTTP/2 connection, all streams together, before they are
    /// read. Many stream windows, so streams that stop reading do not stall the others.
    #[arg(long, value_name = "BYTES", value_parser = crate::size::parse_size, default_value = "16MiB")]
    pub http2_connection_window: usize,
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
    /// Most frames in one message, empty ones included. Over it: close 1009.
    #[arg(long, value_name = "N", default_value_t = ferry::Limits::default().max_fragments)]
    pub max_fragments: usize,
    /// Outgoing bytes a connection may queue; a subscriber over it meets --slow-subscriber.
    #[arg(long, value_name = "BYTES", value_parser = crate::size::parse_size, default_value = "1MiB")]
    pub send_queue: usize,
    /// Time allowed for the TLS handshake, the HTTP request head and the WebSocket handshake.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub handshake_timeout: Duration,
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{text:?}: use on or off")),
    }
}

fn parse_bridge(text: &str) -> Result<(String, String), String> {
    let (name, target) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: use NAME=TARGET, e.g. vnc=tcp://127.0.0.1:5900"))?;
    if !names::valid_name(name) {
        return Err(format!(
            "{name:?} is not a bridge name; use 1 to 64 of A-Z a-z 0-9 . _ -"
        ));
    }
    config::Target::parse(target)?;
    Ok((name.to_owned(), target.to_owned()))
}

impl ServeArgs {
    /// The configuration: defaults, then the file, then the flags given on the command line
    /// (a flag left at its default does not override the file).
    pub fn effective(&self, matches: &ArgMatches) -> Result<ServeConfig> {
        let mut c = match &self.config {
            Some(path) => ServeConfig::from_file(path).map_err(|e| anyhow!(e))?,
            None => ServeConfig::default(),
        };
        let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        if given("listen") {
            c.listen.clone_from(&self.listen);
        }
        if given("threads") {
            c.threads = self.threads;
        }
        if given("ws_prefix") {
            c.ws_prefix.clone_from(&self.ws_prefix);
        }
        c.allow_origins.extend(self.allow_origins.iter().cloned());
        c.trusted_proxies
            .extend(self.trusted_proxies.iter().cloned());
        for (name, target) in &self.bridges {
            match c.bridges.get_mut(name) {
                Some(bridge) => bridge.to.clone_from(target),
                None => {
                    c.bridges.insert(
                        name.clone(),
                        BridgeConfig {
                            to: target.clone(),
                            token: None,
                            token_file: None,
                            connect_timeout: Dur(Duration::from_secs(5)),
                        },
                    );
                }
            }
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            c.tls = Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if given("grace") {
            c.grace = Dur(self.grace);
        }
        let h2 = &mut c.http2;
        if given("http2") {
            h2.enabled = self.http2;
        }
        if given("http2_max_streams") {
            h2.max_streams = self.http2_max_streams;
        }
        if given("http2_stream_window") {
            h2.stream_window = Size(self.http2_stream_window);
        }
        if given("http2_connection_window") {
            h2.connection_window = Size(self.http2_connection_window);
        }
        let l = &mut c.limits;
        if given("max_connections") {
            l.max_connections = self.max_connections;
        }
        if given("max_connections_per_ip") {
            l.max_connections_per_ip = self.max_connections_per_ip;
        }
        if given("ipv6_prefix") {
            l.ipv6_prefix = self.ipv6_prefix;
        }
        if given("ping_interval") {
            l.ping_interval = Dur(self.ping_interval);
        }
        if given("ping_timeout") {
            l.ping_timeout = Dur(self.ping_timeout);
        }
        if given("idle_timeout") {
            l.idle_timeout = Dur(self.idle_timeout);
        }
        if given("max_message_size") {
            l.max_message_size = Size(self.limits.max_message_size);
        }
        if given("max_fragments") {
            l.max_fragments = self.limits.max_fragments;
        }
        if given("send_queue") {
            l.send_queue = Size(self.limits.send_queue);
        }
        if given("handshake_timeout") {
            l.handshake_timeout = Dur(self.limits.handshake_timeout);
        }
        let d = &mut c.deflate;
        if given("no_deflate") {
            d.enabled = false;
        }
        if given("deflate_level") {
            d.level = self.deflate.deflate_level;
        }
        if given("deflate_window_bits") {
            d.window_bits = self.deflate.deflate_window_bits;
        }
        if given("deflate_peer_window_bits") {
            d.peer_window_bits = self.deflate.deflate_peer_window_bits;
        }
        if given("deflate_mem_level") {
            d.mem_level = self.deflate.deflate_mem_level;
        }
        if given("deflate_threshold") {
            d.threshold = Size(self.deflate.deflate_threshold);
        }
        if given("deflate_no_context_takeover") {
            d.no_context_takeover = true;
        }
        if given("deflate_context_takeover") {
            d.no_context_takeover = false;
        }
        let t = &mut c.topics;
        if given("slow_subscriber") {
            t.slow_subscriber = self.slow_subscriber;
        }
        if given("retained_topics") {
            t.retained = self.retained_topics;
        }
        if given("control_max_topics") {
            t.control_max_topics = self.control_max_topics;
        }
        let b = &mut c.broker;
        if !self.brokers.is_empty() {
            b.urls.clone_from(&self.brokers);
        }
        if given("history_size") {
            b.history_size = self.history_size;
        }
        if given("history_ttl") {
            b.history_ttl = Dur(self.history_ttl);
        }
        if given("recovery_max") {
            b.recovery_max = self.recovery_max;
        }
        if given("broker_timeout") {
            b.timeout = Dur(self.broker_timeout);
        }
        if given("broker_probe") {
            b.probe = Dur(self.broker_probe);
        }
        if given("history_memory") {
            b.history_memory = Size(self.history_memory);
        }
        if let Some(path) = &self.api_key_file {
            c.api.key_file = Some(path.clone());
        }
        let a = &mut c.auth;
        a.hmac_secret_files
            .extend(self.jwt_hmac_secret_files.iter().cloned());
        a.public_keys.extend(self.jwt_public_keys.iter().cloned());
        if let Some(audience) = &self.jwt_audience {
            a.audience = Some(audience.clone());
        }
        if let Some(issuer) = &self.jwt_issuer {
            a.issuer = Some(issuer.clone());
        }
        if given("jwt_leeway") {
            a.leeway = Dur(self.jwt_leeway);
        }
        if given("publish_rate") {
            c.limits.publish_rate.clone_from(&self.publish_rate);
        }
        if given("handshake_rate") {
            c.limits.handshake_rate.clone_from(&self.handshake_rate);
        }
        c.validate().map_err(|e| anyhow!(e))?;
        Ok(c)
    }
}

/// `--slow-subscriber`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SlowSubscriberArg {
    /// Close the subscriber with 1013 (try again later).
    Close,
    /// Drop the oldest topic messages not yet being written.
    DropOldest,
}

/// Raises the soft open-file limit to the hard one (a WebSocket is a file descriptor; the
/// usual soft limit of 1,024 would cap the server far below --max-connections), and warns
/// when --max-connections still cannot fit.
#[cfg(unix)]
fn raise_open_file_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
        && soft < hard
    {
        let raised = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(soft, hard, error = %err, "cannot raise the open-file limit");
        }
    }
    // A connection is one descriptor; the listener, logs, Redis and bridges take some more.
    const SPARE: u64 = 64;
    if let Some(soft) = getrlimit(Resource::Nofile).current {
        let needed = max_connections as u64 + SPARE;
        if soft < needed {
            tracing::warn!(
                open_files = soft,
                max_connections,
                "--max-connections {max_connections} needs about {needed} file descriptors but the open-file limit is {soft}: accepts will fail before the limit; raise it (ulimit -n, LimitNOFILE=) or lower --max-connections"
            );
        }
    }
}

/// Elsewhere the platform's own limits apply, and nothing here can read them.
#[cfg(not(unix))]
fn raise_open_file_limit(_max_connections: usize) {}

/// Checks a topic pattern as tokens carry them (for `ferry token`).
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    auth::Pattern::parse(pattern).map(|_| ())
}

impl State {
    /// Whether a topic of this name may be used: well-formed, and on `topics.allowed` when
    /// that list is set.
    pub fn topic_allowed(&self, name: &str) -> bool {
        names::valid_name(name)
            && (self.topics_allowed.is_empty() || self.topics_allowed.iter().any(|t| t == name))
    }
}

/// Everything a connection handler needs, shared.
pub struct State {
    pub config: Config,
    pub prefix: String,
    pub origins: origin::Policy,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub topics_allowed: Vec<String>,
    pub bridges: HashMap<String, bridge::Bridge>,
    /// `ferry bridge`: every WebSocket request, whatever its path, goes to this bridge.
    pub catch_all_bridge: Option<String>,
    pub control_max_topics: usize,
    /// Reverse proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<forwarded::Cidr>,
    /// Connections per client, counted at accept (or, behind a trusted proxy, per request).
    pub per_ip: Arc<per_ip::PerIp>,
    pub broker: broker::Broker,
    pub history: broker::HistorySettings,
    /// Keys of the HTTP API; `None`: the API is off.
    pub api_keys: Option<Vec<String>>,
    /// Checks tokens; `None`: tokens are off.
    pub verifier: Option<auth::Verifier>,
    pub access: access::Access,
    pub publish_rate: rate::Rate,
    pub handshake_rate: rate::PerAddress,
    pub metrics: metrics::Metrics,
    pub connections: registry::Registry,
    /// The HTTP/2 server's settings; `None` with `--http2 off` (HTTP/1.1 only).
    pub http2: Option<hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor>>,
}

pub fn run(args: ServeArgs, matches: &ArgMatches) -> Result<()> {
    let config = args.effective(matches)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    start(config, None)
}

/// Runs the server with a validated configuration until SIGINT or SIGTERM.
pub fn start(c: ServeConfig, catch_all_bridge: Option<String>) -> Result<()> {
    let origins = origin::Policy::allow(&c.allow_origins)
        .map_err(|e| anyhow!("allow_origins (--allow-origin) {e}"))?;
    let l = &c.limits;
    let limits = ferry::Limits {
        max_message_size: l.max_message_size.0,
        // A frame can be as big as a message; the message limit is the one users think in.
        max_frame_size: l.max_message_size.0,
        max_fragments: l.max_fragments,
        send_queue_bytes: l.send_queue.0,
        handshake_timeout: l.handshake_timeout.0,
        ..ferry::Limits::default()
    };
    let mut config = Config {
        limits,
        deflate: c.deflate.config(),
        ..Config::default()
    };
    if !l.ping_interval.0.is_zero() {
        config = config.with_keepalive(l.ping_interval.0, l.ping_timeout.0);
    }
    let prefix = if c.ws_prefix == "/" {
        String::new()
    } else {
        c.ws_prefix.clone()
    };
    let mut bridges = HashMap::new();
    for (name, bridge) in &c.bridges {
        let bridge = bridge::Bridge::new(bridge).map_err(|e| anyhow!("bridges.{name}.to: {e}"))?;
        bridges.insert(name.clone(), bridge);
    }
    let tls = match &c.tls {
        Some(tls) => Some(Arc::new(
            tls::Tls::load(tls, c.http2.enabled).map_err(|e| anyhow!(e))?,
        )),
        None => None,
    };
    raise_open_file_limit(l.max_connections);
    let per_ip = per_ip::PerIp::new(l.max_connections_per_ip, l.ipv6_prefix);
    let trusted_proxies = c
        .trusted_proxies
        .iter()
        .map(|t| forwarded::Cidr::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("trusted_proxies (--trusted-proxy) {e}"))?;
    let (max_connections, idle_timeout) = (l.max_connections, l.idle_timeout.0);
    let runtime = match c.threads {
        // The single-threaded scheduler skips the work-stealing one's bookkeeping per task
        // poll: about 750 of a small echo's 4,800 instructions (bench/instructions.sh).
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    let hub = Arc::new(LocalBroker::with_config(BrokerConfig {
        slow_subscriber: match c.topics.slow_subscriber {
            SlowSubscriberArg::Close => SlowSubscriber::Close,
            SlowSubscriberArg::DropOldest => SlowSubscriber::DropOldest,
        },
        retained_topics: c.topics.retained,
    }));
    let b = &c.broker;
    let mut history_rules = Vec::new();
    for rule in &c.topics.rules {
        history_rules.push(broker::HistoryRule {
            pattern: auth::Pattern::parse(&rule.pattern).map_err(|e| anyhow!(e))?,
            size: rule.history_size,
            ttl: rule.history_ttl.map(|t| t.0),
        });
    }
    let history = broker::HistorySettings {
        size: b.history_size,
        ttl: b.history_ttl.0,
        recovery_max: b.recovery_max,
        memory: b.history_memory.0,
        rules: history_rules.into(),
    };
    let verifier = auth::Verifier::load(&c.auth).map_err(|e| anyhow!(e))?;
    let access =
        access::Access::new(&c.topics.rules, verifier.is_some()).map_err(|e| anyhow!(e))?;
    let publish_rate = rate::Rate::parse(&l.publish_rate).map_err(|e| anyhow!(e))?;
    let handshake_rate =
        rate::PerAddress::new(rate::Rate::parse(&l.handshake_rate).map_err(|e| anyhow!(e))?);
    let timeouts = broker::Timeouts {
        command: b.timeout.0,
        probe: b.probe.0,
    };
    let api_keys = match &c.api.key_file {
        Some(path) => Some(config::read_api_keys(path).map_err(|e| anyhow!(e))?),
        None => None,
    };
    runtime.block_on(async move {
        let broker = match broker::Broker::parse_urls(&c.broker.urls).map_err(|e| anyhow!(e))? {
            broker::BrokerKind::Memory => {
                broker::Broker::Memory(broker::MemoryBroker::new(hub, history.clone()))
            }
            broker::BrokerKind::Redis(shards) => {
                for shard in &shards {
                    tracing::info!(redis = %shard, "broker: Redis shard");
                }
                broker::Broker::Redis(
                    broker::RedisBroker::start(&shards, hub, history.clone(), timeouts)
                        .map_err(|e| anyhow!(e))?,
                )
            }
        };
        let state = Arc::new(State {
            config,
            prefix,
            origins,
            max_connections,
            idle_timeout,
            topics_allowed: c.topics.allowed.clone(),
            bridges,
            catch_all_bridge,
            control_max_topics: c.topics.control_max_topics,
            trusted_proxies,
            per_ip: per_ip.clone(),
            broker,
            history,
            api_keys,
            verifier,
            access,
            publish_rate,
            handshake_rate,
            metrics: metrics::Metrics::default(),
            connections: registry::Registry::default(),
            http2: c.http2.enabled.then(|| http2::builder(&c)),
        });
        let listener = tokio::net::TcpListener::bind(&c.listen)
            .await
            .with_context(|| {
                format!(
                    "--listen {}: cannot listen there; use a free HOST:PORT such as 127.0.0.1:8080",
                    c.listen
                )
            })?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        // Scripts read the address at the end of this line, the first one logged.
        tracing::info!(
            "ferry serve listening on {scheme}://{}",
            listener.local_addr()?
        );
        if state.http2.is_some() {
            tracing::info!(
                "speaking HTTP/1.1 and HTTP/2 (WebSockets over both; --http2 off for 1.1 only)"
            );
        }
        for (name, bridge) in &state.bridges {
            tracing::info!(bridge = %name, target = %bridge.target, "bridge ready");
        }
        http::serve(listener, state, tls, per_ip, c.grace.0).await
    })
}
