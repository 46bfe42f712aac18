//! permessage-deflate (RFC 7692) at the frame level: RSV1 rules, fragmentation, context
//! takeover, per-message opt-out, and decompression bombs.

mod common;

use common::*;
use ferry_proto::extension::deflate::{DeflateConfig, DeflateParams, PerMessageDeflate};
use ferry_proto::{Connection, Event, Limits, Message, Role, SendOptions};

/// The RFC's defaults (context takeover, full windows) and no threshold; the negotiated
/// parameters decide takeover in each test.
fn deflate_config() -> DeflateConfig {
    DeflateConfig {
        level: 6,
        peer_window_bits: 15,
        own_no_context_takeover: false,
        threshold: 0,
        ..DeflateConfig::default()
    }
}

fn compressed_conn(role: Role, params: DeflateParams, limits: Limits) -> Connection {
    let codec = PerMessageDeflate::new(role, params, &deflate_config());
    conn_with(role, config_with_limits(limits)).with_extension(Box::new(codec))
}

fn pair(params: DeflateParams) -> (Connection, Connection) {
    (
        compressed_conn(Role::Client, params, Limits::default()),
        compressed_conn(Role::Server, params, Limits::default()),
    )
}

const JSON: &str = r#"{"type":"chat","room":"general","user":"alice","text":"hello, how is everyone doing today?"}"#;

#[test]
fn compressed_message_has_rsv1_and_round_trips_both_ways() {
    let (mut client, mut server) = pair(DeflateParams::default());
    client.send(Message::text(JSON)).unwrap();
    let wire = sent(&mut client);
    let frames = parse_frames(&wire).unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].rsv, 0b100, "RSV1 marks a compressed message");
    assert!(frames[0].payload.len() < JSON.len());
    assert!(
        !frames[0].payload.ends_with(&[0, 0, 0xff, 0xff]),
        "the sync-flush tail is stripped"
    );
    assert_eq!(feed(&mut server, &wire), vec![text(JSON)]);

    server
        .send(Message::binary(JSON.repeat(10).into_bytes()))
        .unwrap();
    let wire = sent(&mut server);
    assert_eq!(parse_frames(&wire).unwrap()[0].rsv, 0b100);
    assert_eq!(
        feed(&mut client, &wire),
        vec![binary(JSON.repeat(10).as_bytes())]
    );
}

#[test]
fn fragments_of_a_compressed_message_carry_rsv1_only_on_the_first() {
    let (mut client, mut server) = pair(DeflateParams::default());
    let body = mixed_text(20_000, 7);
    client
        .send_fragmented(Message::text(body.clone()), 100)
        .unwrap();
    let wire = sent(&mut client);
    let frames = parse_frames(&wire).unwrap();
    assert!(frames.len() > 2);
    assert_eq!(frames[0].rsv, 0b100);
    assert!(frames[1..].iter().all(|f| f.rsv == 0 && f.opcode == CONT));
    assert_eq!(feed(&mut server, &wire), vec![text(&body)]);
}

#[test]
fn context_takeover_makes_repeats_cheaper_and_no_takeover_does_not() {
    let sizes = |params: DeflateParams| {
        let (mut client, mut server) = pair(params);
        (0..3)
            .map(|_| {
                server.send(Message::text(JSON)).unwrap();
                let wire = sent(&mut server);
                assert_eq!(feed(&mut client, &wire), vec![text(JSON)]);
                wire.len()
            })
            .collect::<Vec<_>>()
    };
    let takeover = sizes(DeflateParams::default());
    assert!(takeover[1] < takeover[0] / 2, "{takeover:?}");
    let fresh = sizes(DeflateParams {
        server_no_context_takeover: true,
        ..DeflateParams::default()
    });
    assert_eq!(fresh[0], fresh[1]);
    assert_eq!(fresh[1], fresh[2]);
}

#[test]
fn per_message_opt_out_and_threshold_send_uncompressed() {
    let (_, mut server) = pair(DeflateParams::default());
    server
        .send_with(
            Message::text(JSON),
            SendOptions {
                uncompressed: true,
                ..SendOptions::default()
            },
        )
        .unwrap();
    assert_eq!(
        sent(&mut server),
        sent_by(Role::Server, true, TEXT, JSON.as_bytes())
    );
    let codec = PerMessageDeflate::new(
        Role::Server,
        DeflateParams::default(),
        &DeflateConfig::default(),
    );
    let mut server = conn_with(Role::Server, config()).with_extension(Box::new(codec));
    server.send(Message::text("tiny")).unwrap(); // under the default 64-byte threshold
    assert_eq!(
        sent(&mut server),
        sent_by(Role::Server, true, TEXT, b"tiny")
    );
}

#[test]
fn rsv1_on_a_continuation_frame_is_1002() {
    let (_, mut server) = pair(DeflateParams::default());
    let input = cat(&[
        &to(Role::Server, false, TEXT, b"ab"),
        &frame(true, 0b100, CONT, Some(PEER_MASK), b"cd"),
    ]);
    feed(&mut server, &input);
    assert_eq!(server.error().map(|e| e.close_code().as_u16()), Some(1002));
}

#[test]
fn rsv1_on_a_control_frame_is_1002() {
    let (_, mut server) = pair(DeflateParams::default());
    server.receive_data(&frame(true, 0b100, PING, Some(PEER_MASK), b"x"), t0());
    assert_failed(&mut server, 1002, "reserved bits set");
}

