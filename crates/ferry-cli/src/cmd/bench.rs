//! `ferry bench`: a load generator for echo and pub/sub servers, fit to measure the fastest ones.
//!
//! The client is raw on purpose. It does its own handshake (ferry-proto's `ClientHandshake`), then
//! writes frames that were built and masked once per run, reads into one reused buffer per
//! connection, decodes the server's frames with `FrameHeader::parse` and compares every echoed
//! byte with what it sent, without copying or assembling messages. Many connections share one
//! task (a `FuturesUnordered` per thread), each driven by a hand-written poll loop so a message
//! costs one `write`, one `read` and a share of one `epoll_wait`.
//!
//! Timing is per batch: one clock read per `write` and one per `read` that completes messages.
//! The measured window is the one between two snapshots taken by the main thread, which also
//! reads the server's CPU time (`utime + stime` in `/proc/PID/stat`) at the same two instants.
//!
//! With `--deflate` the payload is compressed once at start-up and what the server compresses is
//! inflated as it arrives ([`deflate`]). Fan-out (one publisher, many subscribers) is in
//! [`fanout`].

mod deflate;
mod fanout;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::poll_fn;
use std::io::{self, IsTerminal, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use ferry::Limits;
use ferry::proto::extension::deflate::{DeflateConfig, RSV1};
use ferry::proto::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use ferry::proto::handshake::{ClientHandshake, ClientRequest};
use ferry::proto::mask::apply_mask;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use crate::size::{parse_duration, parse_size};

/// Load-test an echo or pub/sub server: messages/s, latency, and the server's CPU time per message.
///
/// Modes:
///   echo        N connections, each keeping K messages in flight (the default)
///   bulk        large binary messages, pipelined: payload throughput
///   handshakes  connect, upgrade, one echo, close, over and over: handshakes/s
///   idle        N connections that each echo one message, then stay open: server RSS each
///   fanout      one publisher and N subscribers on one pub/sub topic: deliveries/s
///
/// With --server-pid the server's CPU time (utime+stime from /proc/PID/stat) is read at the
/// start and end of the measured window; CPU µs per message is the figure to compare servers by
/// when this generator, not the server, is what limits messages/s.
///
/// --protocol tcp speaks a length-prefixed echo instead (4-byte big-endian length, payload),
/// to measure a plain TCP server as the floor.
///
/// fanout: the publisher is one more connection to the same URL; every subscriber checks every
/// message byte for byte and in order (each starts with its sequence number). At most K
/// messages (--pipeline) are in flight, a message being in flight until the last subscriber,
/// and the publisher itself (ferry serve sends it its own messages), has it; keep K × --size
/// under the server's --send-queue so its slow-subscriber policy never fires. Latency is from
/// the publisher's write to each delivery; server CPU is per delivery.
///
/// fanout over several nodes: give --url once per `ferry serve` node sharing topics through
/// --broker redis://... (same scheme and path). Subscriber i connects to URL i mod n and the
/// publisher to the first, so what the other nodes' subscribers get went through the broker;
/// the report names every URL and its subscribers. --server-pid reads one process: its CPU
/// time is divided by the deliveries of all nodes.
///
/// --deflate offers permessage-deflate, sends a JSON-like payload compressed once at start-up,
/// and inflates and checks what comes back; the run fails if the server declines.
///
/// Examples:
///   ferry bench --connections 100 --size 1KiB --server-pid "$(pgrep -f 'ferry echo')"
///   ferry bench bulk --size 16MiB --duration 10s
///   ferry bench handshakes --connections 16
///   ferry bench idle --connections 50000 --source-ips 127.0.0.2-127.0.0.9 --server-pid PID
///   ferry bench --protocol tcp --url tcp://127.0.0.1:9004
///   ferry bench fanout --url ws://127.0.0.1:8080/ws/topics/bench --connections 1000 --size 1KiB
///   ferry bench fanout --url ws://10.0.0.1:8080/ws/topics/b --url ws://10.0.0.2:8080/ws/topics/b
///   ferry bench --deflate --size 16KiB --server-pid "$(pgrep -f 'ferry echo')"
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value_t = Mode::Echo)]
    pub mode: Mode,
    /// The server: ws://HOST:PORT/PATH, or tcp://HOST:PORT with --protocol tcp. fanout: may
    /// repeat, one per node (same scheme and path): subscriber i goes to URL i mod n, the
    /// publisher to the first.
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:9001/")]
    pub url: Vec<String>,
    /// ws: WebSocket. tcp: length-prefixed plain TCP echo (the floor).
    #[arg(long, value_enum, default_value_t = Protocol::Ws)]
    pub protocol: Protocol,
    /// Connections [echo 16, bulk 1, handshakes 16 (concurrent loops), idle 1000, fanout 100
    /// subscribers (plus the publisher)].
    #[arg(short, long, value_name = "N")]
    pub connections: Option<usize>,
    /// Payload bytes per message [echo, handshakes, idle: 20; bulk: 1MiB].
    #[arg(short, long, value_name = "BYTES", value_parser = parse_size)]
    pub size: Option<usize>,
    /// Messages in flight per connection [echo 1, bulk 4]; fanout: messages published and not
    /// yet at every subscriber [256KiB / (size + 14), at most 64].
    #[arg(short = 'k', long, value_name = "K")]
    pub pipeline: Option<usize>,
    /// Message type (WebSocket only).
    #[arg(long, value_enum, default_value_t = Kind::Binary)]
    pub kind: Kind,
    /// How long to measure, after the warmup [5s].
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Measure this many messages (handshakes in handshakes mode, messages published in fanout
    /// mode) instead of a duration.
    #[arg(short = 'n', long, value_name = "N", conflicts_with = "duration")]
    pub messages: Option<u64>,
    /// Run this long before measuring [1s; 0 with --messages].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// idle: how long to hold the connections open before reading the server's RSS [2s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub hold: Option<Duration>,
    /// fanout: publish at most this many messages per second [as fast as the window allows].
    #[arg(long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,
    /// Offer permessage-deflate (`client_no_context_takeover; client_max_window_bits`), send
    /// the payload compressed (once, level 6, 4 KiB window) and inflate what comes back. Implies
    /// --payload json.
    #[arg(long)]
    pub deflate: bool,
    /// Payload content: pattern (a byte pattern) or json (deterministic JSON-like text, which
    /// compresses like real traffic) [pattern; json with --deflate].
    #[arg(long, value_enum, value_name = "CONTENT")]
    pub payload: Option<PayloadKind>,
    /// Load-generator threads, each a current_thread runtime with its share of connections.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// The server's process id: report its CPU time per message, and RSS per idle connection.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Spread connections over these source addresses (A-B range or comma list), for more than
    /// about 28k connections to one server address.
    #[arg(long, value_name = "IPS")]
    pub source_ips: Option<String>,
    /// Time allowed to connect and upgrade, for the last echoes to drain, and without any echo
    /// before the run is declared stalled.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// A free-text label copied into the output (e.g. the server's name).
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// What `ferry bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// N connections, each keeping K messages in flight.
    Echo,
    /// Large messages, pipelined: payload throughput.
    Bulk,
    /// Connect, upgrade, one echo, close, over and over.
    Handshakes,
    /// N connections that each echo one message, then stay open: the server's memory each.
    Idle,
    /// One publisher, N subscribers on one pub/sub topic.
    Fanout,
}

/// The wire protocol of the server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// WebSocket.
    Ws,
    /// Length-prefixed plain TCP echo: the floor.
    Tcp,
}

/// The WebSocket message type sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Binary messages.
    Binary,
    /// Text messages (the payload is ASCII).
    Text,
}

/// What the payload holds. It matters only to compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PayloadKind {
    /// A byte pattern (printable ASCII for text).
    Pattern,
    /// Deterministic JSON-like text: order records with varying numbers.
    Json,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Bulk => "bulk",
            Mode::Handshakes => "handshakes",
            Mode::Idle => "idle",
            Mode::Fanout => "fanout",
        }
    }
}

impl PayloadKind {
    fn name(self) -> &'static str {
        match self {
            PayloadKind::Pattern => "pattern",
            PayloadKind::Json => "json",
        }
    }
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Ws => "ws",
            Protocol::Tcp => "tcp",
        }
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Binary => "binary",
            Kind::Text => "text",
        }
    }
}

/// Connections opened at once per thread while connecting (the server's accept backlog is finite).
const CONNECT_CONCURRENCY: usize = 256;
/// Pre-built frames are repeated up to this many bytes, so K pipelined messages go in one write.
const BATCH_BYTES: usize = 256 * 1024;
/// How often the main thread looks at the counters (phase changes, stall check, progress).
const TICK: Duration = Duration::from_millis(100);
/// USER_HZ: the unit of utime and stime in /proc/PID/stat, 100 on every Linux architecture
/// that ferry builds for.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

// ---------------------------------------------------------------------------------------------
// Settings: the arguments, checked, with each mode's defaults filled in.

struct Settings {
    mode: Mode,
    protocol: Protocol,
    kind: Kind,
    /// The servers, in --url order: one, or in fanout one or more nodes sharing the topic.
    targets: Vec<Target>,
    /// The request path, the same on every target.
    path: String,
    connections: usize,
    size: usize,
    pipeline: usize,
    duration: Option<Duration>,
    messages: Option<u64>,
    warmup: Duration,
    hold: Duration,
    threads: usize,
    server_pid: Option<u32>,
    sources: Vec<IpAddr>,
    timeout: Duration,
    label: Option<String>,
    json: bool,
    quiet: bool,
    rate: Option<f64>,
    deflate: bool,
    payload: PayloadKind,
}

impl Settings {
    fn resolve(args: BenchArgs) -> Result<Settings> {
        let mode = args.mode;
        let m = mode.name();
        let connections = args.connections.unwrap_or(match mode {
            Mode::Echo | Mode::Handshakes => 16,
            Mode::Bulk => 1,
            Mode::Idle => 1000,
            Mode::Fanout => 100,
        });
        if connections == 0 {
            bail!("--connections 0: need at least 1");
        }
        let size = args.size.unwrap_or(match mode {
            Mode::Bulk => 1 << 20,
            _ => 20,
        });
        if args.protocol == Protocol::Tcp && u32::try_from(size).is_err() {
            bail!("--size {size}: the tcp protocol's length prefix is 32 bits; use at most 4GiB-1");
        }
        let pipeline = match (mode, args.pipeline) {
            (Mode::Handshakes | Mode::Idle, Some(_)) => {
                bail!("--pipeline does not apply to {m} mode (one message per connection); drop it")
            }
            (_, Some(0)) => bail!("--pipeline 0: need at least 1 message in flight per connection"),
            (_, Some(k)) => k,
            (Mode::Bulk, None) => 4,
            // A quarter of ferry serve's default --send-queue (1 MiB) per subscriber at most.
            (Mode::Fanout, None) => ((256 << 10) / (size + MAX_HEADER_LEN)).clamp(1, 64),
            (_, None) => 1,
        };
        if mode == Mode::Fanout {
            if args.protocol == Protocol::Tcp {
                bail!("fanout needs --protocol ws: the tcp floor has no topics");
            }
            if size < fanout::SEQ_LEN {
                bail!(
                    "--size {size}: fanout messages start with a {}-byte sequence number; use \
                     --size {} or more",
                    fanout::SEQ_LEN,
                    fanout::SEQ_LEN
                );
            }
        }
        match args.rate {
            Some(_) if mode != Mode::Fanout => {
                bail!("--rate applies to fanout mode only; echo modes are paced by --pipeline")
            }
            Some(r) if !(r.is_finite() && r > 0.0) => {
                bail!("--rate {r}: need a positive number of messages per second, e.g. 1000")
            }
            _ => {}
        }
        if args.deflate && args.protocol == Protocol::Tcp {
            bail!("--deflate is a WebSocket extension; drop it with --protocol tcp");
        }
        if args.deflate && args.payload == Some(PayloadKind::Pattern) {
            bail!(
                "--deflate with --payload pattern: a byte pattern compresses unrealistically; \
                 drop --payload (json is used)"
            );
        }
        let payload = args.payload.unwrap_or(if args.deflate {
            PayloadKind::Json
        } else {
            PayloadKind::Pattern
        });
        if args.threads == 0 {
            bail!("--threads 0: need at least 1; use --threads 1");
        }
        if args.threads > connections {
            bail!(
                "--threads {} with --connections {connections}: every thread needs a connection; \
                 use --threads {connections} or fewer",
                args.threads
            );
        }
        if mode == Mode::Idle {
            for (flag, given) in [
                ("--duration", args.duration.is_some()),
                ("--messages", args.messages.is_some()),
                ("--warmup", args.warmup.is_some()),
            ] {
                if given {
                    bail!("{flag} does not apply to idle mode; use --hold for how long to hold");
                }
            }
        } else if args.hold.is_some() {
            bail!("--hold applies to idle mode only; use --duration for {m} mode");
        }
        if args.duration == Some(Duration::ZERO) {
            bail!("--duration 0: need a positive duration such as 5s");
        }
        if args.messages == Some(0) {
            bail!("--messages 0: need at least 1");
        }
        let warmup = match (args.messages, args.warmup) {
            (Some(_), Some(w)) if !w.is_zero() => bail!(
                "--warmup with --messages: a message-count run measures every message; \
                 drop --warmup or use --duration"
            ),
            (Some(_), _) => Duration::ZERO,
            (None, w) => w.unwrap_or(Duration::from_secs(1)),
        };
        let duration = match args.messages {
            Some(_) => None,
            None => Some(args.duration.unwrap_or(Duration::from_secs(5))),
        };
        if args.timeout.is_zero() {
            bail!("--timeout 0: need a positive duration such as 10s");
        }
        if let Some(pid) = args.server_pid {
            read_proc_stat(pid).map_err(|e| {
                anyhow!(
                    "--server-pid {pid}: cannot read /proc/{pid}/stat ({e}); pass the server's \
                     process id, e.g. \"$(pgrep -f 'ferry echo')\""
                )
            })?;
        }
        let (targets, path) = parse_urls(&args.url, mode, args.protocol)?;
        if targets.len() > connections {
            bail!(
                "--connections {connections} with {} --url values: every URL needs a subscriber; \
                 use --connections {} or more",
                targets.len(),
                targets.len()
            );
        }
        let sources = match &args.source_ips {
            Some(text) => {
                let mut sources = Vec::new();
                for target in &targets {
                    sources = parse_source_ips(text, target.addr)?;
                }
                sources
            }
            None => Vec::new(),
        };
        Ok(Settings {
            mode,
            protocol: args.protocol,
            kind: args.kind,
            targets,
            path,
            connections,
            size,
            pipeline,
            duration,
            messages: args.messages,
            warmup,
            hold: args.hold.unwrap_or(Duration::from_secs(2)),
            threads: args.threads,
            server_pid: args.server_pid,
            sources,
            timeout: args.timeout,
            label: args.label,
            json: args.json,
            quiet: args.quiet,
            rate: args.rate,
            deflate: args.deflate,
            payload,
        })
    }
}

