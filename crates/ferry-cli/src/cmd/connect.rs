//! `ferry connect URL`: a WebSocket client on stdin and stdout, for scripts and for poking at
//! servers by hand (websocat's everyday use).

use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use clap::Args;
use ferry::reconnect::{Backoff, Client, Event, Policy, Update};
use ferry::{CloseCode, CloseInfo, Config, Incoming, Initiator, Message, Receiver, Sender};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::limits::{DeflateArgs, LimitArgs};
use crate::size::{parse_duration, parse_size};

/// Connect to a WebSocket server: stdin lines go out as text messages, received messages are
/// printed one per line.
///
/// Exits 0 once stdin has ended and the close handshake has completed (or the server closed
/// with 1000). Otherwise it prints one line saying why and exits with:
///   1  bad flags or a local I/O error      4  handshake refused (HTTP status) or timed out
///   3  could not connect (refused, DNS)     5  TLS error
///   6  the connection ended abnormally, or the server closed with a code other than 1000
///
/// Examples:
///   ferry connect ws://127.0.0.1:9001/
///   echo hello | ferry connect --linger 1s ws://127.0.0.1:9001/chat -H 'Authorization: Bearer TOKEN'
///   ferry connect --reconnect --reconnect-max-delay 10s wss://feed.example/ws
///   ferry connect --binary ws://127.0.0.1:9001/ < image.png > echoed.png
///   ferry connect --base64 ws://127.0.0.1:9001/        # binary messages as base64 lines
///   ferry connect --ca my-ca.pem wss://internal.example:8443/feed
///   ferry connect --exec 'sh -c "read x; echo got $x"' ws://127.0.0.1:9001/
///   ferry connect --ping-interval 20s --protocol chat.v2 --origin https://example.com ws+unix:///run/app.sock:/ws
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ConnectArgs {
    /// ws://HOST[:PORT]/PATH, wss://HOST[:PORT]/PATH or ws+unix:///SOCKET[:/PATH].
    pub url: String,
    /// Send raw stdin chunks as binary messages, and write received messages as raw bytes (no
    /// newline added).
    #[arg(long, conflicts_with = "base64")]
    pub binary: bool,
    /// Each stdin line is base64 and becomes a binary message; every received message is
    /// printed as one base64 line.
    #[arg(long)]
    pub base64: bool,
    /// Split outgoing messages into frames of at most this many bytes.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub fragment: Option<usize>,
    /// Close code sent after stdin ends: 1000-1003, 1007-1014, or 3000-4999.
    #[arg(long, value_name = "CODE", default_value_t = 1000)]
    pub close_code: u16,
    /// Close reason sent after stdin ends (at most 123 bytes of UTF-8).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub close_reason: String,
    /// Run CMD with `sh -c` and connect its stdout (outgoing) and stdin (incoming) to the
    /// socket instead of ferry's own stdin and stdout.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// With --binary: the largest chunk read from stdin at once, so the largest message sent.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "64KiB")]
    pub chunk_size: usize,
    /// After the input ends, keep receiving this long before closing: an echo server stops
    /// answering once it has the close frame, so replies still on their way would be cut off.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    pub linger: Duration,
    /// Reconnect when the connection drops or cannot be opened, with exponential backoff and
    /// jitter; lines typed while disconnected are queued (see --reconnect-queue).
    #[arg(long)]
    pub reconnect: bool,
    /// With --reconnect: the first backoff delay (it doubles per failure).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "250ms")]
    pub reconnect_delay: Duration,
    /// With --reconnect: the longest backoff delay.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub reconnect_max_delay: Duration,
    /// With --reconnect: give up after this many failed attempts in a row (default: never).
    #[arg(long, value_name = "N")]
    pub reconnect_attempts: Option<u32>,
    /// With --reconnect: bytes of input kept while disconnected; past it, input waits.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "1MiB")]
    pub reconnect_queue: usize,
    /// Open the WebSocket as a stream of an HTTP/2 connection (RFC 8441): ALPN h2 for wss://,
    /// prior knowledge for ws://. Falls back to HTTP/1.1 when the server does not allow it.
    #[arg(long, conflicts_with = "reconnect")]
    pub http2: bool,
    /// Print nothing on stderr but the final error, if any.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The flags of every command that opens client connections: handshake, TLS, proxy, timeouts,
/// keepalive, limits and compression.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Extra request header, 'Name: value'; repeat for more.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// A bearer token (e.g. from ferry token): sent as Authorization: Bearer TOKEN.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Subprotocol to offer (Sec-WebSocket-Protocol); repeat to offer several, in order.
    #[arg(long = "protocol", value_name = "NAME")]
    pub protocols: Vec<String>,
    /// Origin header to send.
    #[arg(long, value_name = "URL")]
    pub origin: Option<String>,
    /// Send a ping this often (off by default).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ping_interval: Option<Duration>,
    /// Fail the connection when a pong is this late (with --ping-interval).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "20s")]
    pub ping_timeout: Duration,
    /// wss://: trust only the CA certificates in this PEM file, not the built-in roots (like
    /// curl's --cacert).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// wss://: also trust the platform's certificate store (the system bundle, or the files
    /// SSL_CERT_FILE and SSL_CERT_DIR name), not only the built-in Mozilla roots.
    #[arg(long, conflicts_with = "ca")]
    pub platform_roots: bool,
    /// wss://: accept any server certificate (no check of issuer, name or dates), like curl
    /// -k. Encrypted, but anyone on the path can pose as the server: for debugging only.
    #[arg(short = 'k', long, conflicts_with_all = ["ca", "platform_roots"])]
    pub insecure: bool,
    /// wss://: present this client certificate chain (PEM); needs --client-key.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<std::path::PathBuf>,
    /// wss://: the private key (PEM) of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<std::path::PathBuf>,
    /// Connect through this proxy: http://[USER:PASS@]HOST:PORT (CONNECT), socks5://... or
    /// socks5h://... (the proxy resolves the name). Without it, the proxy comes from
    /// https_proxy/HTTPS_PROXY (wss://), http_proxy (ws://), ALL_PROXY and NO_PROXY, as curl
    /// reads them.
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    pub proxy: Option<String>,
    /// Ignore the proxy environment variables: connect directly.
    #[arg(long)]
    pub no_proxy: bool,
    /// Time allowed to open the TCP or Unix socket connection (through the proxy, if any).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// wss://: time allowed for the TLS handshake.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub tls_timeout: Duration,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub deflate: DeflateArgs,
}

