//! What encode-once saves a server fanning messages out: the same messages queued on the same
//! server connections (permessage-deflate, no server context takeover), once with each
//! connection encoding every message itself (`Connection::send`) and once through a
//! `PreparedMessage` (compressed and framed once, the frame shared by every connection).
//! Server-side CPU only, single-threaded, no I/O: the transmit queues are emptied after each
//! message. Prints ns per delivery and the speed-up.
//!
//! `cargo run --release -p ferry-proto --example fanout -- [CONNECTIONS] [MESSAGES] [SIZE]`
//! (defaults 200, 200, 4096).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ferry_proto::extension::deflate::{DeflateConfig, DeflateParams, PerMessageDeflate};
use ferry_proto::{Config, Connection, Message, PreparedMessage, Role};

fn connections(n: usize) -> Vec<Connection> {
    let params = DeflateParams {
        server_no_context_takeover: true,
        ..DeflateParams::default()
    };
    let settings = DeflateConfig::default();
    (0..n)
        .map(|_| {
            Connection::new(Role::Server, Config::default(), Instant::now()).with_extension(
                Box::new(PerMessageDeflate::new(Role::Server, params, &settings)),
            )
        })
        .collect()
}

fn run(conns: &mut [Connection], messages: &[Message], prepared: bool) -> (Duration, usize) {
    let mut wire = 0;
    let start = Instant::now();
    for message in messages {
        let mut shared = PreparedMessage::new(message.clone());
        for conn in conns.iter_mut() {
            if prepared {
                let frame = shared.frame(conn.frame_encoding());
                let _ = conn.send_prepared(&frame);
            } else {
                let _ = conn.send(message.clone());
            }
            wire += black_box(conn.take_transmit()).len();
        }
    }
    (start.elapsed(), wire)
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let n = args.next().and_then(Result::ok).unwrap_or(200);
    let m = args.next().and_then(Result::ok).unwrap_or(200);
    let size = args.next().and_then(Result::ok).unwrap_or(4096);
    let line = "{\"user\":\"someone\",\"text\":\"a chat line, more or less\",\"seq\":";
    let messages: Vec<Message> = (0..m)
        .map(|i| {
            let mut text = String::with_capacity(size + 64);
            while text.len() < size {
                text.push_str(line);
                text.push_str(&format!("{}}},", i * 7919 + text.len()));
            }
            text.truncate(size);
            Message::text(text)
        })
        .collect();
    let mut conns = connections(n);
    println!("fan-out encoding: {n} connections x {m} messages of {size} bytes, deflate level 1");
    let deliveries = (n * m) as f64;
    for round in 1..=3 {
        let (each, wire_each) = run(&mut conns, &messages, false);
        let (once, wire_once) = run(&mut conns, &messages, true);
        assert_eq!(wire_each, wire_once, "the same bytes either way");
        println!(
            "round {round}: per connection {:>7.0} ns/delivery, encode once {:>5.0} ns/delivery: \
             {:>5.1}x less CPU ({} wire bytes per delivery)",
            each.as_nanos() as f64 / deliveries,
            once.as_nanos() as f64 / deliveries,
            each.as_secs_f64() / once.as_secs_f64(),
            wire_once / (n * m),
        );
    }
}