#[test]
fn rsv2_is_not_owned_by_deflate() {
    let (_, mut server) = pair(DeflateParams::default());
    server.receive_data(&frame(true, 0b010, TEXT, Some(PEER_MASK), b"x"), t0());
    assert_failed(&mut server, 1002, "reserved bits set");
}

#[test]
fn rsv1_without_negotiation_is_1002() {
    // Decided from the header alone, before the payload arrives.
    let mut server = conn(Role::Server);
    server.receive_data(&frame(true, 0b100, TEXT, Some(PEER_MASK), b"x")[..6], t0());
    assert_failed(&mut server, 1002, "reserved bits set");
}

#[test]
fn garbage_compressed_data_is_1007() {
    let (_, mut server) = pair(DeflateParams::default());
    server.receive_data(
        &frame(true, 0b100, BINARY, Some(PEER_MASK), &[0xff; 16]),
        t0(),
    );
    assert_failed(&mut server, 1007, "invalid compressed data");
}

#[test]
fn invalid_utf8_after_inflation_is_1007() {
    let (mut client, mut server) = pair(DeflateParams::default());
    // Compress invalid UTF-8 as if it were binary, then relabel the frame as text.
    client
        .send(Message::binary(
            b"\xff\xfe not utf-8 at all, but long enough to compress".to_vec(),
        ))
        .unwrap();
    let mut wire = sent(&mut client);
    wire[0] = (wire[0] & 0xf0) | TEXT;
    server.receive_data(&wire, t0());
    assert_failed(&mut server, 1007, "invalid UTF-8 in text");
}

/// A 1 GiB decompression bomb sent as 1 KiB frames, each inflating to 1 MiB: the server stops
/// it as soon as the output crosses `max_message_size`, closing with 1009, having buffered at
/// most the limit plus one inflation step.
#[test]
fn one_gib_bomb_is_stopped_at_the_message_limit_with_1009() {
    use zlib_rs::{Deflate, DeflateConfig as Z, DeflateFlush};
    let limit = 1 << 20;
    let limits = Limits {
        max_message_size: limit,
        max_frame_size: limit,
        ..Limits::default()
    };
    let mut server = compressed_conn(Role::Server, DeflateParams::default(), limits);
    let mut bomb = Deflate::new_with_config(Z {
        level: 9,
        window_bits: -15,
        ..Z::default()
    });
    let zeros = vec![0u8; 1 << 20];
    let mut out = vec![0u8; 1 << 20];
    let mut frames_sent = 0;
    let mut compressed_sent = 0;
    for i in 0..1024 {
        let before = bomb.total_out();
        bomb.compress(&zeros, &mut out, DeflateFlush::SyncFlush)
            .unwrap();
        let chunk = &out[..(bomb.total_out() - before) as usize];
        assert!(
            chunk.len() <= 1100,
            "each 1 MiB of zeros compresses to about 1 KiB"
        );
        let (rsv, opcode) = if i == 0 { (0b100, BINARY) } else { (0, CONT) };
        server.receive_data(&frame(i == 1023, rsv, opcode, Some(PEER_MASK), chunk), t0());
        frames_sent += 1;
        compressed_sent += chunk.len();
        if server.error().is_some() {
            break;
        }
    }
    assert!(
        frames_sent <= 2,
        "stopped after {frames_sent} frames ({compressed_sent} bytes)"
    );
    match server.error() {
        Some(ferry_proto::ProtocolError::MessageTooLarge { size, limit: l }) => {
            assert_eq!(*l, limit);
            assert!(
                *size <= (limit + 64 * 1024 + 1) as u64,
                "buffered {size} bytes"
            );
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    let events = events(&mut server);
    assert!(
        matches!(events.last(), Some(Event::Closed(info)) if info.code.as_u16() == 1009),
        "{events:?}"
    );
}

/// Regression (interop with Python `websockets`, Node `ws` and Chromium, which compress every
/// message): random data grows a little when compressed, and a message within
/// `max_message_size` must not be refused for its size on the wire.
#[test]
fn incompressible_message_at_the_limit_is_accepted_despite_growing_on_the_wire() {
    use zlib_rs::{Deflate, DeflateConfig as Z, DeflateFlush};
    let limit = 64 * 1024;
    let limits = Limits {
        max_message_size: limit,
        max_frame_size: limit,
        ..Limits::default()
    };
    let mut server = compressed_conn(Role::Server, DeflateParams::default(), limits);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..limit)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    // Huffman-coded, not stored: bigger than the input, as other implementations send it.
    let mut peer = Deflate::new_with_config(Z {
        level: 6,
        window_bits: -15,
        strategy: zlib_rs::Strategy::HuffmanOnly,
        ..Z::default()
    });
    let mut out = vec![0u8; 2 * limit];
    peer.compress(&noise, &mut out, DeflateFlush::SyncFlush)
        .unwrap();
    let compressed = &out[..peer.total_out() as usize - 4];
    assert!(
        compressed.len() > limit,
        "the test needs a compressed form over the limit"
    );
    let events = feed(
        &mut server,
        &frame(true, 0b100, BINARY, Some(PEER_MASK), compressed),
    );
    assert_eq!(events, vec![binary(&noise)]);
}
