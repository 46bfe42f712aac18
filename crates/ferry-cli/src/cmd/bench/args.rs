//! The command line of `ferry bench`: its arguments and the modes, protocols and payloads.

use std::time::Duration;

use clap::{Args, ValueEnum};

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
/// --http2 opens the WebSockets as streams of HTTP/2 connections (RFC 8441; cleartext, prior
/// knowledge), --http2-streams of them per connection: the same checks, the server's cost per
/// message or per idle WebSocket when they share connections.
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
///   ferry bench --http2 --url ws://127.0.0.1:8080/ws/echo --connections 100 --server-pid PID
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
    /// idle: connection N asks for the URL's path with "-N" appended, so each holds a pub/sub
    /// topic of its own (ws://HOST/ws/topics/idle: idle-0, idle-1, ...) and hears nobody
    /// else's message.
    #[arg(long)]
    pub path_per_connection: bool,
    /// idle: send nothing; a connection counts as open once its handshake succeeds. Without
    /// it each connection echoes one message first, which on a shared pub/sub topic would
    /// reach every other connection.
    #[arg(long)]
    pub silent: bool,
    /// fanout: publish at most this many messages per second [as fast as the window allows].
    #[arg(long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,
    /// Offer permessage-deflate (`client_no_context_takeover; client_max_window_bits`), send
    /// the payload compressed (once, level 6, 4 KiB window) and inflate what comes back. Implies
    /// --payload json.
    #[arg(long)]
    pub deflate: bool,
    /// Open the WebSockets as streams of HTTP/2 connections (RFC 8441, cleartext with prior
    /// knowledge), --http2-streams on each, instead of one TCP connection each.
    #[arg(long)]
    pub http2: bool,
    /// With --http2: WebSockets per HTTP/2 connection (keep it within the server's
    /// --http2-max-streams, 100 by default).
    #[arg(long, value_name = "N", default_value_t = 100, requires = "http2")]
    pub http2_streams: usize,
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
    pub(super) fn name(self) -> &'static str {
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
    pub(super) fn name(self) -> &'static str {
        match self {
            PayloadKind::Pattern => "pattern",
            PayloadKind::Json => "json",
        }
    }
}

impl Protocol {
    pub(super) fn name(self) -> &'static str {
        match self {
            Protocol::Ws => "ws",
            Protocol::Tcp => "tcp",
        }
    }
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Binary => "binary",
            Kind::Text => "text",
        }
    }
}