/// One server to connect to: a --url, resolved.
#[derive(Clone, Debug)]
struct Target {
    url: String,
    addr: SocketAddr,
    /// The Host header: the URL's authority.
    host: String,
}

/// The --url values, resolved, and their common path: one URL, or in fanout one or more (nodes
/// sharing the topic) with the same scheme and path.
fn parse_urls(urls: &[String], mode: Mode, protocol: Protocol) -> Result<(Vec<Target>, String)> {
    if urls.len() > 1 && mode != Mode::Fanout {
        bail!(
            "--url given {} times: only fanout mode spreads over several servers; give one --url \
             for {} mode",
            urls.len(),
            mode.name()
        );
    }
    let scheme = |url: &str| url.find("://").map_or("", |i| &url[..i]).to_owned();
    let mut targets: Vec<Target> = Vec::with_capacity(urls.len());
    let mut common_path = String::new();
    for url in urls {
        let (addr, host, path) = parse_url(url, protocol)?;
        match targets.first() {
            None => common_path = path,
            Some(first) if scheme(url) != scheme(&first.url) => bail!(
                "--url {url}: its scheme differs from --url {}; every --url must have the same \
                 scheme and path (one topic on several nodes)",
                first.url
            ),
            Some(first) if path != common_path => bail!(
                "--url {url}: path {path} differs from {common_path} in --url {}; every --url \
                 must have the same scheme and path (one topic on several nodes)",
                first.url
            ),
            Some(_) => {}
        }
        targets.push(Target {
            url: url.clone(),
            addr,
            host,
        });
    }
    if targets.is_empty() {
        bail!("--url: no server given; use e.g. --url ws://127.0.0.1:9001/");
    }
    Ok((targets, common_path))
}

/// Splits `ws://host:port/path` (or `tcp://host:port`, or `host:port`) and resolves the address.
fn parse_url(url: &str, protocol: Protocol) -> Result<(SocketAddr, String, String)> {
    let (rest, default_port) = if let Some(rest) = url.strip_prefix("ws://") {
        (rest, 80)
    } else if let Some(rest) = url.strip_prefix("tcp://") {
        if protocol == Protocol::Ws {
            bail!("--url {url}: a tcp:// URL needs --protocol tcp");
        }
        (rest, 0)
    } else if url.starts_with("wss://") {
        bail!("--url {url}: TLS is not supported by the load generator; measure over ws://");
    } else if url.contains("://") {
        bail!("--url {url}: use ws://HOST:PORT/PATH (or tcp://HOST:PORT with --protocol tcp)");
    } else {
        (url, 0)
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("--url {url}: no host; use e.g. ws://127.0.0.1:9001/");
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority.ends_with(']') && authority[i + 1..].parse::<u16>().is_ok(),
        None => false,
    };
    let target = if has_port {
        authority.to_owned()
    } else if default_port != 0 {
        format!("{authority}:{default_port}")
    } else {
        bail!("--url {url}: no port; use e.g. tcp://127.0.0.1:9004");
    };
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .with_context(|| format!("--url {url}: cannot resolve {target}"))?
        .collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| anyhow!("--url {url}: {target} resolves to no address"))?;
    Ok((addr, authority.to_owned(), path.to_owned()))
}

/// `127.0.0.2-127.0.0.9`, `127.0.0.2,127.0.0.3` or one address.
fn parse_source_ips(text: &str, target: SocketAddr) -> Result<Vec<IpAddr>> {
    let flag = format!("--source-ips {text}");
    let parse = |s: &str| -> Result<IpAddr> {
        s.trim().parse().map_err(|_| {
            anyhow!("{flag}: {s:?} is not an IP address; use e.g. 127.0.0.2-127.0.0.9")
        })
    };
    let mut ips = Vec::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => match (parse(a)?, parse(b)?) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    let (a, b) = (u32::from(a), u32::from(b));
                    if b < a || b - a >= 65536 {
                        bail!("{flag}: the range must go upwards and hold at most 65536 addresses");
                    }
                    ips.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
                }
                _ => bail!("{flag}: ranges are for IPv4; list IPv6 addresses with commas"),
            },
            None => ips.push(parse(part)?),
        }
    }
    if ips.is_empty() {
        bail!("{flag}: no addresses; use e.g. 127.0.0.2-127.0.0.9");
    }
    if ips.iter().any(|ip| ip.is_ipv4() != target.is_ipv4()) {
        bail!("{flag}: the source addresses must be of the same family as the server {target}");
    }
    Ok(ips)
}

// ---------------------------------------------------------------------------------------------
// The plan: what every connection sends and expects, built once.

struct Plan {
    mode: Mode,
    /// Connections (fanout: subscribers).
    connections: usize,
    protocol: Protocol,
    /// The servers: fanout spreads subscribers over them ([`Plan::target`]).
    targets: Vec<Target>,
    path: String,
    sources: Vec<IpAddr>,
    size: usize,
    pipeline: usize,
    timeout: Duration,
    /// The opcode the echo must carry.
    opcode: OpCode,
    /// The payload, unmasked: what every echo must equal.
    payload: Vec<u8>,
    /// One whole frame (WebSocket: masked; tcp: length prefix and payload).
    frame_len: usize,
    /// `batch_frames` copies of the frame back to back.
    batch: Vec<u8>,
    batch_frames: usize,
    /// A masked close frame with code 1000.
    close_frame: Vec<u8>,
    mask: [u8; 4],
    /// Read buffer size per connection.
    read_buf: usize,
    /// With --deflate: what is offered, and the size of the compressed payload (`None`: it does
    /// not shrink, so messages go uncompressed).
    deflate: Option<DeflatePlan>,
    /// The permessage-deflate parameters the server answered (the first connection's).
    negotiated: OnceLock<String>,
    /// fanout: where the sequence number sits in `batch`'s first frame, and its offset in the
    /// masked payload (for the mask's phase).
    seq_at: usize,
    seq_mask_offset: usize,
    /// fanout: an empty message, masked, that tells when every subscriber is subscribed.
    sync_frame: Vec<u8>,
    /// fanout: messages per second, if paced.
    rate: Option<f64>,
}

struct DeflatePlan {
    offer: DeflateConfig,
    compressed_len: Option<usize>,
}

impl Plan {
    fn new(s: &Settings) -> Plan {
        let mut payload: Vec<u8> = match s.payload {
            PayloadKind::Json => deflate::json_payload(s.size),
            PayloadKind::Pattern => (0..s.size)
                .map(|i| match s.kind {
                    // Printable ASCII, so the text is valid UTF-8 and no two neighbours are equal.
                    Kind::Text => b'!' + (i % 94) as u8,
                    Kind::Binary => (i.wrapping_mul(31) ^ (i >> 8)) as u8,
                })
                .collect(),
        };
        let fanout = s.mode == Mode::Fanout;
        if fanout {
            // The template: message 0. The publisher patches the number into each copy.
            payload[..fanout::SEQ_LEN].copy_from_slice(&fanout::seq_prefix(0));
        }
        let opcode = match s.kind {
            Kind::Text => OpCode::Text,
            Kind::Binary => OpCode::Binary,
        };
        // Every frame of a run is masked with one key (RFC 6455 §5.3 asks for a fresh key per
        // frame to defeat proxy cache poisoning; a load generator on loopback has no proxy).
        let mask = run_mask_key();
        // What goes on the wire: the payload, or with --deflate its compressed form. Fan-out
        // compresses all but the sequence number, which goes in front in a stored block, so
        // every message is the same compressed bytes with 16 of them patched.
        let (compressed, seq_in_payload) = match (s.deflate, fanout) {
            (false, _) => (None, 0),
            (true, false) => (deflate::compress(&payload), 0),
            (true, true) => {
                let rest = deflate::compress(&payload[fanout::SEQ_LEN..]).map(|rest| {
                    let mut wire = deflate::STORED_PREFIX_HEADER.to_vec();
                    wire.extend_from_slice(&payload[..fanout::SEQ_LEN]);
                    wire.extend(rest);
                    wire
                });
                (rest, deflate::STORED_PREFIX_HEADER.len())
            }
        };
        let (wire, rsv, seq_mask_offset) = match &compressed {
            Some(wire) => (&wire[..], RSV1, seq_in_payload),
            None => (&payload[..], 0, 0),
        };
        let frame = build_frame(s.protocol, opcode, rsv, wire, mask);
        let frame_len = frame.len();
        let seq_at = frame_len - wire.len() + seq_mask_offset;
        let batch_frames = (BATCH_BYTES / frame_len).clamp(1, s.pipeline);
        let batch = frame.repeat(batch_frames);
        let close_frame = build_frame(Protocol::Ws, OpCode::Close, 0, &1000u16.to_be_bytes(), mask);
        let sync_frame = build_frame(Protocol::Ws, opcode, 0, &[], mask);
        let read_buf = if fanout {
            // Up to thousands of subscribers each: what four messages need is plenty, as the
            // verifier streams.
            frame_len.saturating_mul(4).clamp(4096, 64 * 1024)
        } else {
            frame_len.saturating_mul(s.pipeline).clamp(4096, 256 * 1024)
        }
        .next_power_of_two();
        let deflate = s.deflate.then(|| DeflatePlan {
            offer: DeflateConfig {
                level: deflate::LEVEL as u8,
                own_window_bits: deflate::OWN_WINDOW_BITS,
                // Not limiting the server: it compresses as it would for a browser.
                peer_window_bits: 15,
                own_no_context_takeover: true,
                request_peer_no_context_takeover: false,
                ..DeflateConfig::default()
            },
            compressed_len: compressed.as_ref().map(Vec::len),
        });
        Plan {
            mode: s.mode,
            connections: s.connections,
            protocol: s.protocol,
            targets: s.targets.clone(),
            path: s.path.clone(),
            sources: s.sources.clone(),
            size: s.size,
            pipeline: s.pipeline,
            timeout: s.timeout,
            opcode,
            payload,
            frame_len,
            batch,
            batch_frames,
            close_frame,
            mask,
            read_buf,
            deflate,
            negotiated: OnceLock::new(),
            seq_at,
            seq_mask_offset,
            sync_frame,
            rate: s.rate,
        }
    }

    /// What a received message is called in errors.
    fn noun(&self) -> &'static str {
        match self.mode {
            Mode::Fanout => "delivery",
            _ => "echo",
        }
    }

    /// Where connection `id` goes: subscriber `id` to the URLs in turn, the publisher (id
    /// `connections`) and every connection outside fanout (one URL) to the first.
    fn target(&self, id: usize) -> &Target {
        let index = if id < self.connections {
            id % self.targets.len().max(1)
        } else {
            0
        };
        &self.targets[index]
    }

    fn source(&self, n: usize) -> Option<IpAddr> {
        match self.sources.len() {
            0 => None,
            len => self.sources.get(n % len).copied(),
        }
    }
}

fn run_mask_key() -> [u8; 4] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0x5eed);
    (nanos ^ std::process::id().rotate_left(16) ^ 0x9e37_79b9).to_le_bytes()
}

