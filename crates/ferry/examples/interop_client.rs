//! An interoperability client: checks that a WebSocket echo server returns every message
//! ferry sends, byte for byte, with or without permessage-deflate.
//!
//! ```text
//! cargo run --release -p ferry --example interop_client -- [OPTIONS] ws://127.0.0.1:9001/
//!
//!   --no-deflate               offer no compression (ferry offers permessage-deflate by default)
//!   --expect-deflate VALUE     fail unless the negotiated extension is VALUE, written as ferry
//!                              writes it (`DeflateParams::to_header`), e.g. "permessage-deflate;
//!                              client_max_window_bits=12"; or `none` for no compression
//! ```
//!
//! It first prints what was negotiated: the server's `Sec-WebSocket-Extensions` header and the
//! parameters ferry runs with (`Sender::deflate()`). Then it sends a fixed matrix of text and
//! binary messages whose sizes sit on the frame-length boundaries of RFC 6455 (125/126 bytes,
//! 65535/65536 bytes) and go up to just under 16 MiB: text full of 2-, 3- and 4-byte UTF-8
//! characters, JSON-like text and binary (they compress well), and random bytes (they do not).
//! Each message is awaited and compared before the next one goes out. Then it sends pings, checks
//! the connection still echoes, and closes with 1000, expecting a clean closing handshake that
//! echoes 1000.
//!
//! One line per check on stdout; on the first mismatch a single `FAIL ...` line and exit code 1.
//! `tests/interop/python/run.sh` and `tests/interop/node/run.sh` run it against the echo servers
//! of Python's `websockets` and Node's `ws`.

use std::process::ExitCode;
use std::time::Duration;

use ferry::{CloseCode, Config, DeflateParams, Incoming, Limits, Message, Receiver};

/// Largest message either side accepts in this test.
const MAX_MESSAGE: usize = 16 << 20;

/// Payload sizes, in bytes: empty, the 7-bit length limit and the first 16-bit one, the 16-bit
/// limit and the first 64-bit one, then large messages.
const SIZES: &[usize] = &[
    0,
    1,
    125,
    126,
    127,
    65535,
    65536,
    1 << 20,
    MAX_MESSAGE - 1024,
];

/// How long to wait for any one echo (a 16 MiB message included).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

const USAGE: &str =
    "usage: interop_client [--no-deflate] [--expect-deflate VALUE|none] ws://HOST:PORT/";