/// How a `ferry connect` run failed: an exit status and one line saying why.
#[derive(Debug)]
pub struct Failure {
    /// The process exit status.
    pub status: u8,
    /// One line: what happened and, where there is one, the fix.
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            status: 1,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Exit statuses, documented in `ferry connect --help`.
pub mod status {
    /// Bad flags, or a local I/O error (stdin, stdout, the --exec program).
    pub const USAGE: u8 = 1;
    /// The transport could not be opened: refused, unreachable, unknown host, timeout.
    pub const CONNECT: u8 = 3;
    /// The server did not upgrade: an HTTP status, a bad 101, or a handshake timeout.
    pub const HANDSHAKE: u8 = 4;
    /// The TLS handshake failed.
    pub const TLS: u8 = 5;
    /// The connection ended abnormally or the server closed with a code other than 1000.
    pub const CLOSED: u8 = 6;
}

pub fn run(args: ConnectArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ferry connect: cannot start the runtime: {err}");
            return ExitCode::from(status::USAGE);
        }
    };
    let result = runtime.block_on(connect(args));
    // A read of stdin may still be blocked on its thread (the server closed first): do not
    // wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("ferry connect: {failure}");
            ExitCode::from(failure.status)
        }
    }
}

/// What the stdin side turns into messages, and how received messages are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Lines,
    Binary,
    Base64,
}

