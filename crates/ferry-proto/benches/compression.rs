//! permessage-deflate benchmark: compression ratio, messages per second and memory per
//! connection, for realistic chat JSON (~200 bytes) and 64 KiB text, with context takeover on
//! and off, across levels, windows and memLevels.
//!
//! Run: `cargo bench -p ferry-proto --bench compression`. It prints a table; nothing is asserted.
//! Figures are for one core of whatever machine runs it; compare rows, not machines.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferry_proto::extension::deflate::{DeflateConfig, DeflateParams, PerMessageDeflate};
use ferry_proto::{Config, Connection, Event, Message, Role};

/// Deterministic pseudo-random numbers (xorshift), so every run sees the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "the", "meeting", "is", "at", "noon", "can", "you", "send", "me", "report", "thanks", "great",
    "see", "later", "deploy", "finished", "build", "failed", "again", "coffee", "lunch", "today",
    "tomorrow", "release", "notes", "look", "good", "ship", "it", "why", "not", "ok", "sure",
    "review", "please",
];
const USERS: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
];
const ROOMS: &[&str] = &["general", "random", "ops", "release-train", "support"];

/// A chat message as a JSON object of about 200 bytes.
fn chat_message(rng: &mut Rng, seq: u64) -> String {
    let words: Vec<&str> = (0..(6 + rng.next() % 10))
        .map(|_| rng.pick(WORDS))
        .collect();
    format!(
        r#"{{"type":"message","id":"m-{seq:08}","room":"{}","user":{{"id":{},"name":"{}"}},"ts":{},"text":"{}","reactions":[]}}"#,
        rng.pick(ROOMS),
        1000 + rng.next() % 9000,
        rng.pick(USERS),
        1_764_000_000_000u64 + seq * 1375,
        words.join(" ")
    )
}

/// 64 KiB of text: a page of chat history rendered as JSON lines.
fn big_text(rng: &mut Rng) -> String {
    let mut out = String::new();
    let mut seq = 0;
    while out.len() < 64 * 1024 {
        out.push_str(&chat_message(rng, seq));
        out.push('\n');
        seq += 1;
    }
    out.truncate(64 * 1024);
    out
}

struct Setup {
    name: &'static str,
    config: DeflateConfig,
    takeover: bool,
}

struct Row {
    ratio: f64,
    compress_per_s: f64,
    roundtrip_per_s: f64,
}

/// Compresses every message once (to measure ratio and speed), then sends them through a
/// server `Connection` to a client `Connection` (framing, compression, inflation, UTF-8).
fn params_for(config: &DeflateConfig, takeover: bool) -> (DeflateParams, DeflateConfig) {
    let params = DeflateParams {
        server_no_context_takeover: !takeover,
        client_no_context_takeover: !takeover,
        server_max_window_bits: None,
        client_max_window_bits: (config.peer_window_bits < 15).then_some(config.peer_window_bits),
    };
    (
        params,
        DeflateConfig {
            own_no_context_takeover: !takeover,
            ..config.clone()
        },
    )
}

