//! criterion micro-benchmarks of the hot kernels: masking (word-wide against the byte-at-a-time
//! reference, at each size and alignment), frame header parse and encode, UTF-8 validation,
//! handshake parse, message assembly (a masked frame in, a whole message out), and a client's
//! send (a message in, masked frames out through the transmit queue, as a socket takes them).
//!
//! Run: `cargo bench -p ferry-proto --bench kernels` (all), or name a group:
//! `cargo bench -p ferry-proto --bench kernels -- mask`. Results and the decision they support
//! (no SIMD masking) are in docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Instant;

use bytes::{Buf, Bytes};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_proto::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use ferry_proto::handshake::ServerHandshake;
use ferry_proto::mask::{apply_mask, apply_mask_scalar};
use ferry_proto::utf8::Validator;
use ferry_proto::{Config, Connection, Event, Limits, Message, Role};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const SIZES: [usize; 5] = [20, 125, 1024, 16 * 1024, 64 * 1024];

fn masking(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        // Alignment 0 is the common case (payload right after a header in a fresh buffer is
        // not, so 2, 6 and 1 show the cost of the unaligned head).
        for align in [0usize, 1, 2, 6] {
            let mut buf = vec![0x5au8; size + 8];
            let id = format!("{size}B/align{align}");
            group.bench_function(BenchmarkId::new("word", &id), |b| {
                b.iter(|| apply_mask(black_box(&mut buf[align..align + size]), KEY, 0))
            });
            if align == 0 || align == 1 {
                group.bench_function(BenchmarkId::new("scalar", &id), |b| {
                    b.iter(|| apply_mask_scalar(black_box(&mut buf[align..align + size]), KEY, 0))
                });
            }
        }
    }
    group.finish();
}

fn frame_header(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_header");
    for (name, len) in [("7bit", 20u64), ("16bit", 16 * 1024), ("64bit", 1 << 20)] {
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: Some(KEY),
            payload_len: len,
        };
        let mut encoded = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut encoded);
        group.bench_function(BenchmarkId::new("parse", name), |b| {
            b.iter(|| FrameHeader::parse(black_box(&encoded[..n])))
        });
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            let mut out = [0u8; MAX_HEADER_LEN];
            b.iter(|| black_box(&header).encode(&mut out))
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    let ascii = "hello, world; the meeting is at noon. ".repeat(2000);
    let mixed = "grüße, 世界, emoji 🦀 and plain text. ".repeat(2000);
    for (name, text) in [("ascii", &ascii), ("mixed", &mixed)] {
        for size in [20usize, 1024, 64 * 1024] {
            // Cut at a character boundary at or below `size`.
            let end = (0..=size.min(text.len()))
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            let bytes = &text.as_bytes()[..end];
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter(|| {
                    let mut v = Validator::default();
                    v.feed(black_box(bytes)).and_then(|()| v.finish())
                })
            });
        }
    }
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let request = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";
    let limits = Limits::default();
    c.bench_function("handshake/server_parse_and_accept", |b| {
        b.iter(|| {
            let mut hs = ServerHandshake::new(&limits);
            let req = hs.receive(black_box(request)).ok().flatten();
            req.map(|r| r.accept(Some("chat")))
        })
    });
}

/// A client frame as it arrives at a server: masked, one whole message.
fn client_frame(payload: &[u8], opcode: OpCode, fin: bool) -> Vec<u8> {
    let header = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask: Some(KEY),
        payload_len: payload.len() as u64,
    };
    let mut out = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut out);
    let mut frame = out[..n].to_vec();
    let start = frame.len();
    frame.extend_from_slice(payload);
    apply_mask(&mut frame[start..], KEY, 0);
    frame
}

fn assembly(c: &mut Criterion) {
    let mut group = c.benchmark_group("assemble");
    let config = Config {
        limits: Limits {
            max_message_size: 1 << 20,
            ..Limits::default()
        },
        ..Config::default()
    };
    for size in [20usize, 1024, 16 * 1024, 64 * 1024] {
        group.throughput(Throughput::Bytes(size as u64));
        let binary = client_frame(&vec![0xabu8; size], OpCode::Binary, true);
        let text = client_frame("x".repeat(size).as_bytes(), OpCode::Text, true);
        // The same message in 4 fragments.
        let quarter = size.div_ceil(4);
        let mut fragmented = Vec::new();
        let payload = vec![0xcdu8; size];
        for (i, piece) in payload.chunks(quarter).enumerate() {
            let opcode = if i == 0 {
                OpCode::Binary
            } else {
                OpCode::Continuation
            };
            let last = (i + 1) * quarter >= size;
            fragmented.extend(client_frame(piece, opcode, last));
        }
        for (name, wire) in [
            ("binary", &binary),
            ("text", &text),
            ("binary_4_fragments", &fragmented),
        ] {
            let mut conn = Connection::new(Role::Server, config.clone(), Instant::now());
            let now = Instant::now();
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter(|| {
                    conn.receive_data(black_box(wire), now);
                    match conn.poll_event() {
                        Some(Event::Message(m)) => m.len(),
                        _ => 0,
                    }
                })
            });
        }
    }
    group.finish();
}

/// A client queues one message and a socket takes the masked bytes 64 KiB at a time: the cost of
/// masking (and of whatever copy the queue makes) per byte sent.
fn client_send(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_send");
    for size in [16 * 1024, 256 * 1024, 1 << 20, 16 << 20] {
        let payload = Bytes::from(vec![0x5a; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            let mut client = Connection::new(Role::Client, Config::default(), Instant::now());
            b.iter(|| {
                client.send(Message::binary(payload.clone())).unwrap();
                let transmit = client.transmit();
                while transmit.has_remaining() {
                    let n = transmit.chunk().len().min(64 * 1024);
                    black_box(&transmit.chunk()[..n]);
                    transmit.advance(n);
                }
            })
        });
    }
    group.finish();
}

/// A client's 1 MiB message in frames of a given size: 1023-byte frames are masked by copy,
/// 1024 and up as they go out (`LAZY_MASK_MIN_FRAME`), so the two first show what the lazy
/// path costs per frame.
fn client_send_fragmented(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_send_fragmented");
    let size = 1 << 20;
    let payload = Bytes::from(vec![0x5a; size]);
    group.throughput(Throughput::Bytes(size as u64));
    for frame in [1023usize, 1024, 4096] {
        group.bench_function(BenchmarkId::from_parameter(frame), |b| {
            let config = Config {
                fragment_size: Some(frame),
                ..Config::default()
            };
            let mut client = Connection::new(Role::Client, config, Instant::now());
            b.iter(|| {
                client.send(Message::binary(payload.clone())).unwrap();
                let transmit = client.transmit();
                while transmit.has_remaining() {
                    let n = transmit.chunk().len().min(64 * 1024);
                    black_box(&transmit.chunk()[..n]);
                    transmit.advance(n);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    masking,
    frame_header,
    utf8,
    handshake,
    assembly,
    client_send,
    client_send_fragmented
);
criterion_main!(benches);