/// Builds the client config from the flags, checking each one.
fn config(args: &ConnectArgs) -> Result<Config, Failure> {
    let mut config = args.client.config()?;
    config.fragment_size = args.fragment;
    if args.fragment == Some(0) {
        return Err(Failure::usage(
            "--fragment 0: a frame carries at least one byte; use --fragment 1 or more",
        ));
    }
    if args.chunk_size == 0 {
        return Err(Failure::usage(
            "--chunk-size 0: use at least 1 byte, e.g. --chunk-size 64KiB",
        ));
    }
    if !CloseCode::from(args.close_code).is_sendable() {
        return Err(Failure::usage(format!(
            "--close-code {}: not a code an endpoint may send; use 1000-1003, 1007-1014 or 3000-4999",
            args.close_code
        )));
    }
    if args.close_reason.len() > ferry::proto::close::MAX_REASON_LEN {
        return Err(Failure::usage(format!(
            "--close-reason: {} bytes is over the 123 a close frame can carry; shorten it",
            args.close_reason.len()
        )));
    }
    Ok(config)
}

impl ClientArgs {
    /// The client config these flags describe; every flag checked, errors naming it.
    pub fn config(&self) -> Result<Config, Failure> {
        let args = self;
        let mut headers = Vec::new();
        for header in &args.headers {
            let Some((name, value)) = header.split_once(':') else {
                return Err(Failure::usage(format!(
                    "-H {header:?}: a header is 'Name: value', e.g. -H 'Authorization: Bearer TOKEN'"
                )));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(Failure::usage(format!(
                    "-H {header:?}: the header name is empty; write -H 'Name: value'"
                )));
            }
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        if let Some(token) = &args.token {
            if headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            {
                return Err(Failure::usage(
                    "--token and -H 'Authorization: ...' both set the Authorization header; give one",
                ));
            }
            headers.push((
                "Authorization".to_owned(),
                format!("Bearer {}", token.trim()),
            ));
        }
        let tls = if args.ca.is_some()
            || args.client_cert.is_some()
            || args.platform_roots
            || args.insecure
        {
            let options = ferry::tls::TlsOptions {
                insecure_skip_verify: args.insecure,
                platform_roots: args.platform_roots,
                ca_file: args.ca.clone(),
                only_ca_file: args.ca.is_some(),
                client_cert: args.client_cert.clone(),
                client_key: args.client_key.clone(),
            };
            let built = options.client_config().map_err(|err| {
                Failure::usage(format!(
                    "{err}; check --ca, --client-cert and --client-key (PEM files)"
                ))
            })?;
            Some(built)
        } else {
            None
        };
        let proxy = match (&args.proxy, args.no_proxy) {
            (Some(url), _) => ferry::proxy::ProxySetting::Use(
                ferry::proxy::Proxy::parse(url)
                    .map_err(|err| Failure::usage(format!("--proxy: {err}")))?,
            ),
            (None, true) => ferry::proxy::ProxySetting::None,
            (None, false) => ferry::proxy::ProxySetting::FromEnv,
        };
        let mut config = Config {
            proxy,
            connect_timeout: args.connect_timeout,
            tls_timeout: args.tls_timeout,
            tls,
            limits: args.limits.limits(),
            deflate: args.deflate.config(),
            protocols: args.protocols.clone(),
            origin: args.origin.clone(),
            headers,
            ..Config::default()
        };
        if let Some(interval) = args.ping_interval {
            if interval.is_zero() {
                return Err(Failure::usage(
                    "--ping-interval 0: use a positive interval such as 20s",
                ));
            }
            config = config.with_keepalive(interval, args.ping_timeout);
        }
        Ok(config)
    }
}

/// Turns a failure to connect into an exit status and a line with the likely fix.
pub fn connect_failure(url: &str, err: &ferry::Error) -> Failure {
    use ferry::proto::handshake::HandshakeError;
    let (status, message) = match err {
        ferry::Error::InvalidUrl { .. } => (status::USAGE, format!("{err}")),
        ferry::Error::Io(io) => {
            let hint = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "; is the server running? check the host and port"
                }
                std::io::ErrorKind::NotFound => "; check the socket path",
                std::io::ErrorKind::TimedOut => "; check the address",
                _ => "",
            };
            (status::CONNECT, format!("{url}: {io}{hint}"))
        }
        ferry::Error::HandshakeTimeout => (
            status::HANDSHAKE,
            format!(
                "{url}: the server did not complete the handshake in time; raise --handshake-timeout if it is slow"
            ),
        ),
        ferry::Error::Handshake(HandshakeError::Status { code, reason }) => (
            status::HANDSHAKE,
            format!(
                "{url}: the server answered HTTP {code} {} instead of switching to WebSocket; check the path, -H and --origin",
                reason.escape_debug()
            ),
        ),
        ferry::Error::Handshake(HandshakeError::InvalidHeader(_)) => (
            status::USAGE,
            format!("{err}; check the -H, --protocol and --origin values"),
        ),
        ferry::Error::Handshake(_) => (status::HANDSHAKE, format!("{url}: {err}")),
        ferry::Error::ConnectTimeout => (
            status::CONNECT,
            format!("{url}: connecting timed out; check the address, or raise --connect-timeout"),
        ),
        ferry::Error::Tls(_) => (
            status::TLS,
            format!("{url}: {err}; for a private CA use --ca FILE"),
        ),
        ferry::Error::TlsTimeout => (
            status::TLS,
            format!(
                "{url}: the TLS handshake timed out; is it a TLS port? raise --tls-timeout if it is slow"
            ),
        ),
        ferry::Error::Proxy(_) => (
            status::CONNECT,
            format!(
                "{url}: {err}; check --proxy or the *_proxy variables (--no-proxy ignores them)"
            ),
        ),
        ferry::Error::TlsConfig(_) => (
            status::USAGE,
            format!("{err}; check --ca, --client-cert and --client-key"),
        ),
        _ => (status::CONNECT, format!("{url}: {err}")),
    };
    Failure { status, message }
}