/// One whole frame: WebSocket (masked, `rsv` bits set), or tcp's length prefix and payload.
fn build_frame(
    protocol: Protocol,
    opcode: OpCode,
    rsv: u8,
    payload: &[u8],
    mask: [u8; 4],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + MAX_HEADER_LEN);
    match protocol {
        Protocol::Ws => {
            let header = FrameHeader {
                fin: true,
                rsv,
                opcode,
                mask: Some(mask),
                payload_len: payload.len() as u64,
            };
            let mut bytes = [0; MAX_HEADER_LEN];
            let n = header.encode(&mut bytes);
            out.extend_from_slice(&bytes[..n]);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], mask, 0);
        }
        Protocol::Tcp => {
            // Settings checked that the size fits in 32 bits.
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Shared state between the main thread and the load threads.

const CONNECTING: u8 = 0;
const WARMUP: u8 = 1;
const MEASURE: u8 = 2;
const STOP: u8 = 3;
const ABORT: u8 = 4;

/// One load thread's counters, on a cache line of their own.
#[repr(align(128))]
#[derive(Default)]
struct Counters {
    /// Echoes, handshakes, or in fanout deliveries to subscribers.
    messages: AtomicU64,
    bytes: AtomicU64,
    connected: AtomicU64,
    /// fanout: the publisher's copies of its own messages.
    copies: AtomicU64,
}

struct Shared {
    phase: AtomicU8,
    counters: Vec<Counters>,
    /// fanout: the publisher's sequence and the completion counts.
    hub: Option<fanout::Hub>,
}

impl Shared {
    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }

    fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::Relaxed);
    }

    fn totals(&self) -> (u64, u64, u64) {
        self.counters.iter().fold((0, 0, 0), |(m, b, c), x| {
            (
                m + x.messages.load(Ordering::Relaxed),
                b + x.bytes.load(Ordering::Relaxed),
                c + x.connected.load(Ordering::Relaxed),
            )
        })
    }
}

/// What a load thread tells the main thread.
enum Event {
    /// Connected (or failed to); now waiting for the go.
    Ready(Result<()>),
    /// Every connection got its last echo back (before closing).
    Drained,
    /// fanout: every subscriber and the publisher got a sync message, so all are subscribed.
    Synced,
    /// Finished: the latency histogram, and warnings (unclean closes).
    Done(Result<(Histogram, Vec<String>)>),
}

/// What the connections of one load thread share (one task, so plain cells).
struct Worker<'a> {
    plan: &'a Plan,
    shared: &'a Shared,
    counters: &'a Counters,
    /// Messages (or handshakes) still to start, with --messages.
    budget: Cell<Option<u64>>,
    hist: RefCell<Histogram>,
}

impl Worker<'_> {
    /// Up to `n` more messages may be sent, unless the run is stopping or the budget is spent.
    fn grant(&self, n: u64) -> u64 {
        if self.shared.phase() >= STOP {
            return 0;
        }
        match self.budget.get() {
            None => n,
            Some(left) => {
                let n = n.min(left);
                self.budget.set(Some(left - n));
                n
            }
        }
    }

    fn count(&self, messages: u64) {
        self.counters
            .messages
            .fetch_add(messages, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(messages * self.plan.size as u64, Ordering::Relaxed);
    }

    fn measuring(&self) -> bool {
        self.shared.phase() == MEASURE
    }
}

// ---------------------------------------------------------------------------------------------
// A connection: the streaming verifier and the poll loop.

enum RxState {
    Header,
    Payload { remaining: u64, fin: bool },
}

/// The receive side: a reused buffer and the position in the echo stream.
struct Rx {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    state: RxState,
    /// Inside a message (its first frame has been seen).
    in_message: bool,
    /// The current message is compressed (RSV1 on its first frame).
    compressed: bool,
    /// Payload bytes of the current message verified so far (inflated bytes, if compressed).
    offset: usize,
    /// After we sent a close: a close frame from the server ends the exchange.
    closing: bool,
    closed: bool,
    /// When permessage-deflate was negotiated: the inflater for the server's messages.
    inflater: Option<deflate::Inflater>,
    /// fanout: where this receiver is in the publisher's sequence.
    seq: Option<fanout::SeqState>,
}

impl Rx {
    fn new(size: usize) -> Rx {
        Rx {
            buf: vec![0; size],
            start: 0,
            end: 0,
            state: RxState::Header,
            in_message: false,
            compressed: false,
            offset: 0,
            closing: false,
            closed: false,
            inflater: None,
            seq: None,
        }
    }

    fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.state = RxState::Header;
        self.in_message = false;
        self.compressed = false;
        self.offset = 0;
        self.closing = false;
        self.closed = false;
        self.inflater = None;
        self.seq = None;
    }

    /// Verifies what the buffer holds; returns the number of messages completed (echoes, or in
    /// fanout numbered messages; sync messages are counted in `seq`). A pong to send (for a
    /// ping from the server) is appended to `control`.
    fn process(&mut self, plan: &Plan, control: &mut Vec<u8>) -> Result<u64> {
        let mut completed = 0;
        loop {
            let avail = self.buf.get(self.start..self.end).unwrap_or_default();
            match self.state {
                RxState::Payload { remaining, fin } => {
                    if remaining > 0 {
                        if avail.is_empty() {
                            break;
                        }
                        let take = remaining.min(avail.len() as u64) as usize;
                        let got = &avail[..take];
                        if self.compressed {
                            let inflater = self
                                .inflater
                                .as_mut()
                                .ok_or_else(|| anyhow!("internal: compressed without inflater"))?;
                            let (seq, offset) = (self.seq.as_ref(), &mut self.offset);
                            inflater.feed(got, false, &mut |piece| {
                                check_payload(plan, seq, *offset, piece)?;
                                *offset += piece.len();
                                Ok(())
                            })?;
                        } else {
                            check_payload(plan, self.seq.as_ref(), self.offset, got)?;
                            self.offset += take;
                        }
                        self.start += take;
                        let remaining = remaining - take as u64;
                        if remaining > 0 {
                            self.state = RxState::Payload { remaining, fin };
                            break;
                        }
                    }
                    self.state = RxState::Header;
                    if fin && self.finish_message(plan)? {
                        completed += 1;
                    }
                }
                RxState::Header => match plan.protocol {
                    Protocol::Tcp => {
                        let Some(prefix) = avail.get(..4) else { break };
                        let mut len = [0; 4];
                        len.copy_from_slice(prefix);
                        let len = u32::from_be_bytes(len);
                        if len as usize != plan.size {
                            bail!(
                                "echo length prefix says {len} bytes; {} were sent",
                                plan.size
                            );
                        }
                        self.start += 4;
                        self.in_message = true;
                        self.state = RxState::Payload {
                            remaining: u64::from(len),
                            fin: true,
                        };
                    }
                    Protocol::Ws => {
                        let Some((header, header_len)) = FrameHeader::parse(avail)
                            .map_err(|e| anyhow!("invalid frame from the server: {e}"))?
                        else {
                            break;
                        };
                        if header.mask.is_some() {
                            bail!("the server masked a frame (RFC 6455 §5.1 forbids it)");
                        }
                        // RFC 7692 §6: RSV1 marks a compressed message, on its first frame only;
                        // control frames are never compressed.
                        let compressed_start = header.rsv == RSV1
                            && self.inflater.is_some()
                            && !header.opcode.is_control()
                            && !self.in_message;
                        if header.rsv != 0 && !compressed_start {
                            bail!(
                                "the server set RSV bits {:#05b} {}",
                                header.rsv,
                                if self.inflater.is_some() {
                                    "where permessage-deflate allows none"
                                } else {
                                    "without an extension"
                                }
                            );
                        }
                        if header.opcode.is_control() {
                            let len = header.payload_len as usize;
                            if !header.fin || len > 125 {
                                bail!("the server sent an invalid control frame");
                            }
                            let Some(body) = avail.get(header_len..header_len + len) else {
                                break;
                            };
                            match header.opcode {
                                OpCode::Ping if !self.closing => {
                                    control.extend(build_frame(
                                        Protocol::Ws,
                                        OpCode::Pong,
                                        0,
                                        body,
                                        plan.mask,
                                    ));
                                }
                                OpCode::Close if self.closing => self.closed = true,
                                OpCode::Close => bail!("{}", describe_close(body)),
                                _ => {}
                            }
                            self.start += header_len + len;
                            continue;
                        }
                        if self.closing {
                            bail!("the server sent data after our close frame");
                        }
                        match (self.in_message, header.opcode) {
                            (false, op) if op == plan.opcode => self.in_message = true,
                            (true, OpCode::Continuation) => {}
                            (false, OpCode::Continuation) => {
                                bail!("the server sent a continuation frame outside a message")
                            }
                            (true, _) => bail!("the server started a message inside another"),
                            (false, op) => bail!("the echo is {op:?}; {:?} was sent", plan.opcode),
                        }
                        if compressed_start {
                            self.compressed = true;
                        }
                        // Compressed frames are checked after inflating.
                        if !self.compressed && header.payload_len > (plan.size - self.offset) as u64
                        {
                            bail!("echo longer than the message sent ({} bytes)", plan.size);
                        }
                        self.start += header_len;
                        self.state = RxState::Payload {
                            remaining: header.payload_len,
                            fin: header.fin,
                        };
                    }
                },
            }
        }
        // What is left is at most a partial header or control frame: move it to the front.
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        Ok(completed)
    }

    /// The last frame of a message is in: inflate the sync-flush tail if compressed, and check
    /// the length. True for a whole message; false for a fan-out sync message (empty, before
    /// the first numbered one).
    fn finish_message(&mut self, plan: &Plan) -> Result<bool> {
        if self.compressed {
            let inflater = self
                .inflater
                .as_mut()
                .ok_or_else(|| anyhow!("internal: compressed without inflater"))?;
            let (seq, offset) = (self.seq.as_ref(), &mut self.offset);
            inflater.feed(&[], true, &mut |piece| {
                check_payload(plan, seq, *offset, piece)?;
                *offset += piece.len();
                Ok(())
            })?;
        }
        self.compressed = false;
        self.in_message = false;
        let len = std::mem::take(&mut self.offset);
        match &mut self.seq {
            Some(seq) if len == 0 => {
                if seq.next > 0 {
                    bail!(
                        "an empty message after message #{}: only sync messages are empty, \
                         and they come first",
                        seq.next - 1
                    );
                }
                seq.syncs += 1;
                Ok(false)
            }
            seq => {
                if len != plan.size {
                    bail!(
                        "{} shorter than the message sent: {len} bytes of {}",
                        plan.noun(),
                        plan.size
                    );
                }
                if let Some(seq) = seq {
                    seq.advance();
                }
                Ok(true)
            }
        }
    }
}

/// Checks `got`, the payload bytes at `offset` of the message being received, against what was
/// sent: the plan's payload, whose first bytes in fan-out are the sequence number `seq` expects.
fn check_payload(
    plan: &Plan,
    seq: Option<&fanout::SeqState>,
    offset: usize,
    got: &[u8],
) -> Result<()> {
    let Some(expected) = plan.payload.get(offset..offset + got.len()) else {
        bail!(
            "{} longer than the message sent ({} bytes)",
            plan.noun(),
            plan.size
        );
    };
    let numbered = match seq {
        Some(seq) if offset < fanout::SEQ_LEN => {
            let n = (fanout::SEQ_LEN - offset).min(got.len());
            if got[..n] != seq.prefix[offset..offset + n] {
                bail!(
                    "expected message #{} (sequence number {:?}) but got one starting {:?} at \
                     byte {offset}: a message was lost, repeated or reordered",
                    seq.next,
                    String::from_utf8_lossy(&seq.prefix),
                    String::from_utf8_lossy(&got[..n])
                );
            }
            n
        }
        _ => 0,
    };
    let (got, expected) = (&got[numbered..], &expected[numbered..]);
    if got != expected {
        let i = got
            .iter()
            .zip(expected)
            .position(|(g, e)| g != e)
            .unwrap_or(0);
        bail!(
            "{} differs from the message sent at byte {} of {} (sent {:#04x}, got {:#04x})",
            plan.noun(),
            offset + numbered + i,
            plan.size,
            expected.get(i).copied().unwrap_or(0),
            got.get(i).copied().unwrap_or(0)
        );
    }
    Ok(())
}

/// The error for a close frame the server sent first, with a hint for the codes a benchmark
/// provokes.
fn describe_close(body: &[u8]) -> String {
    let code = body.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
    let reason = String::from_utf8_lossy(body.get(2..).unwrap_or_default());
    let hint = match code {
        Some(1013) => {
            ": the server found this connection too slow (1013); with fanout, lower --pipeline \
             or raise the server's --send-queue"
        }
        Some(1009) => {
            ": the message is over the server's limit (1009); raise its --max-message-size"
        }
        _ => "",
    };
    format!(
        "the server sent a close frame (code {}, reason {reason:?}){hint}",
        code.map_or_else(|| "none".to_owned(), |c| c.to_string())
    )
}

struct Conn {
    id: usize,
    stream: TcpStream,
    rx: Rx,
    /// Messages granted whose last byte is not yet written.
    unsent: u64,
    /// Bytes of the first unsent frame already written.
    write_off: usize,
    /// When each message whose first byte is written, and whose echo is not complete, started.
    sent: VecDeque<Instant>,
    /// Control frames to send (pongs) at the next frame boundary.
    control: Vec<u8>,
}

impl Conn {
    fn new(id: usize, stream: TcpStream, rx: Rx, pipeline: usize) -> Conn {
        Conn {
            id,
            stream,
            rx,
            unsent: 0,
            write_off: 0,
            sent: VecDeque::with_capacity(pipeline),
            control: Vec::new(),
        }
    }

