//! Replies ahead of data: a pong or a ping goes at the next frame boundary of what is queued,
//! never behind the whole queue (RFC 6455 §5.4: control frames may be injected between the
//! fragments of a message, never inside a frame). A close, started here or in reply, goes after
//! the messages queued before it: nothing may follow it (§5.5.1), and the answers already owed
//! still reach the peer.

mod common;

use bytes::Buf;
use common::*;
use ferry_proto::{CloseCode, Config, Connection, Message, Role};

const FRAGMENT: usize = 64 << 10;
const BIG: usize = 16 << 20;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
const CLOSE: u8 = 0x8;

fn fragmenting(role: Role) -> Connection {
    conn_with(
        role,
        Config {
            fragment_size: Some(FRAGMENT),
            ..config()
        },
    )
}

/// Writes everything in steps of at most `step` bytes.
fn write_all(conn: &mut Connection, step: usize, vectored: bool, out: &mut Vec<u8>) {
    while conn.transmit().has_remaining() {
        assert!(write_some(conn, step, vectored, out) > 0, "stuck");
    }
}

/// The byte offset at which the first frame with `opcode` starts in `wire`.
fn offset_of(wire: &[u8], opcode: u8) -> usize {
    let mut at = 0;
    for parsed in parse_frames(wire).expect("well-formed frames") {
        let frame_bytes = frame(
            parsed.fin,
            parsed.rsv,
            parsed.opcode,
            parsed.mask,
            &parsed.payload,
        );
        if parsed.opcode == opcode {
            return at;
        }
        at += frame_bytes.len();
    }
    panic!("no frame with opcode {opcode:#x}");
}

/// The message carried by the data frames of `wire`.
fn data_of(wire: &[u8]) -> Vec<u8> {
    parse_frames(wire)
        .unwrap()
        .into_iter()
        .filter(|f| f.opcode < 0x8)
        .flat_map(|f| f.payload)
        .collect()
}

#[test]
fn a_ping_is_answered_after_at_most_one_fragment_with_16_mib_queued() {
    for role in ROLES {
        for vectored in [false, true] {
            let mut conn = fragmenting(role);
            let message = pattern(BIG);
            conn.send(Message::binary(message.clone())).unwrap();
            let mut wire = Vec::new();
            // The transport has taken part of the first fragment when the ping arrives.
            write_some(&mut conn, 1000, vectored, &mut wire);
            feed(&mut conn, &to_fin(role, PING, b"are you there"));
            assert!(conn.transmit().len() > BIG);
            write_all(&mut conn, 16 << 10, vectored, &mut wire);

            let pong_at = offset_of(&wire, PONG);
            assert!(
                pong_at <= FRAGMENT + 14,
                "{role:?}, vectored {vectored}: the pong waited behind {pong_at} bytes"
            );
            let frames = parse_frames(&wire).unwrap();
            assert_eq!(frames[1].opcode, PONG, "right after the first fragment");
            assert_eq!(frames[1].payload, b"are you there");
            assert_eq!(
                data_of(&wire),
                message,
                "the message arrives whole around it"
            );
        }
    }
}

#[test]
fn a_ping_arriving_at_a_boundary_goes_before_any_queued_fragment() {
    let mut conn = fragmenting(Role::Server);
    conn.send(Message::binary(pattern(4 * FRAGMENT))).unwrap();
    let mut wire = Vec::new();
    // Exactly the first fragment has gone.
    write_some(&mut conn, FRAGMENT + 4, false, &mut wire);
    conn.send_ping(bytes::Bytes::from_static(b"k")).unwrap();
    write_all(&mut conn, 7, false, &mut wire);
    let opcodes: Vec<u8> = parse_frames(&wire)
        .unwrap()
        .iter()
        .map(|f| f.opcode)
        .collect();
    assert_eq!(opcodes, [0x2, PING, 0x0, 0x0, 0x0]);
}

#[test]
fn a_control_frame_started_is_finished_before_data_resumes() {
    let mut conn = fragmenting(Role::Client);
    conn.send(Message::binary(pattern(2 * FRAGMENT))).unwrap();
    conn.send_ping(bytes::Bytes::from_static(b"0123456789"))
        .unwrap();
    let mut wire = Vec::new();
    // One byte at a time: the ping (at the boundary before the first fragment) goes first and
    // whole, even as bytes of data are always waiting.
    write_all(&mut conn, 1, true, &mut wire);
    let opcodes: Vec<u8> = parse_frames(&wire)
        .unwrap()
        .iter()
        .map(|f| f.opcode)
        .collect();
    assert_eq!(opcodes, [PING, 0x2, 0x0]);
    assert_eq!(data_of(&wire), pattern(2 * FRAGMENT));
}

#[test]
fn a_close_reply_follows_the_answers_already_queued() {
    // The peer's close arrives while this end's answers are queued (an echo, say): they go
    // first, then the reply, and nothing after it. §5.5.1 lets the reply wait for them; the
    // peer reads until it has our close.
    for role in ROLES {
        let mut conn = fragmenting(role);
        let answer = pattern(4 * FRAGMENT + 3);
        conn.send(Message::binary(answer.clone())).unwrap();
        let mut wire = Vec::new();
        write_some(&mut conn, 100, false, &mut wire);
        feed(
            &mut conn,
            &to_fin(role, CLOSE, &close_payload(1000, b"bye")),
        );
        assert!(conn.send(Message::text("too late")).is_err());
        write_all(&mut conn, 4096, false, &mut wire);
        let frames = parse_frames(&wire).unwrap();
        assert_eq!(frames.last().unwrap().opcode, CLOSE, "{role:?}");
        assert_eq!(frames.last().unwrap().payload, close_payload(1000, b""));
        assert_eq!(data_of(&wire), answer);
        assert!(!conn.transmit().has_remaining());
    }
}

#[test]
fn a_close_this_end_starts_goes_after_everything_queued_before_it() {
    for role in ROLES {
        let mut conn = fragmenting(role);
        let message = pattern(4 * FRAGMENT + 5);
        conn.send(Message::binary(message.clone())).unwrap();
        conn.close(CloseCode::GOING_AWAY, "shutting down", t0())
            .unwrap();
        let mut wire = Vec::new();
        write_all(&mut conn, 3000, true, &mut wire);
        let frames = parse_frames(&wire).unwrap();
        assert_eq!(frames.last().unwrap().opcode, CLOSE, "{role:?}");
        assert_eq!(data_of(&wire), message);
    }
}

#[test]
fn a_keepalive_ping_does_not_wait_behind_the_queue() {
    let mut conn = conn_with(
        Role::Server,
        Config {
            fragment_size: Some(FRAGMENT),
            keepalive: Some(ferry_proto::Keepalive {
                interval: std::time::Duration::from_millis(10),
                timeout: std::time::Duration::from_secs(1),
            }),
            ..config()
        },
    );
    conn.send(Message::binary(pattern(BIG))).unwrap();
    let mut wire = Vec::new();
    write_some(&mut conn, 10, false, &mut wire);
    conn.handle_timeout(at(10));
    write_all(&mut conn, 1 << 20, false, &mut wire);
    assert!(offset_of(&wire, PING) <= FRAGMENT + 14);
}