async fn connect(args: ConnectArgs) -> Result<(), Failure> {
    let config = config(&args)?;
    if args.client.insecure && !args.quiet {
        eprintln!("ferry connect: warning: --insecure: the server's certificate is not checked");
    }
    let mode = if args.binary {
        Mode::Binary
    } else if args.base64 {
        Mode::Base64
    } else {
        Mode::Lines
    };
    if args.reconnect {
        return reconnecting(args, config, mode).await;
    }
    let connected = if args.http2 {
        ferry::http2::connect(&args.url, &config).await
    } else {
        ferry::connect_with(&args.url, &config).await
    };
    let (sender, receiver, response) = connected.map_err(|err| connect_failure(&args.url, &err))?;
    if !args.quiet {
        let protocol = response.protocol.as_deref().unwrap_or("none");
        let extensions = match sender.deflate() {
            Some(params) => params.to_header(),
            None => "none".into(),
        };
        // 101 answers an HTTP/1.1 upgrade; an HTTP/2 extended CONNECT gets a 2xx.
        let http = if response.status == 101 { "1.1" } else { "2" };
        eprintln!(
            "ferry connect: connected to {} over HTTP/{http} (subprotocol: {protocol}; extensions: {extensions})",
            args.url
        );
    }
    let close_code = CloseCode::from(args.close_code);
    let io = Io::open(args.exec.as_deref())?;
    let Io {
        input,
        output,
        child,
    } = io;
    let max_message = config.limits.max_message_size;
    let input_sender = sender.clone();
    let linger = args.linger;
    let chunk = args.chunk_size;
    let reason = args.close_reason.clone();
    let input_ended = Arc::new(AtomicBool::new(false));
    let input_ended_flag = input_ended.clone();
    let input_task = tokio::spawn(async move {
        let outlet = Outlet::Socket(input_sender.clone());
        let result = pump_input(input, &outlet, mode, chunk, max_message).await;
        tokio::time::sleep(linger).await;
        // Input ended (or failed): close, after every queued message has gone out.
        let (code, reason) = match &result {
            Ok(()) => (close_code, reason.as_str()),
            Err(_) => (CloseCode::GOING_AWAY, "client input failed"),
        };
        input_ended_flag.store(result.is_ok(), Ordering::Release);
        input_sender.close(code, reason).await;
        result
    });
    let output_result = pump_output(receiver, output, mode, &sender).await;
    // The connection is over: whatever input was still coming has nowhere to go.
    let input_result = if input_task.is_finished() {
        input_task
            .await
            .unwrap_or_else(|err| Err(Failure::usage(format!("input task failed: {err}"))))
    } else {
        input_task.abort();
        Ok(())
    };
    if let Some(mut child) = child {
        // Its stdin is closed (the output side was dropped): give it the close timeout to end.
        match tokio::time::timeout(config.limits.close_timeout, child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill().await;
            }
        }
    }
    let info = output_result?;
    input_result?;
    verdict(
        &info,
        close_code,
        input_ended.load(Ordering::Acquire),
        args.quiet,
    )
}