fn measure(setup: &Setup, messages: &[String], min_time: Duration) -> Row {
    let (params, config) = params_for(&setup.config, setup.takeover);
    let setup = &Setup {
        name: setup.name,
        config,
        takeover: setup.takeover,
    };
    let raw: usize = messages.iter().map(String::len).sum();
    let mut codec = PerMessageDeflate::new(Role::Server, params, &setup.config);
    let compressed: usize = messages
        .iter()
        .map(|m| codec.compress(m.as_bytes()).map_or(m.len(), |c| c.len()))
        .sum();

    let mut count = 0u64;
    let start = Instant::now();
    while start.elapsed() < min_time {
        let mut codec = PerMessageDeflate::new(Role::Server, params, &setup.config);
        for m in messages {
            std::hint::black_box(codec.compress(m.as_bytes()));
        }
        count += messages.len() as u64;
    }
    let compress_per_s = count as f64 / start.elapsed().as_secs_f64();

    let mut count = 0u64;
    let start = Instant::now();
    while start.elapsed() < min_time {
        let now = Instant::now();
        let server_codec = PerMessageDeflate::new(Role::Server, params, &setup.config);
        let client_codec = PerMessageDeflate::new(Role::Client, params, &setup.config);
        let mut server = Connection::new(Role::Server, Config::default(), now)
            .with_extension(Box::new(server_codec));
        let mut client = Connection::new(Role::Client, Config::default(), now)
            .with_extension(Box::new(client_codec));
        for m in messages {
            server.send(Message::text(m.as_str())).unwrap();
            let wire = server.take_transmit();
            client.receive_data(&wire, now);
            match client.poll_event() {
                Some(Event::Message(got)) => assert_eq!(got.len(), m.len()),
                other => panic!("{other:?}"),
            }
        }
        count += messages.len() as u64;
    }
    let roundtrip_per_s = count as f64 / start.elapsed().as_secs_f64();
    Row {
        ratio: compressed as f64 / raw as f64,
        compress_per_s,
        roundtrip_per_s,
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Memory per connection pair member: RSS growth over 2,000 server connections that have each
/// sent and received one compressed message, divided by 2,000.
fn memory_per_connection(config: Option<&DeflateConfig>, takeover: bool, message: &str) -> f64 {
    const N: usize = 2000;
    let (params, config) = match config {
        Some(config) => {
            let (params, config) = params_for(config, takeover);
            (params, Some(config))
        }
        None => (DeflateParams::default(), None),
    };
    let config = config.as_ref();
    let now = Instant::now();
    // A client to produce the compressed input each server receives.
    let mut client = Connection::new(Role::Client, Config::default(), now);
    if let Some(config) = config {
        client = client.with_extension(Box::new(PerMessageDeflate::new(
            Role::Client,
            params,
            config,
        )));
    }
    client.send(Message::text(message)).unwrap();
    let incoming = client.take_transmit();
    let before = rss_kib();
    let mut servers = Vec::with_capacity(N);
    for _ in 0..N {
        let mut server = Connection::new(Role::Server, Config::default(), now);
        if let Some(config) = config {
            server = server.with_extension(Box::new(PerMessageDeflate::new(
                Role::Server,
                params,
                config,
            )));
        }
        server.receive_data(&incoming, now);
        assert!(matches!(server.poll_event(), Some(Event::Message(_))));
        server.send(Message::text(message)).unwrap();
        drop(server.take_transmit());
        server.release_idle_buffers();
        servers.push(server);
    }
    let after = rss_kib();
    std::hint::black_box(&servers);
    (after.saturating_sub(before)) as f64 * 1024.0 / N as f64
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let min_time = if quick {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(700)
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let chat: Vec<String> = (0..2000).map(|i| chat_message(&mut rng, i)).collect();
    let big: Vec<String> = (0..16).map(|_| big_text(&mut rng)).collect();
    let avg = chat.iter().map(String::len).sum::<usize>() / chat.len();

    // Each setup spells out what it measures; `takeover` decides context takeover for both
    // compressors (and whether this end's compressor is per connection or shared per thread).
    let base = DeflateConfig {
        threshold: 0,
        peer_window_bits: 12,
        ..DeflateConfig::default()
    };
    let setups = [
        Setup {
            name: "level 1, no takeover (ferry's default)",
            config: base.clone(),
            takeover: false,
        },
        Setup {
            name: "level 1, takeover",
            config: base.clone(),
            takeover: true,
        },
        Setup {
            name: "level 6, no takeover",
            config: DeflateConfig {
                level: 6,
                ..base.clone()
            },
            takeover: false,
        },
        Setup {
            name: "level 6, takeover",
            config: DeflateConfig {
                level: 6,
                ..base.clone()
            },
            takeover: true,
        },
        Setup {
            name: "level 6, takeover, windows 15, memLevel 8 (flate2's fixed memLevel)",
            config: DeflateConfig {
                level: 6,
                own_window_bits: 15,
                peer_window_bits: 15,
                mem_level: 8,
                ..base.clone()
            },
            takeover: true,
        },
        Setup {
            name: "level 9, takeover, windows 15, memLevel 9",
            config: DeflateConfig {
                level: 9,
                own_window_bits: 15,
                peer_window_bits: 15,
                mem_level: 9,
                ..base.clone()
            },
            takeover: true,
        },
        Setup {
            name: "level 6, takeover, windows 9, memLevel 1 (smallest)",
            config: DeflateConfig {
                level: 6,
                own_window_bits: 9,
                peer_window_bits: 9,
                mem_level: 1,
                ..base.clone()
            },
            takeover: true,
        },
    ];

    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-row") {
        memory_row(
            &setups,
            args.get(i + 1).map_or("none", String::as_str),
            &big[0],
        );
        return;
    }
    println!("permessage-deflate benchmark (zlib-rs), one core");
    println!();
    println!(
        "chat: {} JSON messages, {avg} bytes on average; text: 64 KiB JSON lines",
        chat.len()
    );
    println!("ratio = compressed / original (lower is better); msgs/s: compress only, and full");
    println!("server->client round trip through two Connections (frame, compress, inflate, UTF-8)");
    println!();
    println!(
        "| setup | chat ratio | chat compress msgs/s | chat round trip msgs/s | 64 KiB ratio | 64 KiB compress msgs/s | 64 KiB round trip msgs/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for setup in &setups {
        let c = measure(setup, &chat, min_time);
        let b = measure(setup, &big, min_time);
        println!(
            "| {} | {:.3} | {:.0} | {:.0} | {:.3} | {:.0} | {:.0} |",
            setup.name,
            c.ratio,
            c.compress_per_s,
            c.roundtrip_per_s,
            b.ratio,
            b.compress_per_s,
            b.roundtrip_per_s
        );
    }
    let no_deflate = measure_plain(&chat, min_time);
    let no_deflate_big = measure_plain(&big, min_time);
    println!("| no compression | 1.000 | - | {no_deflate:.0} | 1.000 | - | {no_deflate_big:.0} |");

    println!();
    println!("memory per connection: RSS growth over 2,000 server Connections that have each");
    println!(
        "received and sent one compressed 64 KiB message (idle buffers released), measured in"
    );
    println!("a fresh process per row so freed memory of earlier rows cannot hide growth:");
    println!();
    println!("| setup | bytes per connection |");
    println!("|---|---:|");
    println!("| no compression | {} |", memory_in_child(None));
    for (i, setup) in setups.iter().enumerate() {
        println!("| {} | {} |", setup.name, memory_in_child(Some(i)));
    }
}

/// Runs this benchmark binary again to measure one memory row in a clean process.
fn memory_in_child(setup: Option<usize>) -> String {
    let exe = std::env::current_exe().expect("current exe");
    let arg = setup.map_or("none".to_owned(), |i| i.to_string());
    let out = std::process::Command::new(exe)
        .args(["--memory-row", &arg])
        .output()
        .expect("run child");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The child side of [`memory_in_child`].
fn memory_row(setups: &[Setup], arg: &str, message: &str) {
    let bytes = match arg.parse::<usize>().ok().and_then(|i| setups.get(i)) {
        Some(setup) => memory_per_connection(Some(&setup.config), setup.takeover, message),
        None => memory_per_connection(None, true, message),
    };
    println!("{bytes:.0}");
}

fn measure_plain(messages: &[String], min_time: Duration) -> f64 {
    let mut count = 0u64;
    let start = Instant::now();
    while start.elapsed() < min_time {
        let now = Instant::now();
        let mut server = Connection::new(Role::Server, Config::default(), now);
        let mut client = Connection::new(Role::Client, Config::default(), now);
        for m in messages {
            server.send(Message::text(m.as_str())).unwrap();
            let wire = server.take_transmit();
            client.receive_data(&wire, now);
            assert!(matches!(client.poll_event(), Some(Event::Message(_))));
        }
        count += messages.len() as u64;
    }
    let _ = BytesMut::new();
    count as f64 / start.elapsed().as_secs_f64()
}
