//! An interoperability client: checks that a WebSocket echo server returns every message
//! ferry sends, byte for byte.
//!
//! ```text
//! cargo run --release -p ferry --example interop_client -- ws://127.0.0.1:9001/
//! ```
//!
//! It sends a fixed matrix of text and binary messages whose sizes sit on the frame-length
//! boundaries of RFC 6455 (125/126 bytes, 65535/65536 bytes) and go up to just under 16 MiB,
//! with text full of 2-, 3- and 4-byte UTF-8 characters. Each message is awaited and compared
//! before the next one goes out. Then it sends pings, checks the connection still echoes, and
//! closes with 1000, expecting a clean closing handshake that echoes 1000.
//!
//! One line per check on stdout; on the first mismatch a single `FAIL ...` line and exit code 1.
//! `tests/interop/run.sh` runs it against the Python `websockets` echo server.

use std::process::ExitCode;
use std::time::Duration;

use ferry::{CloseCode, Config, Incoming, Limits, Message, Receiver};

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

#[tokio::main]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: interop_client ws://HOST:PORT/");
        return ExitCode::from(2);
    };
    match run(&url).await {
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
async fn run(url: &str) -> Result<usize, String> {
    let mut checks = 0;
    let mut pass = |what: String| {
        checks += 1;
        println!("ok   {what}");
    };

    let config = Config {
        limits: Limits {
            max_message_size: MAX_MESSAGE,
            max_frame_size: MAX_MESSAGE,
            ..Limits::default()
        },
        ..Config::default()
    };
    let (sender, mut receiver, response) = ferry::connect_with(url, &config)
        .await
        .map_err(|err| format!("connect to {url}: {err}"))?;
    pass(format!("connected to {url} (HTTP {})", response.status));

    // The echo matrix: one message at a time, each compared with what comes back.
    for message in matrix() {
        let label = describe(&message);
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

/// Every message to echo: text and binary at each size, and a short all-Unicode text.
fn matrix() -> Vec<Message> {
    let mut messages = Vec::new();
    for &size in SIZES {
        messages.push(Message::text(text_of_size(size)));
        messages.push(Message::binary(bytes_of_size(size)));
    }
    messages.push(Message::text(
        "ASCII, é ü ß, € ✓ 中文, 😀 🦀 𝄞, 👩‍💻 (a ZWJ sequence)",
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