/// The exit verdict from how the connection ended. `sent`: the code this end closes with;
/// `input_ended`: the input ended and this end started the close handshake.
fn verdict(
    info: &CloseInfo,
    sent: CloseCode,
    input_ended: bool,
    quiet: bool,
) -> Result<(), Failure> {
    let reason = if info.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", info.reason.as_str().escape_debug())
    };
    let closed = |message: String| {
        Err(Failure {
            status: status::CLOSED,
            message,
        })
    };
    match (info.initiator, info.clean) {
        // Some servers (websocat 1.x among them) drop the connection when the close frame
        // arrives instead of answering it. Everything was sent; only the answer is missing.
        (_, false) if info.code == CloseCode::ABNORMAL && input_ended => {
            if !quiet {
                eprintln!(
                    "ferry connect: closed; the server dropped the connection instead of answering the close frame"
                );
            }
            Ok(())
        }
        (_, false) if info.code == CloseCode::ABNORMAL => closed(format!(
            "the connection ended without a close handshake: 1006{reason}"
        )),
        // The server's answer carries its own code: one other than ours, 1000 or none means
        // it had failed the connection when our close crossed its own (a message over its
        // limit, say).
        (Initiator::Local, true)
            if info.code != sent
                && info.code != CloseCode::NORMAL
                && info.code != CloseCode::NO_STATUS =>
        {
            closed(format!(
                "the server closed the connection with {} {}{reason}",
                info.code,
                info.code.name()
            ))
        }
        (Initiator::Local, true) => {
            if !quiet {
                eprintln!("ferry connect: closed cleanly ({})", info.code);
            }
            Ok(())
        }
        (Initiator::Local, false) => closed(format!(
            "this end failed the connection with {}{reason}",
            info.code
        )),
        (Initiator::Remote, _) if info.code == CloseCode::NORMAL => {
            if !quiet {
                eprintln!("ferry connect: the server closed the connection (1000)");
            }
            Ok(())
        }
        (Initiator::Remote, _) => closed(format!(
            "the server closed the connection with {} {}{reason}",
            info.code,
            info.code.name()
        )),
    }
}