    /// Sends the granted messages and verifies echoes until none is outstanding. With a worker,
    /// every echo is counted and timed and grants the next message; without, it only verifies.
    fn poll_exchange(
        &mut self,
        cx: &mut TaskContext<'_>,
        plan: &Plan,
        worker: Option<&Worker<'_>>,
    ) -> Poll<Result<()>> {
        let frame_len = plan.frame_len;
        loop {
            // Write until the socket is full: a pending pong at a frame boundary, then the
            // granted messages, as many frames per write as the batch holds.
            loop {
                let chunk = if !self.control.is_empty() && self.write_off == 0 {
                    &self.control[..]
                } else if self.unsent > 0 {
                    let frames = self.unsent.min(plan.batch_frames as u64) as usize;
                    plan.batch
                        .get(self.write_off..frames * frame_len)
                        .unwrap_or_default()
                } else {
                    break;
                };
                let control = !self.control.is_empty() && self.write_off == 0;
                let n = match Pin::new(&mut self.stream).poll_write(cx, chunk) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => break,
                };
                if control {
                    self.control.drain(..n);
                    continue;
                }
                let before = self.write_off;
                let started = (before + n).div_ceil(frame_len) - before.div_ceil(frame_len);
                if started > 0 {
                    let now = Instant::now();
                    self.sent.extend(std::iter::repeat_n(now, started));
                }
                let total = before + n;
                self.unsent -= (total / frame_len) as u64;
                self.write_off = total % frame_len;
            }
            if self.unsent == 0 && self.sent.is_empty() && self.control.is_empty() {
                return Poll::Ready(Ok(()));
            }
            // Read and verify.
            let rx = &mut self.rx;
            if rx.end == rx.buf.len() {
                return Poll::Ready(Err(anyhow!("internal: read buffer full")));
            }
            let mut buf = ReadBuf::new(&mut rx.buf[rx.end..]);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len();
                    if n == 0 {
                        let n = self.sent.len();
                        return Poll::Ready(Err(anyhow!(
                            "the server closed the TCP connection with {n} message{} in flight",
                            if n == 1 { "" } else { "s" }
                        )));
                    }
                    rx.end += n;
                    let done = match rx.process(plan, &mut self.control) {
                        Ok(done) => done,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    if done == 0 {
                        continue;
                    }
                    if done > self.sent.len() as u64 {
                        return Poll::Ready(Err(anyhow!(
                            "the server echoed {done} messages with only {} sent",
                            self.sent.len()
                        )));
                    }
                    let now = Instant::now();
                    match worker {
                        Some(w) if w.measuring() => {
                            let mut hist = w.hist.borrow_mut();
                            for sent in self.sent.drain(..done as usize) {
                                hist.record(now.saturating_duration_since(sent));
                            }
                        }
                        _ => {
                            self.sent.drain(..done as usize);
                        }
                    }
                    if let Some(w) = worker {
                        w.count(done);
                        self.unsent += w.grant(done);
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// One message, verified, outside the measured loop (handshakes and idle modes).
    async fn echo_once(&mut self, plan: &Plan) -> Result<()> {
        self.unsent = 1;
        poll_fn(|cx| self.poll_exchange(cx, plan, None)).await
    }

    /// The closing handshake: our close, the server's close, then the server's FIN (the server
    /// closes TCP first, RFC 6455 §7.1.1). For tcp: our FIN, then theirs.
    async fn close(&mut self, plan: &Plan) -> Result<()> {
        match plan.protocol {
            Protocol::Ws => {
                self.stream.write_all(&plan.close_frame).await?;
                self.rx.closing = true;
                let mut scratch = Vec::new();
                while !self.rx.closed {
                    let rx = &mut self.rx;
                    let n = self.stream.read(&mut rx.buf[rx.end..]).await?;
                    if n == 0 {
                        bail!("the server closed TCP without answering our close frame");
                    }
                    rx.end += n;
                    rx.process(plan, &mut scratch)?;
                }
            }
            Protocol::Tcp => self.stream.shutdown().await?,
        }
        // Then the server's FIN.
        match self.stream.read(&mut self.rx.buf[..]).await? {
            0 => Ok(()),
            _ => bail!("the server sent data after the close"),
        }
    }
}

fn write_zero() -> anyhow::Error {
    anyhow!("the server stopped accepting data (write returned 0)")
}

/// Connects (from `source`, when given) with TCP_NODELAY on.
async fn connect(target: &Target, source: Option<IpAddr>) -> Result<TcpStream> {
    let hint = |e: io::Error| {
        let fix = match (e.raw_os_error(), e.kind()) {
            (Some(24), _) => {
                "too many open files: raise the limit (ulimit -n) or lower --connections"
            }
            (Some(23), _) => "the system's file table is full: lower --connections",
            (Some(98 | 99), _) if source.is_some() => {
                "out of local ports, or --source-ips holds an address this host does not have: \
                 add source addresses"
            }
            (Some(98 | 99), _) => {
                "out of local ports (about 28k per source address): spread connections with \
                 --source-ips 127.0.0.2-127.0.0.9"
            }
            (_, io::ErrorKind::ConnectionRefused) => {
                "nothing is listening there: start the server or fix --url"
            }
            _ => "check --url and that the server is up",
        };
        anyhow!("connect to {}: {e}; {fix}", target.addr)
    };
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(hint)?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(hint)?;
    }
    let stream = socket.connect(target.addr).await.map_err(hint)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The opening handshake, over the connection's own read buffer (bytes after the response stay
/// in it, for the frame parser).
async fn upgrade(stream: &mut TcpStream, rx: &mut Rx, plan: &Plan, target: &Target) -> Result<()> {
    let mut request = ClientRequest::new(target.host.clone(), plan.path.clone());
    request.deflate = plan.deflate.as_ref().map(|d| d.offer.clone());
    let (mut handshake, bytes) = ClientHandshake::new(&request, &Limits::default())
        .map_err(|e| anyhow!("--url: cannot build the handshake request: {e}"))?;
    stream.write_all(&bytes).await?;
    loop {
        let n = stream.read(&mut rx.buf[..]).await?;
        if n == 0 {
            bail!("the server closed the connection during the handshake");
        }
        let data = rx.buf.get(..n).unwrap_or_default();
        if let Some(response) = handshake
            .receive(data)
            .map_err(|e| anyhow!("handshake refused: {e}"))?
        {
            let inflater = match (&plan.deflate, response.deflate) {
                (None, None) => None,
                (None, Some(_)) => bail!("the server accepted an extension that was not offered"),
                (Some(_), None) => bail!(
                    "--deflate: the server declined permessage-deflate; turn it on in the server \
                     (ferry echo: drop --no-deflate) or drop --deflate"
                ),
                (Some(_), Some(params)) => {
                    // The payload was compressed once with our window; a server that allows us
                    // less could not inflate it.
                    if let Some(bits) = params
                        .client_max_window_bits
                        .filter(|&b| b < deflate::OWN_WINDOW_BITS)
                    {
                        bail!(
                            "--deflate: the server limits our window to {bits} bits; ferry \
                             bench compresses with {}",
                            deflate::OWN_WINDOW_BITS
                        );
                    }
                    let _ = plan.negotiated.set(params.to_header());
                    Some(deflate::Inflater::new(
                        params.server_max_window_bits.unwrap_or(15),
                        params.server_no_context_takeover,
                    ))
                }
            };
            let leftover = &response.leftover[..];
            rx.reset();
            rx.inflater = inflater;
            rx.buf
                .get_mut(..leftover.len())
                .ok_or_else(|| anyhow!("handshake leftover larger than the read buffer"))?
                .copy_from_slice(leftover);
            rx.end = leftover.len();
            return Ok(());
        }
    }
}

/// Connect to connection `id`'s server ([`Plan::target`]), and upgrade for WebSocket.
async fn open(plan: &Plan, id: usize, source_index: usize, rx: Rx) -> Result<Conn> {
    let target = plan.target(id);
    let opening = async {
        let mut stream = connect(target, plan.source(source_index)).await?;
        let mut rx = rx;
        if plan.protocol == Protocol::Ws {
            upgrade(&mut stream, &mut rx, plan, target).await?;
        }
        if plan.mode == Mode::Fanout {
            rx.seq = Some(fanout::SeqState::new());
        }
        Ok::<_, anyhow::Error>(Conn::new(id, stream, rx, plan.pipeline))
    };
    let result = match tokio::time::timeout(plan.timeout, opening).await {
        Ok(result) => result,
        Err(_) => Err(anyhow!(
            "connect and upgrade took longer than --timeout {:?}; is the server overloaded?",
            plan.timeout
        )),
    };
    if plan.targets.len() > 1 {
        // Several servers: say which one failed.
        return result.with_context(|| format!("--url {}", target.url));
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Load threads.

/// Opens the connections `ids`, a bounded number at a time; in idle mode each also echoes once.
async fn open_all(
    plan: &Plan,
    shared: &Shared,
    counters: &Counters,
    ids: Range<usize>,
) -> Result<Vec<Conn>> {
    let mut ids = ids;
    let mut conns = Vec::with_capacity(ids.len());
    let mut pending = FuturesUnordered::new();
    loop {
        while pending.len() < CONNECT_CONCURRENCY {
            let Some(id) = ids.next() else { break };
            pending.push(async move {
                let mut conn = open(plan, id, id, Rx::new(plan.read_buf)).await?;
                if plan.mode == Mode::Idle {
                    match tokio::time::timeout(plan.timeout, conn.echo_once(plan)).await {
                        Ok(result) => result?,
                        Err(_) => bail!("no echo within --timeout {:?}", plan.timeout),
                    }
                    // Held connections keep no read buffer on this side.
                    conn.rx = Rx::new(0);
                }
                Ok(conn)
            });
        }
        match pending.next().await {
            None => return Ok(conns),
            Some(Ok(conn)) => {
                conns.push(conn);
                counters.connected.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(e)) => return Err(e),
        }
        if shared.phase() == ABORT {
            bail!("aborted");
        }
    }
}

/// Resolves when the run is aborted, or `grace` after it is stopped.
async fn watch(shared: &Shared, grace: Duration, what: &str) -> anyhow::Error {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        match shared.phase() {
            ABORT => return anyhow!("aborted"),
            STOP => {
                tokio::time::sleep(grace).await;
                return anyhow!("{what} within --timeout {grace:?} after the end of the run");
            }
            _ => {}
        }
    }
}

/// Echo and bulk: every connection keeps `pipeline` messages in flight until the run stops.
async fn run_echo(
    worker: &Worker<'_>,
    conns: Vec<Conn>,
    events: &mpsc::Sender<Event>,
) -> Result<Vec<String>> {
    let plan = worker.plan;
    let exchange = async {
        let mut running: FuturesUnordered<_> = conns
            .into_iter()
            .map(|mut conn| async move {
                conn.unsent = worker.grant(plan.pipeline as u64);
                poll_fn(|cx| conn.poll_exchange(cx, plan, Some(worker)))
                    .await
                    .with_context(|| format!("connection {}", conn.id))?;
                Ok::<_, anyhow::Error>(conn)
            })
            .collect();
        let mut drained = Vec::new();
        while let Some(result) = running.next().await {
            drained.push(result?);
        }
        Ok::<_, anyhow::Error>(drained)
    };
    let drained = tokio::select! {
        biased;
        result = exchange => result?,
        err = watch(worker.shared, plan.timeout, "the last echoes did not arrive") => return Err(err),
    };
    let _ = events.send(Event::Drained);
    Ok(close_all(plan, drained).await)
}

/// Fanout: the subscribers `conns` of this thread and, on thread 0, the publisher.
async fn run_fanout(
    worker: &Worker<'_>,
    conns: Vec<Conn>,
    publisher: Option<Conn>,
    events: &mpsc::Sender<Event>,
) -> Result<Vec<String>> {
    let plan = worker.plan;
    let hub = worker
        .shared
        .hub
        .as_ref()
        .ok_or_else(|| anyhow!("internal: fanout without a hub"))?;
    let tally = fanout::Tally::new(hub, conns.len() + usize::from(publisher.is_some()));
    let ctx = fanout::Ctx {
        worker,
        hub,
        tally: &tally,
        events,
    };
    let publisher = publisher.map(|conn| fanout::Publisher::new(conn, plan));
    let (mut conns, publisher) = fanout::run(&ctx, conns, publisher).await?;
    let _ = events.send(Event::Drained);
    conns.extend(publisher.map(fanout::Publisher::into_conn));
    Ok(close_all(plan, conns).await)
}

/// Closes every connection; an unclean close is a warning, not a failed measurement.
async fn close_all(plan: &Plan, drained: Vec<Conn>) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut closing: FuturesUnordered<_> = drained
        .into_iter()
        .map(|mut conn| async move {
            match tokio::time::timeout(plan.timeout, conn.close(plan)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("connection {}: close: {e:#}", conn.id)),
                Err(_) => Err(format!(
                    "connection {}: close: no reply within --timeout",
                    conn.id
                )),
            }
        })
        .collect();
    while let Some(result) = closing.next().await {
        if let Err(warning) = result {
            warnings.push(warning);
        }
    }
    warnings
}

/// Handshakes: each slot connects, upgrades, echoes once and closes, over and over.
async fn run_handshakes(worker: &Worker<'_>, slots: Range<usize>) -> Result<Vec<String>> {
    let plan = worker.plan;
    let total_slots = slots.len().max(1);
    let all = async {
        let mut running: FuturesUnordered<_> = slots
            .map(|slot| async move {
                let mut rx = Some(Rx::new(plan.read_buf));
                let mut cycle = 0usize;
                while worker.grant(1) == 1 {
                    let started = Instant::now();
                    let mut buf = rx.take().unwrap_or_else(|| Rx::new(plan.read_buf));
                    buf.reset();
                    let mut conn = open(plan, slot, slot + cycle * total_slots, buf)
                        .await
                        .with_context(|| format!("slot {slot}"))?;
                    let rest = async {
                        conn.echo_once(plan).await?;
                        conn.close(plan).await
                    };
                    match tokio::time::timeout(plan.timeout, rest).await {
                        Ok(result) => result.with_context(|| format!("slot {slot}"))?,
                        Err(_) => bail!("slot {slot}: echo and close took longer than --timeout"),
                    }
                    if worker.measuring() {
                        worker.hist.borrow_mut().record(started.elapsed());
                    }
                    worker.count(1);
                    rx = Some(conn.rx);
                    cycle += 1;
                }
                Ok::<_, anyhow::Error>(())
            })
            .collect();
        while let Some(result) = running.next().await {
            result?;
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::select! {
        biased;
        result = all => result?,
        err = watch(worker.shared, plan.timeout, "the last handshakes did not finish") => return Err(err),
    }
    Ok(Vec::new())
}

fn load_thread(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    index: usize,
    ids: Range<usize>,
    budget: Option<u64>,
    go: mpsc::Receiver<()>,
    events: mpsc::Sender<Event>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = events.send(Event::Ready(Err(anyhow!("cannot start a runtime: {e}"))));
            return;
        }
    };
    let counters = &shared.counters[index];
    let conns = match plan.mode {
        Mode::Handshakes => Vec::new(),
        _ => match runtime.block_on(open_all(&plan, &shared, counters, ids.clone())) {
            Ok(conns) => conns,
            Err(e) => {
                let _ = events.send(Event::Ready(Err(e)));
                return;
            }
        },
    };
    // fanout: thread 0 also publishes, on a connection of its own (id N, after the subscribers).
    let publisher = if plan.mode == Mode::Fanout && index == 0 {
        let id = plan.connections;
        match runtime.block_on(open(&plan, id, id, Rx::new(plan.read_buf))) {
            Ok(conn) => Some(conn),
            Err(e) => {
                let _ = events.send(Event::Ready(Err(e.context("the publisher"))));
                return;
            }
        }
    } else {
        None
    };
    let _ = events.send(Event::Ready(Ok(())));
    if go.recv().is_err() || shared.phase() == ABORT {
        runtime.block_on(async move { drop((conns, publisher)) });
        return;
    }
    let worker = Worker {
        plan: &plan,
        shared: &shared,
        counters,
        budget: Cell::new(budget),
        hist: RefCell::new(Histogram::new()),
    };
    let result = match plan.mode {
        Mode::Echo | Mode::Bulk => runtime.block_on(run_echo(&worker, conns, &events)),
        Mode::Fanout => runtime.block_on(run_fanout(&worker, conns, publisher, &events)),
        Mode::Handshakes => runtime.block_on(run_handshakes(&worker, ids)),
        Mode::Idle => {
            // The main thread has read the server's RSS; let the connections go.
            runtime.block_on(async move { drop(conns) });
            Ok(Vec::new())
        }
    };
    if matches!(plan.mode, Mode::Handshakes) {
        let _ = events.send(Event::Drained);
    }
    let _ = events.send(Event::Done(
        result.map(|warnings| (worker.hist.into_inner(), warnings)),
    ));
}

// ---------------------------------------------------------------------------------------------
// The main thread: phases, snapshots, progress, report.

#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    messages: u64,
    bytes: u64,
    server_ticks: Option<u64>,
    client_ticks: Option<u64>,
    /// fanout: messages published, and the publisher's copies received.
    published: u64,
    copies: u64,
}

fn snapshot(shared: &Shared, pid: Option<u32>) -> Snapshot {
    let (messages, bytes, _) = shared.totals();
    Snapshot {
        at: Instant::now(),
        messages,
        bytes,
        server_ticks: pid.and_then(|p| read_proc_stat(p).ok()),
        client_ticks: read_proc_stat_self().ok(),
        published: shared
            .hub
            .as_ref()
            .map_or(0, |h| h.published.load(Ordering::Relaxed)),
        copies: shared
            .counters
            .iter()
            .map(|c| c.copies.load(Ordering::Relaxed))
            .sum(),
    }
}

/// utime + stime of a process, in clock ticks.
fn read_proc_stat(pid: u32) -> io::Result<u64> {
    parse_proc_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

fn read_proc_stat_self() -> io::Result<u64> {
    parse_proc_stat(&std::fs::read_to_string("/proc/self/stat")?)
}

fn parse_proc_stat(text: &str) -> io::Result<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields count from the last ')'.
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected /proc/PID/stat format",
        )
    };
    let rest = text.rsplit_once(')').ok_or_else(bad)?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields
        .get(11)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    let stime: u64 = fields
        .get(12)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    Ok(utime + stime)
}