/// The command line.
struct Options {
    url: String,
    /// Offer permessage-deflate (ferry's default).
    deflate: bool,
    /// What must be negotiated: `Some(None)` for no compression; `None` to accept anything.
    expect_deflate: Option<Option<String>>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        url: String::new(),
        deflate: true,
        expect_deflate: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-deflate" => options.deflate = false,
            "--expect-deflate" => {
                let value = args.next().ok_or("--expect-deflate needs a value")?;
                options.expect_deflate = Some((value != "none").then_some(value));
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ if options.url.is_empty() => options.url = arg,
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    if options.url.is_empty() {
        return Err("no URL given".into());
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("interop_client: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options).await {
        Ok(checks) => {
            println!("interop_client: all {checks} checks passed");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("FAIL {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every check in order; returns how many passed, or why the first one failed.
async fn run(options: &Options) -> Result<usize, String> {
    let url = options.url.as_str();
    let mut checks = 0;
    let mut pass = |what: String| {
        checks += 1;
        println!("ok   {what}");
    };

    let mut config = Config {
        limits: Limits {
            max_message_size: MAX_MESSAGE,
            max_frame_size: MAX_MESSAGE,
            ..Limits::default()
        },
        ..Config::default()
    };
    if !options.deflate {
        config = config.without_deflate();
    }
    let (sender, mut receiver, response) = ferry::connect_with(url, &config)
        .await
        .map_err(|err| format!("connect to {url}: {err}"))?;
    pass(format!("connected to {url} (HTTP {})", response.status));

    // What was negotiated: the server's answer as it wrote it, and as ferry understood it.
    let answer = response
        .header("Sec-WebSocket-Extensions")
        .map_or("(none)".into(), String::from_utf8_lossy);
    let negotiated = sender.deflate();
    if negotiated != response.deflate {
        return Err(format!(
            "Sender::deflate() is {negotiated:?} but the handshake response says {:?}",
            response.deflate
        ));
    }
    let negotiated = negotiated.as_ref().map(DeflateParams::to_header);
    let shown = negotiated.as_deref().unwrap_or("none");
    let offer = config
        .deflate
        .as_ref()
        .map(|deflate| deflate.client_offer());
    println!(
        "     offered:         {}",
        offer.as_deref().unwrap_or("(nothing)")
    );
    println!("     server answered: {answer}");
    println!("     negotiated:      {shown}");
    match &options.expect_deflate {
        Some(expected) if *expected != negotiated => {
            let expected = expected.as_deref().unwrap_or("none");
            return Err(format!(
                "extensions: expected {expected}, negotiated {shown}"
            ));
        }
        Some(_) => pass(format!("extensions: negotiated {shown}, as expected")),
        None => {}
    }

    // The echo matrix: one message at a time, each compared with what comes back.
    for (content, message) in matrix() {
        let label = format!("{} ({content})", describe(&message));
        sender
            .send(message.clone())
            .await
            .map_err(|err| format!("{label}: send failed: {err}"))?;
        let echo = next_message(&mut receiver)
            .await
            .map_err(|err| format!("{label}: {err}"))?;
        compare(&message, &echo).map_err(|err| format!("{label}: {err}"))?;
        pass(format!("echo {label}"));
    }

    // Pings. The peer's pongs are handled inside the connection and not shown to the
    // application, so the check is that the peer took both pings (an empty one and one with the
    // largest control payload, 125 bytes) and the connection goes on echoing after them.
    sender.ping("").map_err(|err| format!("ping: {err}"))?;
    sender
        .ping(vec![b'p'; 125])
        .map_err(|err| format!("ping with 125 bytes: {err}"))?;
    let after = Message::text("after the pings");
    sender
        .send(after.clone())
        .await
        .map_err(|err| format!("send after ping: {err}"))?;
    let echo = next_message(&mut receiver)
        .await
        .map_err(|err| format!("echo after ping: {err}"))?;
    compare(&after, &echo).map_err(|err| format!("echo after ping: {err}"))?;
    pass("ping (0 and 125 bytes) accepted, connection still echoes".to_owned());

    // The closing handshake: we start it with 1000; the peer must answer with 1000.
    let info = sender.close(CloseCode::NORMAL, "interop done").await;
    if !info.clean || info.code != CloseCode::NORMAL {
        return Err(format!(
            "close: expected a clean close with 1000, got code {} clean={} initiator={:?} reason {:?}",
            info.code,
            info.clean,
            info.initiator,
            info.reason.as_str()
        ));
    }
    pass(format!(
        "close 1000 echoed, clean (reason from peer: {:?})",
        info.reason.as_str()
    ));

    // The receiver ends with the same close, then nothing.
    match tokio::time::timeout(REPLY_TIMEOUT, receiver.recv()).await {
        Ok(Some(Incoming::Closed(last))) if last == info => {}
        other => {
            return Err(format!(
                "receiver: expected the close as its last item, got {other:?}"
            ));
        }
    }
    if let Ok(Some(item)) = tokio::time::timeout(REPLY_TIMEOUT, receiver.recv()).await {
        return Err(format!(
            "receiver: expected nothing after the close, got {item:?}"
        ));
    }
    pass("receiver ended with the close".to_owned());

    Ok(checks)
}

/// Every message to echo, with what it is made of: at each size, UTF-8 text, JSON-like text and
/// binary (these compress well), and random binary (this does not); then a short all-Unicode
/// text.
fn matrix() -> Vec<(&'static str, Message)> {
    let mut messages = Vec::new();
    for &size in SIZES {
        messages.push(("utf-8", Message::text(text_of_size(size))));
        messages.push(("json", Message::text(json_of_size(size))));
        messages.push(("json", Message::binary(json_of_size(size))));
        messages.push(("random", Message::binary(bytes_of_size(size))));
    }
    messages.push((
        "unicode",
        Message::text("ASCII, é ü ß, € ✓ 中文, 😀 🦀 𝄞, 👩‍💻 (a ZWJ sequence)"),
    ));
    messages
}

/// Text of exactly `size` bytes, made of 1-, 2-, 3- and 4-byte characters so that multibyte
/// characters straddle frame and read boundaries.
fn text_of_size(size: usize) -> String {
    const UNIT: &str = "aé€😀"; // 1 + 2 + 3 + 4 = 10 bytes
    let mut text = UNIT.repeat(size / UNIT.len());
    text.extend(std::iter::repeat_n('x', size % UNIT.len()));
    text
}

/// JSON-like ASCII text of exactly `size` bytes: records that differ a little from each other, as
/// an API's traffic does, so it compresses well without being one repeated string.
fn json_of_size(size: usize) -> String {
    let mut text = String::from("[");
    let mut id = 0_u64;
    while text.len() < size {
        text.push_str(&format!(
            r#"{{"id":{id},"name":"user-{id}","active":{},"score":{},"tags":["alpha","beta"]}},"#,
            id.is_multiple_of(3),
            id * 7919 % 1000
        ));
        id += 1;
    }
    text.truncate(size);
    text
}

/// `size` pseudo-random bytes (every byte value shows up, so masking mistakes cannot hide).
fn bytes_of_size(size: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ size as u64;
    (0..size)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The next message, or why there is none.
async fn next_message(receiver: &mut Receiver) -> Result<Message, String> {
    match tokio::time::timeout(REPLY_TIMEOUT, receiver.recv()).await {
        Err(_) => Err(format!("no echo within {REPLY_TIMEOUT:?}")),
        Ok(Some(Incoming::Message(message))) => Ok(message),
        Ok(Some(Incoming::Closed(info))) => Err(format!(
            "connection closed instead of echoing: code {} clean={} initiator={:?} reason {:?}",
            info.code,
            info.clean,
            info.initiator,
            info.reason.as_str()
        )),
        Ok(None) => Err("connection ended instead of echoing".to_owned()),
    }
}

/// Checks the echo has the same type and the same bytes as what was sent.
fn compare(sent: &Message, echo: &Message) -> Result<(), String> {
    if sent.is_text() != echo.is_text() {
        return Err(format!("sent {}, got {} back", kind(sent), kind(echo)));
    }
    let (sent, echo) = (sent.as_bytes(), echo.as_bytes());
    if sent.len() != echo.len() {
        return Err(format!(
            "sent {} bytes, got {} back",
            sent.len(),
            echo.len()
        ));
    }
    if let Some(at) = sent.iter().zip(echo).position(|(a, b)| a != b) {
        return Err(format!(
            "echo differs at byte {at}: sent {:#04x}, got {:#04x}",
            sent[at], echo[at]
        ));
    }
    Ok(())
}

fn describe(message: &Message) -> String {
    format!("{} {} bytes", kind(message), message.len())
}

fn kind(message: &Message) -> &'static str {
    if message.is_text() { "text" } else { "binary" }
}