/// `--reconnect`: the same pumps around a [`Client`] that reconnects by itself.
async fn reconnecting(args: ConnectArgs, config: Config, mode: Mode) -> Result<(), Failure> {
    if args.reconnect_attempts == Some(0) {
        return Err(Failure::usage(
            "--reconnect-attempts 0: at least one attempt is needed; leave it out to retry forever",
        ));
    }
    if args.reconnect_delay.is_zero() || args.reconnect_max_delay < args.reconnect_delay {
        return Err(Failure::usage(
            "--reconnect-delay must be positive and at most --reconnect-max-delay, e.g. --reconnect-delay 250ms --reconnect-max-delay 30s",
        ));
    }
    let policy = Policy {
        backoff: Backoff {
            initial: args.reconnect_delay,
            max: args.reconnect_max_delay,
            ..Backoff::default()
        },
        max_attempts: args.reconnect_attempts,
        queue_bytes: args.reconnect_queue,
        ..Policy::default()
    };
    let (client, mut updates) = Client::start(&args.url, config.clone(), policy)
        .map_err(|err| connect_failure(&args.url, &err))?;
    let Io {
        input,
        output,
        child,
    } = Io::open(args.exec.as_deref())?;
    let close_code = CloseCode::from(args.close_code);
    let reason = args.close_reason.clone();
    let input_client = client.clone();
    let linger = args.linger;
    let chunk = args.chunk_size;
    let max_message = config.limits.max_message_size;
    let input_task = tokio::spawn(async move {
        let outlet = Outlet::Reconnecting(input_client.clone());
        let result = pump_input(input, &outlet, mode, chunk, max_message).await;
        tokio::time::sleep(linger).await;
        input_client.close(close_code, &reason);
        result
    });
    let mut output = tokio::io::BufWriter::new(output);
    let mut last_failure: Option<Failure> = None;
    let mut last_close: Option<CloseInfo> = None;
    while let Some(update) = updates.recv().await {
        match update {
            Update::Message(message) => {
                if write_message(&mut output, &message, mode).await.is_err() {
                    client.close(CloseCode::GOING_AWAY, "client output closed");
                }
            }
            Update::Event(event) => {
                if !args.quiet && !matches!(event, Event::Stopped) {
                    eprintln!("ferry connect: {event}");
                }
                match event {
                    Event::Connected { .. } => last_failure = None,
                    Event::ConnectFailed { error, .. } => {
                        last_failure = Some(connect_failure(&args.url, &error));
                    }
                    Event::Disconnected(info) => last_close = Some(info),
                    _ => {}
                }
            }
        }
    }
    let _ = output.flush().await;
    drop(output);
    let input_done = input_task.is_finished();
    let input_result = if input_done {
        input_task
            .await
            .unwrap_or_else(|err| Err(Failure::usage(format!("input task failed: {err}"))))
    } else {
        input_task.abort();
        Ok(())
    };
    if let Some(mut child) = child
        && tokio::time::timeout(config.limits.close_timeout, child.wait())
            .await
            .is_err()
    {
        let _ = child.kill().await;
    }
    input_result?;
    if let Some(failure) = last_failure {
        return Err(failure);
    }
    match last_close {
        Some(info) => verdict(&info, close_code, input_done, args.quiet),
        None => Ok(()),
    }
}

/// Where outgoing bytes come from and received messages go: this process's stdin and stdout,
/// or a child's stdout and stdin.
struct Io {
    input: Box<dyn AsyncRead + Unpin + Send>,
    output: Box<dyn AsyncWrite + Unpin + Send>,
    child: Option<tokio::process::Child>,
}

impl Io {
    fn open(exec: Option<&str>) -> Result<Io, Failure> {
        let Some(command) = exec else {
            return Ok(Io {
                input: Box::new(tokio::io::stdin()),
                output: Box::new(tokio::io::stdout()),
                child: None,
            });
        };
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                Failure::usage(format!(
                    "--exec {command:?}: cannot start it with sh -c: {err}"
                ))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Failure::usage(format!(
                "--exec {command:?}: the program's stdin and stdout are not available"
            )));
        };
        Ok(Io {
            input: Box::new(stdout),
            output: Box::new(stdin),
            child: Some(child),
        })
    }
}

/// Where input messages go: one connection, or the reconnecting client's queue.
enum Outlet {
    Socket(Sender),
    Reconnecting(Client),
}

impl Outlet {
    /// Sends or queues a message; false once nothing more can be sent.
    async fn send(&self, message: Message) -> bool {
        match self {
            Outlet::Socket(sender) => sender.send(message).await.is_ok(),
            // Disconnected with a full queue: the input waits until the reconnect drains it.
            Outlet::Reconnecting(client) => client.send_wait(message).await.is_ok(),
        }
    }
}