/// VmRSS of a process, in KiB.
fn read_rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/PID/status"))
}

struct Progress {
    enabled: bool,
    tty: bool,
    last_print: Instant,
    last_messages: u64,
    last_at: Instant,
    printed: bool,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let now = Instant::now();
        Progress {
            enabled: !quiet,
            tty: io::stderr().is_terminal(),
            last_print: now,
            last_messages: 0,
            last_at: now,
            printed: false,
        }
    }

    fn show(&mut self, line: impl FnOnce(f64) -> String, messages: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let every = if self.tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        };
        if now.duration_since(self.last_print) < every {
            return;
        }
        let secs = now.duration_since(self.last_at).as_secs_f64();
        let rate = (messages.saturating_sub(self.last_messages)) as f64 / secs.max(1e-9);
        self.last_messages = messages;
        self.last_at = now;
        self.last_print = now;
        let text = line(rate);
        let mut err = io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{text}")
        } else {
            writeln!(err, "{text}")
        };
        let _ = err.flush();
        self.printed = true;
    }

    fn finish(&mut self) {
        if self.enabled && self.tty && self.printed {
            let _ = write!(io::stderr(), "\r\x1b[2K");
            let _ = io::stderr().flush();
        }
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let settings = Settings::resolve(args)?;
    let plan = Arc::new(Plan::new(&settings));
    let threads = settings.threads;
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(CONNECTING),
        counters: (0..threads).map(|_| Counters::default()).collect(),
        hub: (settings.mode == Mode::Fanout)
            .then(|| fanout::Hub::new(settings.pipeline, settings.connections, threads)),
    });
    let pid = settings.server_pid;
    let rss_before = pid.and_then(|p| read_rss_kib(p).ok());
    let server_start_ticks = pid.and_then(|p| read_proc_stat(p).ok());

    let (events_tx, events) = mpsc::channel();
    let mut go = Vec::new();
    let mut handles = Vec::new();
    for index in 0..threads {
        let ids = share(settings.connections, threads, index);
        let budget = settings.messages.map(|n| match settings.mode {
            // One publisher, on thread 0, sends them all.
            Mode::Fanout => n * u64::from(index == 0),
            _ => {
                let r = share(n as usize, threads, index);
                (r.end - r.start) as u64
            }
        });
        let (go_tx, go_rx) = mpsc::channel();
        go.push(go_tx);
        let (plan, shared, events_tx) = (plan.clone(), shared.clone(), events_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("bench-{index}"))
            .spawn(move || load_thread(plan, shared, index, ids, budget, go_rx, events_tx))
            .context("cannot start a load thread")?;
        handles.push(handle);
    }
    drop(events_tx);

    let mut progress = Progress::new(settings.quiet);
    let started = Instant::now();
    let outcome = drive(
        &settings,
        &shared,
        pid,
        &events,
        &go,
        &mut progress,
        started,
    );
    progress.finish();
    if outcome.is_err() {
        shared.set_phase(ABORT);
    }
    for tx in &go {
        let _ = tx.send(());
    }
    for handle in handles {
        let _ = handle.join();
    }
    let mut outcome = outcome?;
    outcome.rss_before = rss_before;
    outcome.server_start_ticks = server_start_ticks;
    let report = Report::new(&settings, &plan, outcome);
    let mut out = io::stdout().lock();
    if settings.json {
        writeln!(out, "{}", report.json())?;
    } else {
        write!(out, "{}", report.table())?;
    }
    Ok(())
}

/// Subscribers on the `k`th of `urls` URLs when subscriber i goes to URL i mod `urls`.
fn subscribers_on(subscribers: usize, urls: usize, k: usize) -> usize {
    subscribers / urls + usize::from(k < subscribers % urls)
}

/// The `index`th of `parts` near-equal shares of `0..total`.
fn share(total: usize, parts: usize, index: usize) -> Range<usize> {
    let base = total / parts;
    let extra = total % parts;
    let start = index * base + index.min(extra);
    let len = base + usize::from(index < extra);
    start..start + len
}

#[derive(Default)]
struct Outcome {
    connect_secs: f64,
    start: Option<Snapshot>,
    end: Option<Snapshot>,
    hist: Histogram,
    warnings: Vec<String>,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    server_start_ticks: Option<u64>,
    connected: u64,
}

fn drive(
    s: &Settings,
    shared: &Shared,
    pid: Option<u32>,
    events: &mpsc::Receiver<Event>,
    go: &[mpsc::Sender<()>],
    progress: &mut Progress,
    started: Instant,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let threads = s.threads;
    let mode = s.mode.name();
    // Connecting.
    let mut ready = 0;
    while ready < threads {
        match events.recv_timeout(TICK) {
            Ok(Event::Ready(Ok(()))) => ready += 1,
            Ok(Event::Ready(Err(e))) => return Err(e),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("a load thread died while connecting")
            }
        }
        check_server(pid)?;
        let (_, _, connected) = shared.totals();
        progress.show(
            |rate| {
                format!(
                    "{mode}: connecting {connected}/{} ({rate:.0}/s)",
                    s.connections
                )
            },
            connected,
        );
    }
    outcome.connect_secs = started.elapsed().as_secs_f64();
    outcome.connected = shared.totals().2;

    if s.mode == Mode::Idle {
        let hold_end = Instant::now() + s.hold;
        while Instant::now() < hold_end {
            std::thread::sleep(TICK.min(hold_end.saturating_duration_since(Instant::now())));
            check_server(pid)?;
            let left = hold_end
                .saturating_duration_since(Instant::now())
                .as_secs_f64();
            progress.show(
                |_| {
                    format!(
                        "idle: {} connections open; reading the server's RSS in {left:.1}s",
                        s.connections
                    )
                },
                0,
            );
        }
        outcome.rss_after = pid.and_then(|p| read_rss_kib(p).ok());
        outcome.end = Some(snapshot(shared, pid));
        shared.set_phase(STOP);
        for tx in go {
            let _ = tx.send(());
        }
        wait_done(events, threads, None, &mut outcome, s.timeout)?;
        return Ok(outcome);
    }

    if s.mode == Mode::Fanout {
        // The threads start receiving; the publisher sends sync messages until every
        // connection is subscribed, and publishes when the phase below says so.
        for tx in go {
            let _ = tx.send(());
        }
        wait_synced(s, shared, pid, events, progress)?;
    }

    // Warmup and measurement.
    let go_at = Instant::now();
    if s.warmup.is_zero() {
        outcome.start = Some(snapshot(shared, pid));
        shared.set_phase(MEASURE);
    } else {
        shared.set_phase(WARMUP);
    }
    if s.mode != Mode::Fanout {
        for tx in go {
            let _ = tx.send(());
        }
    }
    let warm_end = go_at + s.warmup;
    let mut measure_end = s.duration.map(|d| warm_end + d);
    let mut drained = 0;
    let mut done = 0;
    let mut last_messages = 0;
    let mut last_change = Instant::now();
    while done < threads {
        let now = Instant::now();
        let mut wait = TICK;
        if shared.phase() == WARMUP {
            wait = wait.min(warm_end.saturating_duration_since(now));
        }
        if let (MEASURE, Some(end)) = (shared.phase(), measure_end) {
            wait = wait.min(end.saturating_duration_since(now));
        }
        match events.recv_timeout(wait) {
            Ok(Event::Drained) => drained += 1,
            Ok(Event::Done(Ok((hist, warnings)))) => {
                done += 1;
                outcome.hist.merge(&hist);
                outcome.warnings.extend(warnings);
            }
            Ok(Event::Done(Err(e))) => return Err(e),
            Ok(Event::Ready(_) | Event::Synced) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("a load thread died"),
        }
        let now = Instant::now();
        let phase = shared.phase();
        if phase == WARMUP && now >= warm_end {
            outcome.start = Some(snapshot(shared, pid));
            shared.set_phase(MEASURE);
        }
        if shared.phase() == MEASURE {
            let finished = match measure_end {
                Some(end) => now >= end,
                None => drained == threads,
            };
            if finished {
                outcome.end = Some(snapshot(shared, pid));
                shared.set_phase(STOP);
                measure_end = None;
            }
        }
        let (messages, _, _) = shared.totals();
        if messages != last_messages {
            last_messages = messages;
            last_change = now;
        } else if shared.phase() < STOP && now.duration_since(last_change) > s.timeout {
            bail!(
                "no {} completed for --timeout {:?}: the server stalled (or is too slow for \
                 this --timeout)",
                if s.mode == Mode::Handshakes {
                    "handshake"
                } else {
                    "echo"
                },
                s.timeout
            );
        }
        if shared.phase() < STOP {
            check_server(pid)?;
        }
        let phase_name = match shared.phase() {
            WARMUP => "warmup",
            MEASURE => "measuring",
            _ => "closing",
        };
        let elapsed = go_at.elapsed().as_secs_f64();
        let unit = match s.mode {
            Mode::Handshakes => "handshakes",
            Mode::Fanout => "deliveries",
            _ => "msgs",
        };
        progress.show(
            |rate| {
                format!(
                    "{mode}: {phase_name} {elapsed:.1}s  {} {unit}  {}/s",
                    group(messages),
                    group(rate as u64)
                )
            },
            messages,
        );
    }
    if outcome.end.is_none() {
        outcome.end = Some(snapshot(shared, pid));
    }
    Ok(outcome)
}

