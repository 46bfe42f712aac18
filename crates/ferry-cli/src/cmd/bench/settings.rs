//! Settings: the arguments, checked, with each mode's defaults filled in, and the servers
//! they name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ferry::Transport;
use ferry::proto::frame::MAX_HEADER_LEN;

use super::args::{BenchArgs, Kind, Mode, PayloadKind, Protocol};
use super::proc::read_proc_stat;
use super::sequence::SEQ_LEN;

pub(super) struct Settings {
    pub(super) mode: Mode,
    pub(super) protocol: Protocol,
    pub(super) kind: Kind,
    /// The servers, in --url order: one, or in fanout one or more nodes sharing the topic.
    pub(super) targets: Vec<Target>,
    /// The request path, the same on every target.
    pub(super) path: String,
    /// Idle mode: each connection's path gets "-N" (its number) appended.
    pub(super) path_per_connection: bool,
    /// Idle mode: connections send nothing after the handshake.
    pub(super) silent: bool,
    pub(super) connections: usize,
    pub(super) size: usize,
    pub(super) pipeline: usize,
    pub(super) duration: Option<Duration>,
    pub(super) messages: Option<u64>,
    pub(super) warmup: Duration,
    pub(super) hold: Duration,
    pub(super) threads: usize,
    pub(super) server_pid: Option<u32>,
    pub(super) sources: Vec<IpAddr>,
    pub(super) timeout: Duration,
    pub(super) label: Option<String>,
    pub(super) json: bool,
    pub(super) quiet: bool,
    pub(super) rate: Option<f64>,
    pub(super) deflate: bool,
    pub(super) payload: PayloadKind,
    /// --http2: WebSockets per HTTP/2 connection.
    pub(super) http2_streams: Option<usize>,
}

impl Settings {
    pub(super) fn resolve(args: BenchArgs) -> Result<Settings> {
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
            if size < SEQ_LEN {
                bail!(
                    "--size {size}: fanout messages start with a {}-byte sequence number; use \
                     --size {} or more",
                    SEQ_LEN,
                    SEQ_LEN
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
        if args.http2 {
            if args.protocol == Protocol::Tcp {
                bail!("--http2 carries WebSockets; drop it with --protocol tcp");
            }
            if args.source_ips.is_some() {
                bail!("--http2 with --source-ips: the streams share a few connections; drop one");
            }
            if args.http2_streams == 0 {
                bail!("--http2-streams 0: need at least 1 WebSocket per HTTP/2 connection");
            }
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
        } else if args.path_per_connection {
            bail!("--path-per-connection applies to idle mode only; drop it for {m} mode");
        } else if args.silent {
            bail!("--silent applies to idle mode only; drop it for {m} mode");
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
            path_per_connection: args.path_per_connection,
            silent: args.silent,
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
            http2_streams: args.http2.then_some(args.http2_streams),
        })
    }
}

/// One server to connect to: a --url, resolved.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub(super) url: String,
    pub(super) addr: SocketAddr,
    /// The Host header: the URL's authority.
    pub(super) host: String,
}

/// The --url values, resolved, and their common path: one URL, or in fanout one or more (nodes
/// sharing the topic) with the same scheme and path.
pub(super) fn parse_urls(
    urls: &[String],
    mode: Mode,
    protocol: Protocol,
) -> Result<(Vec<Target>, String)> {
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

/// Resolves a `--url`: `ws://host:port/path` as every ferry client reads it (`ferry::Address`),
/// or, for the plain TCP floor, `tcp://host:port` or `host:port`. Returns the address, the
/// Host header and the path.
pub(super) fn parse_url(url: &str, protocol: Protocol) -> Result<(SocketAddr, String, String)> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("wss://") {
        bail!("--url {url}: TLS is not supported by the load generator; measure over ws://");
    }
    if lower.starts_with("ws://") {
        let address = ferry::Address::parse(url).map_err(|e| anyhow!("--url {e}"))?;
        let Transport::Tcp { host, port } = &address.transport else {
            bail!("--url {url}: the load generator connects over TCP; use ws://HOST:PORT/PATH");
        };
        let addr = resolve(url, &(host.as_str(), *port))?;
        return Ok((addr, address.host_header, address.path));
    }
    let rest = match lower.strip_prefix("tcp://") {
        Some(_) if protocol == Protocol::Ws => {
            bail!("--url {url}: a tcp:// URL needs --protocol tcp")
        }
        Some(_) => &url["tcp://".len()..],
        None if url.contains("://") => {
            bail!("--url {url}: use ws://HOST:PORT/PATH (or tcp://HOST:PORT with --protocol tcp)")
        }
        None => url,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("--url {url}: no host; use e.g. tcp://127.0.0.1:9004");
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !authority.ends_with(']') && port.parse::<u16>().is_ok());
    if !has_port {
        bail!("--url {url}: no port; use e.g. tcp://127.0.0.1:9004");
    }
    let addr = resolve(url, &authority)?;
    Ok((addr, authority.to_owned(), "/".to_owned()))
}

/// The first IPv4 address `target` resolves to, or its first address.
fn resolve(url: &str, target: &impl ToSocketAddrs) -> Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .with_context(|| format!("--url {url}: cannot resolve it"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| anyhow!("--url {url}: resolves to no address"))
}

/// `127.0.0.2-127.0.0.9`, `127.0.0.2,127.0.0.3` or one address.
pub(super) fn parse_source_ips(text: &str, target: SocketAddr) -> Result<Vec<IpAddr>> {
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