/// Reads the input until it ends and sends what it holds. Returns when the input ends or the
/// connection is closing.
async fn pump_input(
    input: Box<dyn AsyncRead + Unpin + Send>,
    sender: &Outlet,
    mode: Mode,
    chunk: usize,
    max_message: usize,
) -> Result<(), Failure> {
    let mut input = BufReader::with_capacity(chunk.min(1 << 20), input);
    let mut number = 0u64;
    loop {
        let message = match mode {
            Mode::Binary => {
                let mut buf = BytesMut::with_capacity(chunk);
                let read = (&mut input)
                    .take(chunk as u64)
                    .read_buf(&mut buf)
                    .await
                    .map_err(|err| Failure::usage(format!("reading the input: {err}")))?;
                if read == 0 {
                    return Ok(());
                }
                Message::Binary(buf.freeze())
            }
            Mode::Lines | Mode::Base64 => {
                let mut line = Vec::new();
                let read = read_line(&mut input, &mut line, max_message).await?;
                if read == 0 {
                    return Ok(());
                }
                number += 1;
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if mode == Mode::Base64 {
                    let trimmed = line.trim_ascii();
                    let data = BASE64.decode(trimmed).map_err(|err| {
                        Failure::usage(format!(
                            "input line {number} is not base64 ({err}); drop --base64 to send it as text"
                        ))
                    })?;
                    Message::Binary(Bytes::from(data))
                } else {
                    let text = String::from_utf8(line).map_err(|_| {
                        Failure::usage(format!(
                            "input line {number} is not UTF-8, so it cannot be a text message; use --binary or --base64"
                        ))
                    })?;
                    Message::text(text)
                }
            }
        };
        if !sender.send(message).await {
            // The connection is closing; the output side reports how it ended.
            return Ok(());
        }
    }
}

/// Reads one line, newline included, refusing lines longer than `max` bytes.
async fn read_line<R: AsyncBufReadExt + Unpin>(
    input: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> Result<usize, Failure> {
    loop {
        let available = input
            .fill_buf()
            .await
            .map_err(|err| Failure::usage(format!("reading the input: {err}")))?;
        if available.is_empty() {
            return Ok(line.len());
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..take]);
        input.consume(take);
        // The newline itself is not part of the message.
        let content = line.len() - usize::from(done);
        if content > max {
            return Err(Failure::usage(format!(
                "an input line is over {max} bytes, the --max-message-size; raise it or use --binary"
            )));
        }
        if done {
            return Ok(line.len());
        }
    }
}

/// Writes every received message to the output until the connection closes, and returns how
/// it closed.
async fn pump_output(
    mut receiver: Receiver,
    output: Box<dyn AsyncWrite + Unpin + Send>,
    mode: Mode,
    sender: &Sender,
) -> Result<CloseInfo, Failure> {
    let mut output = tokio::io::BufWriter::new(output);
    let mut output_open = true;
    while let Some(item) = receiver.recv().await {
        let message = match item {
            Incoming::Message(message) => message,
            Incoming::Closed(info) => {
                if output_open {
                    let _ = output.flush().await;
                }
                return Ok(info);
            }
        };
        if !output_open {
            continue;
        }
        if let Err(err) = write_message(&mut output, &message, mode).await {
            // Nobody reads what arrives any more (a closed pipe, say): close and drain.
            output_open = false;
            sender.start_close(CloseCode::GOING_AWAY, "client output closed");
            if err.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(Failure::usage(format!("writing the output: {err}")));
            }
        }
    }
    // The receiver always yields a Closed item before None.
    Ok(receiver.close_info().unwrap_or(CloseInfo {
        code: CloseCode::ABNORMAL,
        reason: "connection task ended".into(),
        initiator: Initiator::Local,
        clean: false,
    }))
}

async fn write_message<W: AsyncWrite + Unpin>(
    output: &mut W,
    message: &Message,
    mode: Mode,
) -> std::io::Result<()> {
    match mode {
        Mode::Binary => output.write_all(message.as_bytes()).await?,
        Mode::Base64 => {
            let mut line = BASE64.encode(message.as_bytes());
            line.push('\n');
            output.write_all(line.as_bytes()).await?;
        }
        Mode::Lines => {
            output.write_all(message.as_bytes()).await?;
            output.write_all(b"\n").await?;
        }
    }
    output.flush().await
}