/// fanout: waits until every subscriber and the publisher have seen a sync message.
fn wait_synced(
    s: &Settings,
    shared: &Shared,
    pid: Option<u32>,
    events: &mpsc::Receiver<Event>,
    progress: &mut Progress,
) -> Result<()> {
    let Some(hub) = &shared.hub else {
        bail!("internal: fanout without a hub")
    };
    let deadline = Instant::now() + s.timeout;
    loop {
        match events.recv_timeout(TICK) {
            Ok(Event::Synced) => return Ok(()),
            Ok(Event::Done(Err(e))) => return Err(e),
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("a load thread died"),
        }
        let synced = hub.synced.load(Ordering::Relaxed);
        if Instant::now() > deadline {
            bail!(
                "only {synced} of {} connections (the subscribers and the publisher) got the \
                 publisher's first message within --timeout {:?}: is --url a pub/sub topic that \
                 sends every message to every subscriber, the publisher too (ferry serve: \
                 ws://HOST:PORT/ws/topics/NAME)?",
                hub.receivers,
                s.timeout
            );
        }
        check_server(pid)?;
        progress.show(
            |_| {
                format!(
                    "fanout: subscribing: {synced}/{} connections have the first message",
                    hub.receivers
                )
            },
            0,
        );
    }
}

fn wait_done(
    events: &mpsc::Receiver<Event>,
    threads: usize,
    _pid: Option<u32>,
    outcome: &mut Outcome,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut done = 0;
    while done < threads {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Event::Done(Ok((hist, warnings)))) => {
                done += 1;
                outcome.hist.merge(&hist);
                outcome.warnings.extend(warnings);
            }
            Ok(Event::Done(Err(e))) => return Err(e),
            Ok(_) => {}
            Err(_) => bail!("the load threads did not finish within --timeout {timeout:?}"),
        }
    }
    Ok(())
}

fn check_server(pid: Option<u32>) -> Result<()> {
    match pid {
        Some(pid) if std::fs::metadata(format!("/proc/{pid}")).is_err() => {
            bail!("--server-pid {pid}: the server exited during the run")
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log-linear buckets, 64 per power of two (under 1.6% error), in ns.

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (2 * SUB + (63 - SUB_BITS as u64) * SUB) as usize;

#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    fn index(ns: u64) -> usize {
        if ns < 2 * SUB {
            return ns as usize;
        }
        let msb = 63 - ns.leading_zeros();
        let shift = msb - SUB_BITS;
        let sub = (ns >> shift) - SUB;
        (2 * SUB + u64::from(shift - 1) * SUB + sub) as usize
    }

    /// The middle of bucket `index`.
    fn value(index: usize) -> u64 {
        let index = index as u64;
        if index < 2 * SUB {
            return index;
        }
        let shift = (index - 2 * SUB) / SUB + 1;
        let sub = (index - 2 * SUB) % SUB;
        ((SUB + sub) << shift) + (1 << shift) / 2
    }

    fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        if let Some(count) = self.counts.get_mut(Self::index(ns)) {
            *count += 1;
        }
        self.total += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The latency at quantile `q` (0..=1), in ns.
    fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return Some(self.max_ns);
        }
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Self::value(i).min(self.max_ns));
            }
        }
        Some(self.max_ns)
    }

    fn mean(&self) -> Option<u64> {
        (self.total > 0).then(|| (self.sum_ns / u128::from(self.total)) as u64)
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

struct Report {
    label: Option<String>,
    mode: Mode,
    protocol: Protocol,
    kind: Kind,
    /// Every --url, in order.
    urls: Vec<String>,
    connections: usize,
    size: usize,
    pipeline: usize,
    threads: usize,
    warmup_s: f64,
    measured_s: f64,
    connect_s: f64,
    messages: u64,
    rate: f64,
    mb_per_s: f64,
    latency: Option<[u64; 6]>,
    server: Option<ServerFigures>,
    client_cpu_s: Option<f64>,
    client_util: Option<f64>,
    warnings: Vec<String>,
    payload: PayloadKind,
    fanout: Option<FanoutFigures>,
    deflate: Option<DeflateFigures>,
}

/// fanout: what the publisher did in the measured window.
struct FanoutFigures {
    published: u64,
    published_per_s: f64,
    /// The publisher's copies of its own messages: deliveries the server made too.
    copies: u64,
    rate: Option<f64>,
    /// Subscribers connected to each URL, in --url order (the publisher is on the first).
    subscribers_per_url: Vec<usize>,
}

/// --deflate: what was negotiated and how small the payload went on the wire.
struct DeflateFigures {
    offer: String,
    response: Option<String>,
    /// Payload bytes on the wire per message we send (`None`: sent uncompressed).
    compressed_len: Option<usize>,
}

struct ServerFigures {
    pid: u32,
    cpu_s: Option<f64>,
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    connections: u64,
}

impl Report {
    fn new(s: &Settings, plan: &Plan, o: Outcome) -> Report {
        let (start, end) = match (o.start, o.end) {
            (Some(a), Some(b)) => (a, b),
            (None, Some(b)) => (b, b),
            _ => {
                let now = Snapshot {
                    at: Instant::now(),
                    messages: 0,
                    bytes: 0,
                    server_ticks: None,
                    client_ticks: None,
                    published: 0,
                    copies: 0,
                };
                (now, now)
            }
        };
        let measured_s = end.at.saturating_duration_since(start.at).as_secs_f64();
        let messages = end.messages - start.messages;
        let per_s = |n: f64| {
            if measured_s > 0.0 {
                n / measured_s
            } else {
                0.0
            }
        };
        let ticks = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / CLOCK_TICKS_PER_SEC),
            _ => None,
        };
        let latency = (o.hist.total > 0).then(|| {
            [
                o.hist.quantile(0.5).unwrap_or(0),
                o.hist.quantile(0.9).unwrap_or(0),
                o.hist.quantile(0.99).unwrap_or(0),
                o.hist.quantile(0.999).unwrap_or(0),
                o.hist.max_ns,
                o.hist.mean().unwrap_or(0),
            ]
        });
        let server = s.server_pid.map(|pid| ServerFigures {
            pid,
            cpu_s: if s.mode == Mode::Idle {
                ticks(o.server_start_ticks, end.server_ticks)
            } else {
                ticks(start.server_ticks, end.server_ticks)
            },
            rss_before_kib: o.rss_before,
            rss_after_kib: o.rss_after,
            connections: o.connected,
        });
        let client_cpu_s = ticks(start.client_ticks, end.client_ticks);
        Report {
            label: s.label.clone(),
            mode: s.mode,
            protocol: s.protocol,
            kind: s.kind,
            urls: s.targets.iter().map(|t| t.url.clone()).collect(),
            connections: s.connections,
            size: s.size,
            pipeline: s.pipeline,
            threads: s.threads,
            warmup_s: s.warmup.as_secs_f64(),
            measured_s,
            connect_s: o.connect_secs,
            messages,
            rate: per_s(messages as f64),
            mb_per_s: per_s((end.bytes - start.bytes) as f64) / 1e6,
            latency,
            server,
            client_util: client_cpu_s
                .filter(|_| measured_s > 0.0)
                .map(|c| c / measured_s / s.threads as f64),
            client_cpu_s,
            warnings: o.warnings,
            payload: s.payload,
            fanout: (s.mode == Mode::Fanout).then(|| {
                let published = end.published - start.published;
                FanoutFigures {
                    published,
                    published_per_s: per_s(published as f64),
                    copies: end.copies - start.copies,
                    rate: s.rate,
                    subscribers_per_url: (0..s.targets.len())
                        .map(|k| subscribers_on(s.connections, s.targets.len(), k))
                        .collect(),
                }
            }),
            deflate: plan.deflate.as_ref().map(|d| DeflateFigures {
                offer: d.offer.client_offer(),
                response: plan.negotiated.get().cloned(),
                compressed_len: d.compressed_len,
            }),
        }
    }

    /// The server's operations in the window: messages, plus in fanout the publisher's copies,
    /// which the server delivers like any other.
    fn server_ops(&self) -> u64 {
        self.messages + self.fanout.as_ref().map_or(0, |f| f.copies)
    }

    fn cpu_us_per_message(&self) -> Option<f64> {
        let cpu = self.server.as_ref()?.cpu_s?;
        let ops = self.server_ops();
        (ops > 0).then(|| cpu * 1e6 / ops as f64)
    }

    fn server_util(&self) -> Option<f64> {
        let cpu = self.server.as_ref()?.cpu_s?;
        (self.measured_s > 0.0).then(|| cpu / self.measured_s)
    }

    fn rss_per_connection_kib(&self) -> Option<f64> {
        let server = self.server.as_ref()?;
        let (before, after) = (server.rss_before_kib?, server.rss_after_kib?);
        (server.connections > 0).then(|| (after as f64 - before as f64) / server.connections as f64)
    }

    /// The generator used (nearly) all of its threads' time: messages/s may measure it.
    fn saturated(&self) -> bool {
        self.client_util.is_some_and(|u| u >= 0.95)
    }

    fn table(&self) -> String {
        let mut t = String::new();
        let what = match self.mode {
            Mode::Handshakes => "handshake",
            Mode::Fanout => "delivery",
            _ => "message",
        };
        let whats = match self.mode {
            Mode::Fanout => "deliveries",
            _ if self.mode == Mode::Handshakes => "handshakes",
            _ => "messages",
        };
        let _ = write!(t, "ferry bench {}", self.mode.name());
        if let Some(label) = &self.label {
            let _ = write!(t, " [{label}]");
        }
        let kind = match self.protocol {
            Protocol::Ws => self.kind.name(),
            Protocol::Tcp => "length-prefixed tcp",
        };
        let _ = writeln!(t, ": {}", self.urls.join(", "));
        let content = match self.payload {
            PayloadKind::Json => " (JSON-like text)",
            PayloadKind::Pattern => "",
        };
        match &self.fanout {
            Some(f) => {
                let _ = write!(
                    t,
                    "  1 publisher, {} subscribers, {} {kind} messages{content}, at most {} in \
                     flight",
                    group(self.connections as u64),
                    bytes(self.size),
                    self.pipeline
                );
                if let Some(rate) = f.rate {
                    let _ = write!(t, ", paced at {}/s", group(rate.round() as u64));
                }
            }
            None => {
                let _ = write!(
                    t,
                    "  {} connections, {} {kind} messages{content}",
                    group(self.connections as u64),
                    bytes(self.size)
                );
            }
        }
        if matches!(self.mode, Mode::Echo | Mode::Bulk) {
            let _ = write!(t, ", {} in flight each", self.pipeline);
        }
        let _ = writeln!(
            t,
            ", {} thread{}",
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        );
        let row = |t: &mut String, name: &str, value: String| {
            let _ = writeln!(t, "  {name:<13} {value}");
        };
        if let Some(f) = self.fanout.as_ref().filter(|_| self.urls.len() > 1) {
            let spread: Vec<String> = self
                .urls
                .iter()
                .zip(&f.subscribers_per_url)
                .enumerate()
                .map(|(k, (url, n))| {
                    let publisher = if k == 0 { " (and the publisher)" } else { "" };
                    format!("{} on {url}{publisher}", group(*n as u64))
                })
                .collect();
            row(&mut t, "subscribers", spread.join(", "));
        }
        if let Some(d) = &self.deflate {
            let wire = match d.compressed_len {
                Some(len) => format!(
                    "{} sent as {} ({:.0}%, level {}, window {} bits, compressed once)",
                    bytes(self.size),
                    bytes(len),
                    100.0 * len as f64 / self.size.max(1) as f64,
                    deflate::LEVEL,
                    deflate::OWN_WINDOW_BITS
                ),
                None => format!("{} does not shrink: sent uncompressed", bytes(self.size)),
            };
            row(
                &mut t,
                "deflate",
                format!(
                    "server answered \"{}\"; {wire}",
                    d.response
                        .as_deref()
                        .unwrap_or("(no connection finished its handshake)")
                ),
            );
        }
        if self.mode == Mode::Idle {
            row(
                &mut t,
                "connected",
                format!(
                    "{} in {:.2} s, each echoed one message",
                    group(
                        self.server
                            .as_ref()
                            .map_or(self.connections as u64, |s| s.connections)
                    ),
                    self.connect_s
                ),
            );
            match (&self.server, self.rss_per_connection_kib()) {
                (Some(server), Some(per)) => row(
                    &mut t,
                    "server RSS",
                    format!(
                        "{} KiB before, {} KiB after: {per:.2} KiB per connection (pid {})",
                        group(server.rss_before_kib.unwrap_or(0)),
                        group(server.rss_after_kib.unwrap_or(0)),
                        server.pid
                    ),
                ),
                _ => row(
                    &mut t,
                    "server RSS",
                    "pass --server-pid PID to measure it".into(),
                ),
            }
        } else {
            row(
                &mut t,
                "measured",
                format!(
                    "{:.2} s after {:.2} s warmup",
                    self.measured_s, self.warmup_s
                ),
            );
            if let Some(f) = &self.fanout {
                row(
                    &mut t,
                    "published",
                    format!(
                        "{} ({}/s)",
                        group(f.published),
                        group(f.published_per_s.round() as u64)
                    ),
                );
            }
            row(
                &mut t,
                whats,
                format!(
                    "{} ({}/s){}",
                    group(self.messages),
                    group(self.rate.round() as u64),
                    match &self.fanout {
                        Some(f) => format!(
                            " to subscribers, each checked; the publisher got its {} back too",
                            group(f.copies)
                        ),
                        None => String::new(),
                    }
                ),
            );
            if self.mode != Mode::Handshakes {
                let way = match self.mode {
                    Mode::Fanout => "delivered",
                    _ => "each way",
                };
                row(
                    &mut t,
                    "payload",
                    format!("{:.2} MB/s {way}", self.mb_per_s),
                );
            }
            if let Some([p50, p90, p99, p999, max, _]) = self.latency {
                let from = match self.mode {
                    Mode::Fanout => "publish to delivery: ",
                    _ => "",
                };
                row(
                    &mut t,
                    "latency",
                    format!(
                        "{from}p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                        nanos(p50),
                        nanos(p90),
                        nanos(p99),
                        nanos(p999),
                        nanos(max)
                    ),
                );
            }
            match (&self.server, self.cpu_us_per_message(), self.server_util()) {
                (Some(server), Some(per), Some(util)) => row(
                    &mut t,
                    "server CPU",
                    format!(
                        "{per:.2} µs per {what}{}  ({:.2} s, {:.0}% of a core; pid {}, \
                         utime+stime)",
                        if self.fanout.is_some() {
                            ", the publisher's own copies counted"
                        } else {
                            ""
                        },
                        server.cpu_s.unwrap_or(0.0),
                        util * 100.0,
                        server.pid
                    ),
                ),
                (Some(server), _, _) => row(
                    &mut t,
                    "server CPU",
                    format!(
                        "not measured (no {whats}, or /proc/{} unreadable)",
                        server.pid
                    ),
                ),
                (None, _, _) => row(
                    &mut t,
                    "server CPU",
                    "pass --server-pid PID to measure it".into(),
                ),
            }
            if let Some(util) = self.client_util {
                let note = if self.saturated() {
                    format!(": saturated, so {whats}/s may measure this generator, not the server")
                } else {
                    String::new()
                };
                row(
                    &mut t,
                    "client CPU",
                    format!(
                        "{:.0}% of {} thread{}{note}",
                        util * 100.0,
                        self.threads,
                        if self.threads == 1 { "" } else { "s" }
                    ),
                );
            }
        }
        if !self.warnings.is_empty() {
            row(
                &mut t,
                "warnings",
                format!("{} (first: {})", self.warnings.len(), self.warnings[0]),
            );
        }
        t
    }

    fn json(&self) -> String {
        let mut j = String::from("{");
        let field = |j: &mut String, name: &str, value: String| {
            if j.len() > 1 {
                j.push(',');
            }
            let _ = write!(j, "\"{name}\":{value}");
        };
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v:.6}")
            } else {
                "null".into()
            }
        };
        let opt = |v: Option<f64>| v.map_or("null".into(), num);
        field(
            &mut j,
            "label",
            self.label.as_deref().map_or("null".into(), json_string),
        );
        field(&mut j, "mode", json_string(self.mode.name()));
        field(&mut j, "protocol", json_string(self.protocol.name()));
        field(&mut j, "kind", json_string(self.kind.name()));
        field(&mut j, "url", json_string(&self.urls.join(", ")));
        let urls: Vec<String> = self.urls.iter().map(|u| json_string(u)).collect();
        field(&mut j, "urls", format!("[{}]", urls.join(",")));
        field(&mut j, "connections", self.connections.to_string());
        field(&mut j, "size", self.size.to_string());
        field(&mut j, "pipeline", self.pipeline.to_string());
        field(&mut j, "threads", self.threads.to_string());
        field(&mut j, "warmup_s", num(self.warmup_s));
        field(&mut j, "measured_s", num(self.measured_s));
        field(&mut j, "connect_s", num(self.connect_s));
        field(&mut j, "messages", self.messages.to_string());
        field(&mut j, "per_s", num(self.rate));
        field(&mut j, "payload_mb_per_s", num(self.mb_per_s));
        field(
            &mut j,
            "latency_us",
            match self.latency {
                Some([p50, p90, p99, p999, max, mean]) => {
                    let us = |ns: u64| num(ns as f64 / 1e3);
                    format!(
                        "{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{},\"mean\":{}}}",
                        us(p50),
                        us(p90),
                        us(p99),
                        us(p999),
                        us(max),
                        us(mean)
                    )
                }
                None => "null".into(),
            },
        );
        field(
            &mut j,
            "server",
            match &self.server {
                Some(server) => format!(
                    "{{\"pid\":{},\"cpu_s\":{},\"cpu_util\":{},\"cpu_us_per_op\":{},\
                     \"rss_before_kib\":{},\"rss_after_kib\":{},\"rss_per_conn_kib\":{}}}",
                    server.pid,
                    opt(server.cpu_s),
                    opt(self.server_util()),
                    opt(self.cpu_us_per_message()),
                    server
                        .rss_before_kib
                        .map_or("null".into(), |v| v.to_string()),
                    server
                        .rss_after_kib
                        .map_or("null".into(), |v| v.to_string()),
                    opt(self.rss_per_connection_kib()),
                ),
                None => "null".into(),
            },
        );
        field(
            &mut j,
            "client",
            format!(
                "{{\"cpu_s\":{},\"cpu_util\":{},\"saturated\":{}}}",
                opt(self.client_cpu_s),
                opt(self.client_util),
                self.saturated()
            ),
        );
        field(&mut j, "payload", json_string(self.payload.name()));
        field(
            &mut j,
            "fanout",
            match &self.fanout {
                Some(f) => format!(
                    "{{\"published\":{},\"published_per_s\":{},\"publisher_copies\":{},\
                     \"deliveries_total\":{},\"rate\":{},\"subscribers_per_url\":[{}]}}",
                    f.published,
                    num(f.published_per_s),
                    f.copies,
                    self.server_ops(),
                    opt(f.rate),
                    f.subscribers_per_url
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => "null".into(),
            },
        );
        field(
            &mut j,
            "deflate",
            match &self.deflate {
                Some(d) => format!(
                    "{{\"offer\":{},\"response\":{},\"level\":{},\"window_bits\":{},\
                     \"sent_payload_bytes\":{}}}",
                    json_string(&d.offer),
                    d.response.as_deref().map_or("null".into(), json_string),
                    deflate::LEVEL,
                    deflate::OWN_WINDOW_BITS,
                    d.compressed_len.unwrap_or(self.size)
                ),
                None => "null".into(),
            },
        );
        let warnings: Vec<String> = self.warnings.iter().map(|w| json_string(w)).collect();
        field(&mut j, "warnings", format!("[{}]", warnings.join(",")));
        j.push('}');
        j
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = Vec::new();
    let mut end = digits.len();
    while end > 3 {
        groups.push(&digits[end - 3..end]);
        end -= 3;
    }
    groups.push(&digits[..end]);
    groups.reverse();
    groups.join(",")
}

fn bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn nanos(ns: u64) -> String {
    match ns {
        ns if ns >= 10_000_000 => format!("{:.0} ms", ns as f64 / 1e6),
        ns if ns >= 1_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        ns if ns >= 10_000 => format!("{:.0} µs", ns as f64 / 1e3),
        ns => format!("{:.1} µs", ns as f64 / 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_tight_and_monotonic() {
        let mut last = 0;
        for ns in (0..200_000u64).chain([1 << 30, (1 << 40) + 12345, u64::MAX / 2]) {
            let i = Histogram::index(ns);
            assert!(i >= last || ns < 200_000, "index not monotonic at {ns}");
            if ns < 200_000 {
                last = i;
            }
            assert!(i < BUCKETS);
            let v = Histogram::value(i);
            let err = (v as f64 - ns as f64).abs() / (ns.max(1) as f64);
            assert!(err <= 1.0 / 64.0 + 1e-9, "{ns} -> bucket {i} value {v}");
        }
        let mut h = Histogram::new();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((49_000..=51_000).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0).unwrap(), 100_000);
    }

    #[test]
    fn proc_stat_fields_after_the_command_name() {
        let line =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_proc_stat(line).unwrap(), 287);
    }

    #[test]
    fn shares_cover_everything_once() {
        let parts: Vec<_> = (0..3).map(|i| share(10, 3, i)).collect();
        assert_eq!(parts, [0..4, 4..7, 7..10]);
    }

    #[test]
    fn urls_and_source_ips() {
        let (addr, host, path) = parse_url("ws://127.0.0.1:9001/chat", Protocol::Ws).unwrap();
        assert_eq!(
            (addr.port(), host.as_str(), path.as_str()),
            (9001, "127.0.0.1:9001", "/chat")
        );
        assert!(
            parse_url("wss://x:1/", Protocol::Ws)
                .unwrap_err()
                .to_string()
                .contains("TLS")
        );
        assert!(parse_url("tcp://127.0.0.1:1", Protocol::Ws).is_err());
        assert_eq!(parse_url("127.0.0.1:7", Protocol::Tcp).unwrap().0.port(), 7);
        let ips = parse_source_ips("127.0.0.2-127.0.0.4,127.0.0.9", addr).unwrap();
        assert_eq!(ips.len(), 4);
        assert!(parse_source_ips("127.0.0.9-127.0.0.2", addr).is_err());
    }

    #[test]
    fn fanout_spreads_subscribers_over_urls_of_one_path() {
        let urls = |list: &[&str]| list.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        let two = urls(&[
            "ws://127.0.0.1:1/ws/topics/t",
            "ws://127.0.0.1:2/ws/topics/t",
        ]);
        let (targets, path) = parse_urls(&two, Mode::Fanout, Protocol::Ws).unwrap();
        assert_eq!(path, "/ws/topics/t");
        assert_eq!(
            targets.iter().map(|t| t.addr.port()).collect::<Vec<_>>(),
            [1, 2]
        );
        let err = |list: &[&str], mode| {
            parse_urls(&urls(list), mode, Protocol::Ws)
                .unwrap_err()
                .to_string()
        };
        for (list, mode, says) in [
            (
                &["ws://127.0.0.1:1/", "ws://127.0.0.1:2/"],
                Mode::Echo,
                "fanout",
            ),
            (
                &["ws://127.0.0.1:1/a", "ws://127.0.0.1:2/b"],
                Mode::Fanout,
                "path",
            ),
            (
                &["ws://127.0.0.1:1/a", "127.0.0.1:2/a"],
                Mode::Fanout,
                "scheme",
            ),
        ] {
            let e = err(list, mode);
            assert!(e.starts_with("--url") && e.contains(says), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }

        let mut a = args(Protocol::Ws, Kind::Binary, 20);
        a.mode = Mode::Fanout;
        a.pipeline = None;
        a.connections = Some(5);
        a.url = two.clone();
        let plan = Plan::new(&Settings::resolve(a).unwrap());
        let ports: Vec<u16> = (0..=5).map(|id| plan.target(id).addr.port()).collect();
        // Subscribers 0..5 alternate; the publisher (id 5) is on the first.
        assert_eq!(ports, [1, 2, 1, 2, 1, 1]);
        assert_eq!(
            (0..2).map(|k| subscribers_on(5, 2, k)).collect::<Vec<_>>(),
            [3, 2]
        );
        let mut few = args(Protocol::Ws, Kind::Binary, 20);
        few.mode = Mode::Fanout;
        few.pipeline = None;
        few.url = two;
        let e = Settings::resolve(few).err().unwrap().to_string();
        assert!(e.contains("--connections 2"), "{e}");
    }

    fn plan(protocol: Protocol, kind: Kind, size: usize) -> Plan {
        Plan::new(&Settings::resolve(args(protocol, kind, size)).unwrap())
    }

    fn args(protocol: Protocol, kind: Kind, size: usize) -> BenchArgs {
        BenchArgs {
            mode: Mode::Echo,
            url: vec![match protocol {
                Protocol::Ws => "ws://127.0.0.1:1/".into(),
                Protocol::Tcp => "tcp://127.0.0.1:1".into(),
            }],
            protocol,
            connections: Some(1),
            size: Some(size),
            pipeline: Some(3),
            kind,
            duration: None,
            messages: None,
            warmup: None,
            hold: None,
            threads: 1,
            server_pid: None,
            source_ips: None,
            timeout: Duration::from_secs(1),
            label: None,
            json: false,
            quiet: true,
            rate: None,
            deflate: false,
            payload: None,
        }
    }

    /// The server's side of the echo: unmasked frames, split as given.
    fn server_frames(payload: &[u8], opcode: OpCode, splits: &[usize]) -> Vec<u8> {
        frames(payload, opcode, splits, 0)
    }

    /// The server's side compressed: RSV1 on the first frame, the compressed bytes split.
    fn compressed_frames(payload: &[u8], opcode: OpCode, splits: &[usize]) -> Vec<u8> {
        let wire = deflate::compress(payload).expect("compressible payload");
        frames(&wire, opcode, splits, RSV1)
    }

    fn frames(payload: &[u8], opcode: OpCode, splits: &[usize], rsv: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pieces = Vec::new();
        let mut at = 0;
        for &s in splits {
            pieces.push(&payload[at..s]);
            at = s;
        }
        pieces.push(&payload[at..]);
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            let header = FrameHeader {
                fin: i == last,
                rsv: if i == 0 { rsv } else { 0 },
                opcode: if i == 0 { opcode } else { OpCode::Continuation },
                mask: None,
                payload_len: piece.len() as u64,
            };
            let mut bytes = [0; MAX_HEADER_LEN];
            let n = header.encode(&mut bytes);
            out.extend_from_slice(&bytes[..n]);
            out.extend_from_slice(piece);
        }
        out
    }

    fn feed(plan: &Plan, wire: &[u8], chunk: usize) -> Result<u64> {
        feed_rx(plan, &mut receiver(plan), wire, chunk)
    }

    /// A receiver as `open` leaves it: with an inflater when deflate is on (as if the server
    /// takes context over: the harder case), and sequence state in fanout.
    fn receiver(plan: &Plan) -> Rx {
        let mut rx = Rx::new(plan.read_buf);
        if plan.deflate.is_some() {
            rx.inflater = Some(deflate::Inflater::new(15, false));
        }
        if plan.mode == Mode::Fanout {
            rx.seq = Some(fanout::SeqState::new());
        }
        rx
    }

    fn feed_rx(plan: &Plan, rx: &mut Rx, wire: &[u8], chunk: usize) -> Result<u64> {
        let mut control = Vec::new();
        let mut done = 0;
        for piece in wire.chunks(chunk) {
            rx.buf[rx.end..rx.end + piece.len()].copy_from_slice(piece);
            rx.end += piece.len();
            done += rx.process(plan, &mut control)?;
        }
        Ok(done)
    }

    #[test]
    fn verifier_accepts_echoes_however_split() {
        for (kind, opcode) in [(Kind::Binary, OpCode::Binary), (Kind::Text, OpCode::Text)] {
            let plan = plan(Protocol::Ws, kind, 300);
            let mut wire = server_frames(&plan.payload, opcode, &[]);
            wire.extend(server_frames(&plan.payload, opcode, &[1, 200]));
            wire.extend(server_frames(&plan.payload, opcode, &[0, 0, 300]));
            for chunk in [1, 2, 3, 7, 100, 4096] {
                assert_eq!(feed(&plan, &wire, chunk).unwrap(), 3, "chunk {chunk}");
            }
        }
        let plan = plan(Protocol::Tcp, Kind::Binary, 5);
        let mut wire = 5u32.to_be_bytes().to_vec();
        wire.extend_from_slice(&plan.payload);
        wire.extend_from_slice(&wire.clone());
        assert_eq!(feed(&plan, &wire, 1).unwrap(), 2);
    }

    #[test]
    fn verifier_rejects_wrong_echoes() {
        let plan = plan(Protocol::Ws, Kind::Binary, 10);
        let mut wrong = plan.payload.clone();
        wrong[7] ^= 1;
        let err = feed(&plan, &server_frames(&wrong, OpCode::Binary, &[]), 3).unwrap_err();
        assert!(err.to_string().contains("byte 7"), "{err}");
        assert!(feed(&plan, &server_frames(&plan.payload, OpCode::Text, &[]), 64).is_err());
        assert!(
            feed(
                &plan,
                &server_frames(&plan.payload[..9], OpCode::Binary, &[]),
                64
            )
            .is_err()
        );
        let mut long = plan.payload.clone();
        long.push(0);
        assert!(feed(&plan, &server_frames(&long, OpCode::Binary, &[]), 64).is_err());
        assert!(
            feed(&plan, &[0x88, 0x02, 0x03, 0xe8], 64)
                .unwrap_err()
                .to_string()
                .contains("1000")
        );
        let tcp = super::tests::plan(Protocol::Tcp, Kind::Binary, 10);
        assert!(feed(&tcp, &[0, 0, 0, 9], 64).is_err());
    }

    #[test]
    fn frames_are_masked_and_batched() {
        let plan = plan(Protocol::Ws, Kind::Text, 20);
        assert_eq!(plan.frame_len, 2 + 4 + 20);
        assert_eq!(plan.batch_frames, 3);
        let (header, n) = FrameHeader::parse(&plan.batch).unwrap().unwrap();
        assert_eq!(header.opcode, OpCode::Text);
        let mut body = plan.batch[n..plan.frame_len].to_vec();
        apply_mask(&mut body, header.mask.unwrap(), 0);
        assert_eq!(body, plan.payload);
    }

    fn deflate_plan(mode: Mode, kind: Kind, size: usize) -> Plan {
        let mut a = args(Protocol::Ws, kind, size);
        a.mode = mode;
        a.deflate = true;
        a.pipeline = None;
        Plan::new(&Settings::resolve(a).unwrap())
    }

    fn fanout_plan(size: usize, deflate: bool) -> Plan {
        let mut a = args(Protocol::Ws, Kind::Binary, size);
        a.mode = Mode::Fanout;
        a.deflate = deflate;
        a.pipeline = None;
        Plan::new(&Settings::resolve(a).unwrap())
    }

    /// Message `seq` as the publisher means it: the payload with the number in front.
    fn numbered(plan: &Plan, seq: u64) -> Vec<u8> {
        let mut message = plan.payload.clone();
        message[..fanout::SEQ_LEN].copy_from_slice(&fanout::seq_prefix(seq));
        message
    }

    #[test]
    fn verifier_inflates_compressed_echoes_however_split() {
        for kind in [Kind::Binary, Kind::Text] {
            let plan = deflate_plan(Mode::Echo, kind, 3000);
            let opcode = plan.opcode;
            // Compressed whole, compressed across three frames, then one the server sent
            // uncompressed (below its threshold, say), all on one inflater.
            let mut wire = compressed_frames(&plan.payload, opcode, &[]);
            wire.extend(compressed_frames(&plan.payload, opcode, &[1, 50]));
            wire.extend(server_frames(&plan.payload, opcode, &[]));
            wire.extend(compressed_frames(&plan.payload, opcode, &[]));
            for chunk in [1, 7, 100, 4096] {
                assert_eq!(feed(&plan, &wire, chunk).unwrap(), 4, "chunk {chunk}");
            }
        }
    }

    #[test]
    fn verifier_rejects_wrong_compressed_echoes_and_misplaced_rsv1() {
        let plan = deflate_plan(Mode::Echo, Kind::Binary, 3000);
        let mut wrong = plan.payload.clone();
        wrong[2000] = b'#';
        let err = feed(&plan, &compressed_frames(&wrong, OpCode::Binary, &[]), 64).unwrap_err();
        assert!(err.to_string().contains("byte 2000"), "{err}");
        let long = [&plan.payload[..], b"x"].concat();
        let err = feed(&plan, &compressed_frames(&long, OpCode::Binary, &[]), 64).unwrap_err();
        assert!(err.to_string().contains("longer"), "{err}");
        // RSV1 on a continuation frame (RFC 7692 §6.1: first frame only).
        let mut bad = compressed_frames(&plan.payload, OpCode::Binary, &[10]);
        let second = 2 + 10;
        bad[second] |= 0x40;
        let err = feed(&plan, &bad, 64).unwrap_err();
        assert!(err.to_string().contains("RSV"), "{err}");
        // RSV1 without the extension negotiated.
        let plain = super::tests::plan(Protocol::Ws, Kind::Binary, 3000);
        let err = feed(
            &plain,
            &compressed_frames(&plain.payload, OpCode::Binary, &[]),
            64,
        )
        .unwrap_err();
        assert!(err.to_string().contains("without an extension"), "{err}");
    }

    #[test]
    fn deflate_frames_carry_rsv1_and_the_payload_compressed_once() {
        let plan = deflate_plan(Mode::Echo, Kind::Text, 2000);
        let (header, n) = FrameHeader::parse(&plan.batch).unwrap().unwrap();
        assert_eq!(header.rsv, RSV1);
        let mut body = plan.batch[n..plan.frame_len].to_vec();
        apply_mask(&mut body, header.mask.unwrap(), 0);
        let mut out = Vec::new();
        deflate::Inflater::new(15, true)
            .feed(&body, true, &mut |p| {
                out.extend_from_slice(p);
                Ok(())
            })
            .unwrap();
        assert_eq!(out, plan.payload);
        assert!(std::str::from_utf8(&plan.payload).is_ok());
        // Too small to shrink: the frame goes without RSV1.
        let small = deflate_plan(Mode::Echo, Kind::Binary, 20);
        assert_eq!(FrameHeader::parse(&small.batch).unwrap().unwrap().0.rsv, 0);
        assert!(small.deflate.as_ref().unwrap().compressed_len.is_none());
    }

    #[test]
    fn fanout_verifier_takes_syncs_then_every_number_in_order() {
        for deflate in [false, true] {
            let plan = fanout_plan(600, deflate);
            let op = plan.opcode;
            let frame = |seq| {
                if deflate {
                    compressed_frames(&numbered(&plan, seq), op, &[3])
                } else {
                    server_frames(&numbered(&plan, seq), op, &[5])
                }
            };
            let mut wire = server_frames(&[], op, &[]);
            wire.extend(server_frames(&[], op, &[]));
            wire.extend(frame(0));
            wire.extend(frame(1));
            for chunk in [1, 9, 4096] {
                let mut rx = receiver(&plan);
                assert_eq!(feed_rx(&plan, &mut rx, &wire, chunk).unwrap(), 2);
                let seq = rx.seq.as_ref().unwrap();
                assert_eq!((seq.syncs, seq.next), (2, 2));
                // A lost message is caught by the next one's number.
                let err = feed_rx(&plan, &mut rx, &frame(3), chunk).unwrap_err();
                assert!(err.to_string().contains("expected message #2"), "{err}");
            }
            // An empty message after numbered ones is not a sync.
            let mut rx = receiver(&plan);
            let mut late = frame(0);
            late.extend(server_frames(&[], op, &[]));
            let err = feed_rx(&plan, &mut rx, &late, 64).unwrap_err();
            assert!(err.to_string().contains("empty message"), "{err}");
        }
    }

    #[test]
    fn publisher_patches_the_number_into_the_masked_template() {
        for deflate in [false, true] {
            let plan = fanout_plan(1000, deflate);
            let seq = 0x0123_4567_89ab;
            // What Publisher::refill_messages does to each copy.
            let mut frame = plan.batch[..plan.frame_len].to_vec();
            let at = plan.seq_at;
            frame[at..at + fanout::SEQ_LEN].copy_from_slice(&fanout::seq_prefix(seq));
            apply_mask(
                &mut frame[at..at + fanout::SEQ_LEN],
                plan.mask,
                plan.seq_mask_offset,
            );
            let (header, n) = FrameHeader::parse(&frame).unwrap().unwrap();
            let mut body = frame[n..].to_vec();
            apply_mask(&mut body, header.mask.unwrap(), 0);
            let message = if deflate {
                assert_eq!(header.rsv, RSV1);
                let mut out = Vec::new();
                deflate::Inflater::new(15, true)
                    .feed(&body, true, &mut |p| {
                        out.extend_from_slice(p);
                        Ok(())
                    })
                    .unwrap();
                out
            } else {
                body
            };
            assert_eq!(message, numbered(&plan, seq), "deflate {deflate}");
        }
    }

    #[test]
    fn fanout_settings_are_checked_and_the_window_fits_the_send_queue() {
        let resolve = |f: &dyn Fn(&mut BenchArgs)| {
            let mut a = args(Protocol::Ws, Kind::Binary, 20);
            a.mode = Mode::Fanout;
            a.pipeline = None;
            f(&mut a);
            Settings::resolve(a).map_err(|e| e.to_string())
        };
        let error = |f: &dyn Fn(&mut BenchArgs)| resolve(f).err().unwrap_or_default();
        assert!(error(&|a| a.size = Some(15)).contains("--size 16"));
        assert!(error(&|a| a.rate = Some(0.0)).contains("--rate"));
        let window = |size| resolve(&|a| a.size = Some(size)).unwrap().pipeline;
        assert_eq!(window(20), 64);
        assert_eq!(window(16 << 10), 15);
        assert_eq!(window(1 << 20), 1);
        // At most a quarter of serve's default 1 MiB send queue per subscriber.
        for size in [20, 1 << 10, 16 << 10, 64 << 10] {
            assert!(
                window(size) * (size + MAX_HEADER_LEN) <= 256 << 10,
                "{size}"
            );
        }
        let mut echo = args(Protocol::Ws, Kind::Binary, 20);
        echo.rate = Some(10.0);
        assert!(Settings::resolve(echo).is_err());
        let mut tcp = args(Protocol::Tcp, Kind::Binary, 20);
        tcp.deflate = true;
        assert!(Settings::resolve(tcp).is_err());
    }
}
